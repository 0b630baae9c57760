//! NVMe/TCP PDU wire formats (NVMe/TCP transport binding, "PDU formats") and the header
//! validator used by the receive path.
//!
//! Every PDU starts with the 8-byte [`CommonHeader`]; the PDU-specific header follows, then an
//! optional header digest, padding up to `pdo`, data, and an optional data digest. Structs are
//! `repr(C)` with only integer fields and no padding, so they are read from and written to the
//! wire in place (little-endian host, checked in `spec`); tests check sizes and offsets.

use crate::cmd::{NvmeCmd, NvmeCpl};

/// PDU type: Initialize Connection Request (host → controller).
pub const PDU_ICREQ: u8 = 0x00;
/// PDU type: Initialize Connection Response.
pub const PDU_ICRESP: u8 = 0x01;
/// PDU type: host-to-controller Terminate Connection Request.
pub const PDU_H2C_TERM_REQ: u8 = 0x02;
/// PDU type: controller-to-host Terminate Connection Request.
pub const PDU_C2H_TERM_REQ: u8 = 0x03;
/// PDU type: Command Capsule.
pub const PDU_CAPSULE_CMD: u8 = 0x04;
/// PDU type: Response Capsule.
pub const PDU_CAPSULE_RESP: u8 = 0x05;
/// PDU type: host-to-controller data.
pub const PDU_H2C_DATA: u8 = 0x06;
/// PDU type: controller-to-host data.
pub const PDU_C2H_DATA: u8 = 0x07;
/// PDU type: Ready to Transfer.
pub const PDU_R2T: u8 = 0x09;

/// Flag: a header digest follows the header.
pub const FLAG_HDGSTF: u8 = 1 << 0;
/// Flag: a data digest follows the data.
pub const FLAG_DDGSTF: u8 = 1 << 1;
/// Data PDUs: last PDU of the transfer (of the R2T for H2C).
pub const FLAG_LAST_PDU: u8 = 1 << 2;
/// C2HData: the command succeeded and no response capsule follows.
pub const FLAG_SUCCESS: u8 = 1 << 3;

/// Digest length (CRC32C).
pub const DIGEST_LEN: usize = 4;
/// Common header length.
pub const COMMON_HLEN: usize = 8;
/// ICReq/ICResp header length.
pub const IC_HLEN: usize = 128;
/// Command capsule header length (common header + SQE).
pub const CAPSULE_CMD_HLEN: usize = 72;
/// Header length of the 24-byte PDUs (response, data, R2T, termination).
pub const SHORT_HLEN: usize = 24;
/// Most bytes of an offending header a termination request carries.
pub const TERM_MAX_DATA: usize = 128;
/// Largest termination request PDU.
pub const TERM_MAX_PLEN: usize = SHORT_HLEN + TERM_MAX_DATA;
/// Hosts refuse an ICResp with a smaller MAXH2CDATA.
pub const MIN_MAXH2CDATA: u32 = 4096;

/// Fatal error status: invalid PDU header field.
pub const FES_INVALID_HEADER_FIELD: u16 = 0x01;
/// Fatal error status: PDU sequence error.
pub const FES_PDU_SEQUENCE: u16 = 0x02;
/// Fatal error status: header digest error.
pub const FES_HEADER_DIGEST: u16 = 0x03;
/// Fatal error status: data transfer out of range.
pub const FES_DATA_OUT_OF_RANGE: u16 = 0x04;
/// Fatal error status: data transfer limit exceeded.
pub const FES_DATA_LIMIT_EXCEEDED: u16 = 0x05;
/// Fatal error status: unsupported parameter.
pub const FES_UNSUPPORTED_PARAMETER: u16 = 0x06;

/// Plain-old-data wire structs: integers only, no padding, every bit pattern valid.
///
/// # Safety
/// Implementors must be `repr(C)`, contain only integer (or integer array) fields and no
/// padding bytes.
pub unsafe trait Wire: Copy + Sized {
    /// Read from the start of `bytes` (None if too short). Any alignment.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked; `Self` is plain old data (trait contract), so any bytes
        // form a valid value; read_unaligned copes with any alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
    /// The struct's bytes, as sent on the wire.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: no padding (trait contract), so every byte is initialised; the slice
        // borrows `self`.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                std::mem::size_of::<Self>(),
            )
        }
    }
}

/// The 8-byte header every PDU starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: u8,
    /// Flags (`FLAG_*`).
    pub flags: u8,
    /// Header length, without header digest.
    pub hlen: u8,
    /// PDU data offset (0 when no data).
    pub pdo: u8,
    /// Whole PDU length.
    pub plen: u32,
}

impl CommonHeader {
    /// A header for a PDU of `pdu_type` with header length `hlen`.
    pub fn new(pdu_type: u8, hlen: usize) -> CommonHeader {
        CommonHeader {
            pdu_type,
            flags: 0,
            hlen: hlen as u8,
            pdo: 0,
            plen: hlen as u32,
        }
    }
}

/// ICReq (128 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct IcReq {
    /// Common header.
    pub common: CommonHeader,
    /// PDU format version (0).
    pub pfv: u16,
    /// Host PDU data alignment (0-based dwords) for C2H data.
    pub hpda: u8,
    /// Digest options: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
    /// Reserved.
    pub rsvd: [u8; 112],
}

/// ICResp (128 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct IcResp {
    /// Common header.
    pub common: CommonHeader,
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment (0-based dwords) for H2C data.
    pub cpda: u8,
    /// Digest options enabled: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Largest H2CData PDU data length the controller accepts.
    pub maxh2cdata: u32,
    /// Reserved.
    pub rsvd: [u8; 112],
}

/// H2CTermReq / C2HTermReq header (24 bytes; up to 128 bytes of the offending header follow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TermReqHeader {
    /// Common header.
    pub common: CommonHeader,
    /// Fatal error status.
    pub fes: u16,
    /// Fatal error information (byte offset of the bad field), unaligned on the wire.
    pub fei: [u8; 4],
    /// Reserved.
    pub rsvd: [u8; 10],
}

/// CapsuleCmd header (72 bytes): the SQE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CapsuleCmdHeader {
    /// Common header.
    pub common: CommonHeader,
    /// The submission queue entry.
    pub sqe: NvmeCmd,
}

/// CapsuleResp (24 bytes): the CQE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CapsuleRespHeader {
    /// Common header.
    pub common: CommonHeader,
    /// The completion queue entry.
    pub cqe: NvmeCpl,
}

/// H2CData / C2HData header (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DataHeader {
    /// Common header.
    pub common: CommonHeader,
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag (H2C only; reserved in C2H).
    pub ttag: u16,
    /// Offset of this PDU's data in the command's data.
    pub datao: u32,
    /// Length of this PDU's data.
    pub datal: u32,
    /// Reserved.
    pub rsvd: [u8; 4],
}

/// R2T header (24 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct R2tHeader {
    /// Common header.
    pub common: CommonHeader,
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag the host echoes in its H2CData PDUs.
    pub ttag: u16,
    /// Offset of the requested data.
    pub r2to: u32,
    /// Length of the requested data.
    pub r2tl: u32,
    /// Reserved.
    pub rsvd: [u8; 4],
}

// SAFETY: each is repr(C), integer fields only, sizes checked equal to the sum of the fields
// by the tests below (so no padding).
unsafe impl Wire for CommonHeader {}
// SAFETY: as above.
unsafe impl Wire for IcReq {}
// SAFETY: as above.
unsafe impl Wire for IcResp {}
// SAFETY: as above.
unsafe impl Wire for TermReqHeader {}
// SAFETY: as above (NvmeCmd is repr(C) integers, 64 bytes, checked in spec::cmd).
unsafe impl Wire for CapsuleCmdHeader {}
// SAFETY: as above (NvmeCpl is repr(C) integers, 16 bytes).
unsafe impl Wire for CapsuleRespHeader {}
// SAFETY: as above.
unsafe impl Wire for DataHeader {}
// SAFETY: as above.
unsafe impl Wire for R2tHeader {}

impl IcResp {
    /// An ICResp with the given parameters.
    pub fn new(cpda: u8, hdgst: bool, ddgst: bool, maxh2cdata: u32) -> IcResp {
        IcResp {
            common: CommonHeader::new(PDU_ICRESP, IC_HLEN),
            pfv: 0,
            cpda,
            dgst: (hdgst as u8) | ((ddgst as u8) << 1),
            maxh2cdata,
            rsvd: [0; 112],
        }
    }
}

impl TermReqHeader {
    /// Fatal error information.
    pub fn fei(&self) -> u32 {
        u32::from_le_bytes(self.fei)
    }
}

/// CRC32C digest of `data` (hardware-accelerated by the `crc32c` crate where the CPU has it).
pub fn digest(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC32C over more data (`crc` from a previous call, 0 to start).
pub fn digest_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Round `n` up to a multiple of `align` (a power of two or any positive value).
pub fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// Digests and limits negotiated by ICReq/ICResp (what the validator checks against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Header digests on.
    pub hdgst: bool,
    /// Data digests on.
    pub ddgst: bool,
    /// Controller PDU data alignment we announced (0-based dwords).
    pub cpda: u8,
    /// Host PDU data alignment the host asked for (0-based dwords).
    pub hpda: u8,
    /// Largest H2CData data length we accept.
    pub maxh2cdata: u32,
    /// Most outstanding R2Ts per command, 0-based (from ICReq).
    pub maxr2t: u32,
}

impl Negotiated {
    /// Header digest length in bytes (0 or 4).
    pub fn hdgst_len(&self) -> usize {
        if self.hdgst {
            DIGEST_LEN
        } else {
            0
        }
    }
    /// Data digest length for a PDU that carries data.
    pub fn ddgst_len(&self) -> usize {
        if self.ddgst {
            DIGEST_LEN
        } else {
            0
        }
    }
}

/// Limits of the receive side that do not come from the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxLimits {
    /// Largest in-capsule data accepted in one command capsule.
    pub max_in_capsule: u32,
    /// Largest H2CData data length (the MAXH2CDATA we announce).
    pub maxh2cdata: u32,
}

/// A protocol error: what goes into the C2HTermReq before the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("NVMe/TCP protocol error: FES {fes:#x}, FEI {fei} ({what})")]
pub struct TermError {
    /// Fatal error status (`FES_*`).
    pub fes: u16,
    /// Fatal error information: byte offset of the offending field for FES 1 and 6, else 0.
    pub fei: u32,
    /// Human-readable reason for logs.
    pub what: &'static str,
}

impl TermError {
    /// A field error at byte `offset` of the header.
    pub const fn field(offset: u32, what: &'static str) -> TermError {
        TermError {
            fes: FES_INVALID_HEADER_FIELD,
            fei: offset,
            what,
        }
    }
    /// An error with status `fes` and no field offset.
    pub const fn status(fes: u16, what: &'static str) -> TermError {
        TermError { fes, fei: 0, what }
    }
}

/// Offsets of common-header fields (for FEI).
pub(crate) const OFF_TYPE: u32 = 0;
pub(crate) const OFF_FLAGS: u32 = 1;
pub(crate) const OFF_HLEN: u32 = 2;
pub(crate) const OFF_PDO: u32 = 3;
pub(crate) const OFF_PLEN: u32 = 4;

/// Where the data of a PDU starts: after `hlen` header bytes and the header digest (if
/// `hdgst`), rounded up to the receiver's PDU data alignment `pda` (0-based dwords: CPDA for
/// PDUs to the controller, HPDA for PDUs to the host). THE data-offset rule, for both
/// directions and both ends.
#[inline]
pub fn data_offset(hlen: usize, hdgst: bool, pda: u8) -> usize {
    let hdr_total = hlen + if hdgst { DIGEST_LEN } else { 0 };
    align_up(hdr_total, (pda as usize + 1) * 4)
}

/// The receive side of the data framing rule, for both directions (CapsuleCmd/H2CData at the
/// controller, C2HData at the host), once type, `hlen` and digest flags are checked: `pdo`
/// past the header (`hdr_total` bytes with its digest) and aligned to `pda`, a digest where
/// one is `ddgst_required`, data after `pdo`, at most `max_data` bytes. Returns
/// `(pdo, data_len)`. The order of the checks is the order of the FEI a peer gets.
pub fn check_data_framing(
    ch: &CommonHeader,
    hdr_total: usize,
    pda: u8,
    ddgst_required: bool,
    max_data: u32,
) -> Result<(usize, u32), TermError> {
    let pdo = ch.pdo as usize;
    let align = (pda as usize + 1) * 4;
    if pdo < hdr_total || !pdo.is_multiple_of(align) {
        return Err(TermError::field(
            OFF_PDO,
            "pdo inside the header or misaligned",
        ));
    }
    let ddgstf = ch.flags & FLAG_DDGSTF != 0;
    if ddgst_required && !ddgstf {
        return Err(TermError::field(
            OFF_FLAGS,
            "DDGSTF missing but data digests are on",
        ));
    }
    let min_plen = pdo + if ddgstf { DIGEST_LEN } else { 0 };
    if (ch.plen as usize) <= min_plen {
        return Err(TermError::field(OFF_PLEN, "plen leaves no data after pdo"));
    }
    let data_len = ch.plen - min_plen as u32;
    if data_len > max_data {
        return Err(TermError::status(
            FES_DATA_LIMIT_EXCEEDED,
            "PDU data above the limit",
        ));
    }
    debug_assert!(pdo + data_len as usize <= ch.plen as usize);
    Ok((pdo, data_len))
}

/// One H2CData or C2HData PDU to encode (see [`encode_data_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPdu {
    /// [`PDU_H2C_DATA`] or [`PDU_C2H_DATA`].
    pub pdu_type: u8,
    /// Command capsule CID.
    pub cccid: u16,
    /// Transfer tag (from the R2T; 0 in C2HData).
    pub ttag: u16,
    /// Offset of this PDU's data in the command's data.
    pub datao: u32,
    /// Length of this PDU's data.
    pub datal: u32,
    /// Last PDU of the transfer.
    pub last: bool,
    /// C2HData only: the command succeeded and no CapsuleResp follows.
    pub success: bool,
}

/// Encode a data PDU's header into `buf` (at least its data offset long): the header, the
/// header digest and zeroed padding up to the data offset, by the rule of [`data_offset`]
/// with the receiver's alignment (CPDA for H2CData, HPDA for C2HData). Returns the bytes
/// that precede the data. The data digest, if negotiated, is the caller's to send after the
/// data. THE data-PDU encoder, for both directions.
pub fn encode_data_header(buf: &mut [u8], pdu: &DataPdu, neg: &Negotiated) -> usize {
    assert!(pdu.pdu_type == PDU_H2C_DATA || pdu.pdu_type == PDU_C2H_DATA);
    assert!(!pdu.success || (pdu.pdu_type == PDU_C2H_DATA && pdu.last));
    let pda = if pdu.pdu_type == PDU_H2C_DATA {
        neg.cpda
    } else {
        neg.hpda
    };
    let pdo = data_offset(SHORT_HLEN, neg.hdgst, pda);
    let mut common = CommonHeader::new(pdu.pdu_type, SHORT_HLEN);
    if pdu.last {
        common.flags |= FLAG_LAST_PDU;
    }
    if pdu.success {
        common.flags |= FLAG_SUCCESS;
    }
    if neg.hdgst {
        common.flags |= FLAG_HDGSTF;
    }
    if neg.ddgst {
        common.flags |= FLAG_DDGSTF;
    }
    common.pdo = u8::try_from(pdo).expect("PDA at most 31: the data offset fits a byte");
    common.plen = (pdo + pdu.datal as usize + neg.ddgst_len()) as u32;
    let h = DataHeader {
        common,
        cccid: pdu.cccid,
        ttag: pdu.ttag,
        datao: pdu.datao,
        datal: pdu.datal,
        rsvd: [0; 4],
    };
    buf[..SHORT_HLEN].copy_from_slice(h.as_bytes());
    seal_header(buf, SHORT_HLEN, pdo, neg.hdgst)
}

/// Finish a header in `buf`: append the header digest after `hlen` bytes if `hdgst` and zero
/// the padding up to `pdo` (when `pdo` > 0). Returns the bytes that precede the data.
pub fn seal_header(buf: &mut [u8], hlen: usize, pdo: usize, hdgst: bool) -> usize {
    let mut end = hlen;
    if hdgst {
        let d = digest(&buf[..hlen]);
        buf[hlen..hlen + DIGEST_LEN].copy_from_slice(&d.to_le_bytes());
        end += DIGEST_LEN;
    }
    if pdo > end {
        buf[end..pdo].fill(0);
        end = pdo;
    }
    end
}

/// What a validated common header says about the rest of the PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// PDU type.
    pub pdu_type: u8,
    /// Flags.
    pub flags: u8,
    /// Header length (without digest).
    pub hlen: usize,
    /// Header digest present.
    pub hdgst: bool,
    /// Bytes from PDU start to the data (or to the end when there is no data): hlen, digest
    /// and padding.
    pub data_start: usize,
    /// Data length (0 if none).
    pub data_len: u32,
    /// Data digest present.
    pub ddgst: bool,
    /// Whole PDU length.
    pub plen: u32,
}

impl Framing {
    /// Bytes of the header part that must be buffered before the PDU can be handled: the header,
    /// its digest, and the padding up to the data.
    pub fn header_bytes(&self) -> usize {
        self.data_start
    }
}

/// Validate a common header against the connection's state. `neg` is `None` before ICReq
/// (only an ICReq is acceptable then). Returns how the PDU is framed, or the termination
/// error. Checks: type allowed in this direction and state, `hlen` for the type, digest flags
/// against the negotiation, `plen` ≥ header + digests, `pdo` alignment and consistency, data
/// inside the PDU and within the type's limit.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one check per rule of the PDU framing
pub fn validate_common(
    ch: &CommonHeader,
    neg: Option<&Negotiated>,
    limits: &RxLimits,
) -> Result<Framing, TermError> {
    let plen = ch.plen;
    let Some(neg) = neg else {
        if ch.pdu_type != PDU_ICREQ {
            return Err(TermError::status(
                FES_PDU_SEQUENCE,
                "first PDU is not an ICReq",
            ));
        }
        if ch.hlen as usize != IC_HLEN {
            return Err(TermError::field(OFF_HLEN, "ICReq hlen is not 128"));
        }
        // FLAGS and PDO are reserved in an ICReq: ignored, as SPDK's and Linux's targets do
        // (an ICReq carries no digest and no data whatever they say).
        if plen as usize != IC_HLEN {
            return Err(TermError::field(OFF_PLEN, "ICReq plen is not 128"));
        }
        return Ok(Framing {
            pdu_type: PDU_ICREQ,
            flags: 0,
            hlen: IC_HLEN,
            hdgst: false,
            data_start: IC_HLEN,
            data_len: 0,
            ddgst: false,
            plen,
        });
    };
    let (hlen, may_carry_data, max_data) = match ch.pdu_type {
        PDU_CAPSULE_CMD => (CAPSULE_CMD_HLEN, true, limits.max_in_capsule),
        PDU_H2C_DATA => (SHORT_HLEN, true, limits.maxh2cdata),
        PDU_H2C_TERM_REQ => (SHORT_HLEN, false, 0),
        PDU_ICREQ => {
            return Err(TermError::status(FES_PDU_SEQUENCE, "second ICReq"));
        }
        _ => return Err(TermError::field(OFF_TYPE, "PDU type not valid from a host")),
    };
    if ch.hlen as usize != hlen {
        return Err(TermError::field(
            OFF_HLEN,
            "hlen does not match the PDU type",
        ));
    }
    if ch.pdu_type == PDU_H2C_TERM_REQ {
        // The host gives up: frame only the fixed header (what follows is diagnostic and the
        // connection closes anyway). Digests are not used on termination requests.
        if (plen as usize) < SHORT_HLEN || plen as usize > TERM_MAX_PLEN {
            return Err(TermError::field(OFF_PLEN, "H2CTermReq plen out of range"));
        }
        return Ok(Framing {
            pdu_type: ch.pdu_type,
            flags: ch.flags,
            hlen,
            hdgst: false,
            data_start: SHORT_HLEN,
            data_len: 0,
            ddgst: false,
            plen,
        });
    }
    let (hdgst, ddgstf) = digest_flags(ch.flags, neg)?;
    if ddgstf && !neg.ddgst {
        return Err(TermError::field(
            OFF_FLAGS,
            "DDGSTF set but data digests are off",
        ));
    }
    let hdr_total = hlen + neg.hdgst_len();
    if (plen as usize) < hdr_total {
        return Err(TermError::field(OFF_PLEN, "plen shorter than the header"));
    }
    if ch.pdo == 0 {
        if plen as usize != hdr_total {
            return Err(TermError::field(OFF_PLEN, "plen leaves bytes but pdo is 0"));
        }
        if ddgstf {
            return Err(TermError::field(OFF_FLAGS, "DDGSTF on a PDU without data"));
        }
        if ch.pdu_type == PDU_H2C_DATA {
            return Err(TermError::field(OFF_PDO, "H2CData without data"));
        }
        return Ok(Framing {
            pdu_type: ch.pdu_type,
            flags: ch.flags,
            hlen,
            hdgst,
            data_start: hdr_total,
            data_len: 0,
            ddgst: false,
            plen,
        });
    }
    if !may_carry_data {
        return Err(TermError::field(
            OFF_PDO,
            "data offset on a PDU without data",
        ));
    }
    let (pdo, data_len) = check_data_framing(ch, hdr_total, neg.cpda, neg.ddgst, max_data)?;
    Ok(Framing {
        pdu_type: ch.pdu_type,
        flags: ch.flags,
        hlen,
        hdgst,
        data_start: pdo,
        data_len,
        ddgst: ddgstf,
        plen,
    })
}

/// The digest flags of a received PDU's common header (after ICReq/ICResp), checked the same
/// way in both directions: HDGSTF must match the negotiation (FEI: the FLAGS byte). Returns
/// (HDGSTF, DDGSTF); what DDGSTF may be depends on the direction and the PDU type, so each
/// direction's validator (`validate_common` here, `frame::validate_c2h` in the host) checks it.
pub fn digest_flags(flags: u8, neg: &Negotiated) -> Result<(bool, bool), TermError> {
    let hdgst = flags & FLAG_HDGSTF != 0;
    if hdgst != neg.hdgst {
        return Err(TermError::field(
            OFF_FLAGS,
            "HDGSTF does not match the negotiation",
        ));
    }
    Ok((hdgst, flags & FLAG_DDGSTF != 0))
}

/// Check the header digest that follows `hlen` header bytes in `hdr`.
pub fn check_header_digest(hdr: &[u8], hlen: usize) -> Result<(), TermError> {
    let Some(stored) = hdr.get(hlen..hlen + DIGEST_LEN) else {
        return Err(TermError::status(
            FES_HEADER_DIGEST,
            "header digest missing",
        ));
    };
    let want = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if digest(&hdr[..hlen]) != want {
        return Err(TermError::status(
            FES_HEADER_DIGEST,
            "header digest mismatch",
        ));
    }
    Ok(())
}

/// Validate an ICReq's fields; returns the negotiation answered in the ICResp. Digests are
/// granted as asked when `allow_digests`, else the request is refused (a host cannot work
/// with fewer digests than it asked for).
pub fn negotiate(
    req: &IcReq,
    maxh2cdata: u32,
    allow_digests: bool,
) -> Result<Negotiated, TermError> {
    if req.pfv != 0 {
        return Err(TermError {
            fes: FES_UNSUPPORTED_PARAMETER,
            fei: 8,
            what: "unsupported PDU format version",
        });
    }
    if req.hpda > 31 {
        return Err(TermError::field(10, "HPDA above 31"));
    }
    let hdgst = req.dgst & 1 != 0;
    let ddgst = req.dgst & 2 != 0;
    if (hdgst || ddgst) && !allow_digests {
        return Err(TermError {
            fes: FES_UNSUPPORTED_PARAMETER,
            fei: 11,
            what: "digests requested but disabled",
        });
    }
    Ok(Negotiated {
        hdgst,
        ddgst,
        cpda: 0,
        hpda: req.hpda,
        maxh2cdata,
        maxr2t: req.maxr2t,
    })
}

/// Encode a C2HTermReq for `err` into `out`, quoting up to 128 bytes of the offending header
/// `bad`. Returns the PDU length written.
pub fn encode_term_req(err: &TermError, bad: &[u8], out: &mut [u8; TERM_MAX_PLEN]) -> usize {
    let quoted = bad.len().min(TERM_MAX_DATA);
    let plen = SHORT_HLEN + quoted;
    let mut common = CommonHeader::new(PDU_C2H_TERM_REQ, SHORT_HLEN);
    common.plen = plen as u32;
    let hdr = TermReqHeader {
        common,
        fes: err.fes,
        fei: err.fei.to_le_bytes(),
        rsvd: [0; 10],
    };
    out[..SHORT_HLEN].copy_from_slice(hdr.as_bytes());
    out[SHORT_HLEN..plen].copy_from_slice(&bad[..quoted]);
    plen
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn sizes_and_offsets_match_the_spec() {
        assert_eq!(size_of::<CommonHeader>(), 8);
        assert_eq!(offset_of!(CommonHeader, flags), 1);
        assert_eq!(offset_of!(CommonHeader, hlen), 2);
        assert_eq!(offset_of!(CommonHeader, pdo), 3);
        assert_eq!(offset_of!(CommonHeader, plen), 4);

        assert_eq!(size_of::<IcReq>(), 128);
        assert_eq!(offset_of!(IcReq, pfv), 8);
        assert_eq!(offset_of!(IcReq, hpda), 10);
        assert_eq!(offset_of!(IcReq, dgst), 11);
        assert_eq!(offset_of!(IcReq, maxr2t), 12);
        assert_eq!(size_of::<IcResp>(), 128);
        assert_eq!(offset_of!(IcResp, cpda), 10);
        assert_eq!(offset_of!(IcResp, dgst), 11);
        assert_eq!(offset_of!(IcResp, maxh2cdata), 12);

        assert_eq!(size_of::<TermReqHeader>(), 24);
        assert_eq!(offset_of!(TermReqHeader, fes), 8);
        assert_eq!(offset_of!(TermReqHeader, fei), 10);

        assert_eq!(size_of::<CapsuleCmdHeader>(), 72);
        assert_eq!(offset_of!(CapsuleCmdHeader, sqe), 8);
        assert_eq!(size_of::<CapsuleRespHeader>(), 24);
        assert_eq!(offset_of!(CapsuleRespHeader, cqe), 8);

        assert_eq!(size_of::<DataHeader>(), 24);
        assert_eq!(offset_of!(DataHeader, cccid), 8);
        assert_eq!(offset_of!(DataHeader, ttag), 10);
        assert_eq!(offset_of!(DataHeader, datao), 12);
        assert_eq!(offset_of!(DataHeader, datal), 16);
        assert_eq!(size_of::<R2tHeader>(), 24);
        assert_eq!(offset_of!(R2tHeader, cccid), 8);
        assert_eq!(offset_of!(R2tHeader, ttag), 10);
        assert_eq!(offset_of!(R2tHeader, r2to), 12);
        assert_eq!(offset_of!(R2tHeader, r2tl), 16);
    }

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value of "123456789" (RFC 3720 / iSCSI).
        assert_eq!(digest(b"123456789"), 0xE306_9283);
        assert_eq!(digest_append(digest(b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn wire_round_trip_is_little_endian() {
        let mut r2t = R2tHeader {
            common: CommonHeader::new(PDU_R2T, SHORT_HLEN),
            cccid: 0x1234,
            ttag: 7,
            r2to: 0x0102_0304,
            r2tl: 8192,
            rsvd: [0; 4],
        };
        r2t.common.flags = FLAG_HDGSTF;
        let b = r2t.as_bytes();
        assert_eq!(b[0], PDU_R2T);
        assert_eq!(b[1], FLAG_HDGSTF);
        assert_eq!(b[2], 24);
        assert_eq!(&b[4..8], &24u32.to_le_bytes());
        assert_eq!(&b[8..10], &[0x34, 0x12]);
        assert_eq!(&b[12..16], &[4, 3, 2, 1]);
        assert_eq!(R2tHeader::read_from(b), Some(r2t));
        assert_eq!(R2tHeader::read_from(&b[..23]), None);
    }

    fn neg(hdgst: bool, ddgst: bool) -> Negotiated {
        Negotiated {
            hdgst,
            ddgst,
            cpda: 0,
            hpda: 0,
            maxh2cdata: 131072,
            maxr2t: 0,
        }
    }
    const LIM: RxLimits = RxLimits {
        max_in_capsule: 8192,
        maxh2cdata: 131072,
    };

    /// A common header of type `t` with these fields (also for `frame`'s tests).
    pub(crate) fn ch(t: u8, flags: u8, hlen: u8, pdo: u8, plen: u32) -> CommonHeader {
        CommonHeader {
            pdu_type: t,
            flags,
            hlen,
            pdo,
            plen,
        }
    }

    #[test]
    fn before_icreq_only_icreq() {
        let f = validate_common(&ch(PDU_ICREQ, 0, 128, 0, 128), None, &LIM).unwrap();
        assert_eq!(f.data_start, 128);
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 0, 72), None, &LIM).unwrap_err();
        assert_eq!(e.fes, FES_PDU_SEQUENCE);
        let e = validate_common(&ch(PDU_ICREQ, 0, 128, 0, 200), None, &LIM).unwrap_err();
        assert_eq!((e.fes, e.fei), (FES_INVALID_HEADER_FIELD, 4));
        let e = validate_common(&ch(PDU_ICREQ, 0, 100, 0, 128), None, &LIM).unwrap_err();
        assert_eq!((e.fes, e.fei), (FES_INVALID_HEADER_FIELD, 2));
        // Reserved FLAGS and PDO are ignored (SPDK and Linux targets accept them): no digest,
        // no data.
        let f = validate_common(&ch(PDU_ICREQ, 0x3, 128, 8, 128), None, &LIM).unwrap();
        assert_eq!((f.flags, f.hdgst, f.ddgst), (0, false, false));
        assert_eq!((f.data_start, f.data_len), (128, 0));
    }

    #[test]
    fn capsule_framing_with_and_without_digests() {
        let n = neg(false, false);
        let f = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 0, 72), Some(&n), &LIM).unwrap();
        assert_eq!((f.data_start, f.data_len), (72, 0));
        let f =
            validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 72, 72 + 4096), Some(&n), &LIM).unwrap();
        assert_eq!((f.data_start, f.data_len, f.ddgst), (72, 4096, false));

        let n = neg(true, true);
        let flags = FLAG_HDGSTF | FLAG_DDGSTF;
        let f = validate_common(
            &ch(PDU_CAPSULE_CMD, flags, 72, 76, 76 + 512 + 4),
            Some(&n),
            &LIM,
        )
        .unwrap();
        assert_eq!(
            (f.data_start, f.data_len, f.ddgst, f.hdgst),
            (76, 512, true, true)
        );
        // Header digest flag missing.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 0, 72), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 1);
        // Data digest flag missing on a PDU with data.
        let e =
            validate_common(&ch(PDU_CAPSULE_CMD, 1, 72, 76, 76 + 512), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 1);
    }

    #[test]
    fn bad_lengths_and_offsets() {
        let n = neg(false, false);
        // plen shorter than the header.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 0, 71), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 4);
        // pdo inside the header.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 64, 200), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 3);
        // pdo misaligned.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 73, 200), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 3);
        // pdo beyond plen.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 80, 76), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 4);
        // Too much in-capsule data.
        let e = validate_common(&ch(PDU_CAPSULE_CMD, 0, 72, 72, 72 + 8193), Some(&n), &LIM)
            .unwrap_err();
        assert_eq!(e.fes, FES_DATA_LIMIT_EXCEEDED);
        // H2CData above maxh2cdata.
        let e =
            validate_common(&ch(PDU_H2C_DATA, 0, 24, 24, 24 + 131073), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fes, FES_DATA_LIMIT_EXCEEDED);
        // Controller-to-host types from a host.
        for t in [
            PDU_ICRESP,
            PDU_C2H_TERM_REQ,
            PDU_CAPSULE_RESP,
            PDU_C2H_DATA,
            PDU_R2T,
            0x08,
            0xff,
        ] {
            let e = validate_common(&ch(t, 0, 24, 0, 24), Some(&n), &LIM).unwrap_err();
            assert_eq!((e.fes, e.fei), (FES_INVALID_HEADER_FIELD, 0));
        }
        // Wrong hlen for the type.
        let e = validate_common(&ch(PDU_H2C_DATA, 0, 72, 72, 100), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fei, 2);
        // A second ICReq.
        let e = validate_common(&ch(PDU_ICREQ, 0, 128, 0, 128), Some(&n), &LIM).unwrap_err();
        assert_eq!(e.fes, FES_PDU_SEQUENCE);
    }

    #[test]
    fn header_digest_check() {
        let mut hdr = [0u8; 28];
        hdr[0] = PDU_H2C_DATA;
        hdr[2] = 24;
        let d = digest(&hdr[..24]);
        hdr[24..28].copy_from_slice(&d.to_le_bytes());
        assert!(check_header_digest(&hdr, 24).is_ok());
        hdr[9] ^= 1;
        assert_eq!(
            check_header_digest(&hdr, 24).unwrap_err().fes,
            FES_HEADER_DIGEST
        );
    }

    #[test]
    fn negotiation() {
        let mut req = IcReq {
            common: CommonHeader::new(PDU_ICREQ, IC_HLEN),
            pfv: 0,
            hpda: 0,
            dgst: 3,
            maxr2t: 0,
            rsvd: [0; 112],
        };
        let n = negotiate(&req, 131072, true).unwrap();
        assert!(n.hdgst && n.ddgst);
        assert_eq!(negotiate(&req, 131072, false).unwrap_err().fei, 11);
        req.pfv = 1;
        assert_eq!(
            negotiate(&req, 131072, true).unwrap_err().fes,
            FES_UNSUPPORTED_PARAMETER
        );
        req.pfv = 0;
        req.hpda = 32;
        assert_eq!(negotiate(&req, 131072, true).unwrap_err().fei, 10);
        let resp = IcResp::new(0, true, false, 131072);
        let b = resp.as_bytes();
        assert_eq!((b[0], b[2], b[10], b[11]), (PDU_ICRESP, 128, 0, 1));
        assert_eq!(&b[12..16], &131072u32.to_le_bytes());
    }

    #[test]
    fn term_req_quotes_the_header() {
        let bad = [0xAAu8; 200];
        let mut out = [0u8; TERM_MAX_PLEN];
        let err = TermError::field(4, "x");
        let n = encode_term_req(&err, &bad, &mut out);
        assert_eq!(n, 152);
        let h = TermReqHeader::read_from(&out).unwrap();
        assert_eq!(h.common.pdu_type, PDU_C2H_TERM_REQ);
        assert_eq!(h.common.plen, 152);
        assert_eq!((h.fes, h.fei()), (1, 4));
        assert!(out[24..152].iter().all(|&b| b == 0xAA));
        let n = encode_term_req(&err, &bad[..8], &mut out);
        assert_eq!(n, 32);
    }

    /// The C2HData header the target's connection built before the rule was shared (the
    /// reference the shared encoder must reproduce byte for byte: no change on the wire).
    fn c2h_reference(cid: u16, len: u32, success: bool, neg: &Negotiated) -> Vec<u8> {
        let hd = if neg.hdgst { DIGEST_LEN } else { 0 };
        let pdo = align_up(SHORT_HLEN + hd, (neg.hpda as usize + 1) * 4);
        let dd = if neg.ddgst { DIGEST_LEN } else { 0 };
        let mut common = CommonHeader::new(PDU_C2H_DATA, SHORT_HLEN);
        common.flags = FLAG_LAST_PDU;
        if success {
            common.flags |= FLAG_SUCCESS;
        }
        if neg.hdgst {
            common.flags |= FLAG_HDGSTF;
        }
        if neg.ddgst {
            common.flags |= FLAG_DDGSTF;
        }
        common.pdo = pdo as u8;
        common.plen = (pdo + len as usize + dd) as u32;
        let h = DataHeader {
            common,
            cccid: cid,
            ttag: 0,
            datao: 0,
            datal: len,
            rsvd: [0; 4],
        };
        let mut out = vec![0u8; pdo];
        out[..SHORT_HLEN].copy_from_slice(h.as_bytes());
        if neg.hdgst {
            let d = digest(&out[..SHORT_HLEN]);
            out[SHORT_HLEN..SHORT_HLEN + DIGEST_LEN].copy_from_slice(&d.to_le_bytes());
        }
        out
    }

    fn negs() -> impl Iterator<Item = Negotiated> {
        (0..16u8).map(|i| Negotiated {
            hdgst: i & 1 != 0,
            ddgst: i & 2 != 0,
            cpda: if i & 4 != 0 { 31 } else { 0 },
            hpda: if i & 8 != 0 { 7 } else { 0 },
            maxh2cdata: 128 * 1024,
            maxr2t: 0,
        })
    }

    #[test]
    fn shared_encoder_reproduces_the_targets_c2h_headers() {
        for neg in negs() {
            for success in [false, true] {
                let want = c2h_reference(0x1234, 4096, success, &neg);
                let mut buf = [0xEEu8; 256];
                let pdu = DataPdu {
                    pdu_type: PDU_C2H_DATA,
                    cccid: 0x1234,
                    ttag: 0,
                    datao: 0,
                    datal: 4096,
                    last: true,
                    success,
                };
                let n = encode_data_header(&mut buf, &pdu, &neg);
                assert_eq!(&buf[..n], &want[..], "{neg:?} success {success}");
            }
        }
    }

    /// One rule: what either end encodes, the other end's validator frames at the same data
    /// offset and length (H2CData at the controller, C2HData at the host).
    #[test]
    fn data_pdus_encoded_by_one_end_frame_identically_at_the_other() {
        let limits = RxLimits {
            max_in_capsule: 8192,
            maxh2cdata: 128 * 1024,
        };
        for neg in negs() {
            for (pdu_type, pda) in [(PDU_H2C_DATA, neg.cpda), (PDU_C2H_DATA, neg.hpda)] {
                let pdu = DataPdu {
                    pdu_type,
                    cccid: 7,
                    ttag: u16::from(pdu_type == PDU_H2C_DATA) * 3,
                    datao: 8192,
                    datal: 1000,
                    last: true,
                    success: false,
                };
                let mut buf = [0u8; 256];
                let n = encode_data_header(&mut buf, &pdu, &neg);
                assert_eq!(n, data_offset(SHORT_HLEN, neg.hdgst, pda));
                let ch = CommonHeader::read_from(&buf).unwrap();
                let f = if pdu_type == PDU_H2C_DATA {
                    validate_common(&ch, Some(&neg), &limits).unwrap()
                } else {
                    crate::frame::validate_c2h(&ch, &neg).unwrap()
                };
                assert_eq!((f.data_start, f.data_len, f.ddgst), (n, 1000, neg.ddgst));
                assert_eq!(f.plen as usize, n + 1000 + neg.ddgst_len());
                if neg.hdgst {
                    check_header_digest(&buf, SHORT_HLEN).unwrap();
                }
            }
        }
    }

    #[test]
    fn data_framing_refusals_are_the_same_in_both_directions() {
        let neg = Negotiated {
            hdgst: false,
            ddgst: true,
            cpda: 1,
            hpda: 1,
            maxh2cdata: 4096,
            maxr2t: 0,
        };
        let limits = RxLimits {
            max_in_capsule: 0,
            maxh2cdata: 4096,
        };
        // (pdo, flags, plen) -> expected (fes, fei)
        let cases: [(u8, u8, u32, u16, u32); 4] = [
            (20, FLAG_DDGSTF, 100, FES_INVALID_HEADER_FIELD, OFF_PDO), // inside the header
            (28, FLAG_DDGSTF, 100, FES_INVALID_HEADER_FIELD, OFF_PDO), // not 8-aligned
            (24, FLAG_DDGSTF, 28, FES_INVALID_HEADER_FIELD, OFF_PLEN), // no data
            (24, FLAG_DDGSTF, 24 + 8192 + 4, FES_DATA_LIMIT_EXCEEDED, 0), // above the limit
        ];
        for (pdo, flags, plen, fes, fei) in cases {
            for pdu_type in [PDU_H2C_DATA, PDU_C2H_DATA] {
                let mut ch = CommonHeader::new(pdu_type, SHORT_HLEN);
                ch.flags = flags | FLAG_LAST_PDU;
                ch.pdo = pdo;
                ch.plen = plen;
                let max = if pdu_type == PDU_H2C_DATA {
                    4096
                } else {
                    crate::frame::MAX_C2H_DATA.min(4096)
                };
                let shared = check_data_framing(&ch, SHORT_HLEN, 1, true, max).unwrap_err();
                assert_eq!((shared.fes, shared.fei), (fes, fei), "{pdo} {plen}");
                if pdu_type == PDU_H2C_DATA {
                    let e = validate_common(&ch, Some(&neg), &limits).unwrap_err();
                    assert_eq!((e.fes, e.fei), (fes, fei));
                } else if fes != FES_DATA_LIMIT_EXCEEDED {
                    // The host's limit is MAX_C2H_DATA, far above 4096.
                    let e = crate::frame::validate_c2h(&ch, &neg).unwrap_err();
                    assert_eq!((e.fes, e.fei), (fes, fei));
                }
            }
        }
    }
}
