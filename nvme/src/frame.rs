//! Host-side PDU framing: the validator for PDUs a controller sends (ICResp, CapsuleResp,
//! C2HData, R2T, C2HTermReq) and the encoders for what a host sends (ICReq, CapsuleCmd and
//! H2CData headers). Wire structs, flags and digests come from [`crate::pdu`]; this file
//! only adds the host's direction. Pure functions, no I/O.

use crate::cmd::NvmeCmd;
use crate::pdu::{
    CapsuleCmdHeader, CommonHeader, Framing, IcReq, IcResp, Negotiated, TermError, Wire,
    FES_DATA_LIMIT_EXCEEDED, FES_HEADER_DIGEST, FES_INVALID_HEADER_FIELD, FES_PDU_SEQUENCE,
    FLAG_DDGSTF, FLAG_HDGSTF, FLAG_LAST_PDU, FLAG_SUCCESS, IC_HLEN, MIN_MAXH2CDATA, PDU_C2H_DATA,
    PDU_C2H_TERM_REQ, PDU_CAPSULE_CMD, PDU_CAPSULE_RESP, PDU_H2C_DATA, PDU_ICREQ, PDU_ICRESP,
    PDU_R2T, SHORT_HLEN, TERM_MAX_PLEN,
};

/// Room for a capsule header: 72 bytes, header digest, padding up to a PDO aligned to at most
/// 128 bytes (CPDA ≤ 31).
pub const CMD_HDR_ROOM: usize = 256;
/// Room for an H2CData header: 24 bytes, header digest, padding up to the aligned PDO.
pub const H2C_HDR_ROOM: usize = 160;
/// Largest C2HData payload one PDU may carry (sanity bound; the command's length is the real
/// limit and is checked by the queue pair).
pub const MAX_C2H_DATA: u32 = 16 * 1024 * 1024;

use crate::pdu::{
    check_data_framing, data_offset, encode_data_header, seal_header, DataPdu, OFF_FLAGS, OFF_HLEN,
    OFF_PDO, OFF_PLEN, OFF_TYPE,
};

/// The ICReq a host sends: `hpda` (0-based dwords) for C2H data alignment, digests asked
/// for, `maxr2t` (0-based) outstanding R2Ts per command.
pub fn icreq(hpda: u8, hdgst: bool, ddgst: bool, maxr2t: u32) -> IcReq {
    IcReq {
        common: CommonHeader::new(PDU_ICREQ, IC_HLEN),
        pfv: 0,
        hpda,
        dgst: u8::from(hdgst) | (u8::from(ddgst) << 1),
        maxr2t,
        rsvd: [0; 112],
    }
}

/// Check an ICResp against what the host asked for; returns the negotiation the connection
/// runs with (`cpda` and `maxh2cdata` from the controller, `hpda`/`maxr2t` ours).
pub fn check_icresp(resp: &IcResp, req: &IcReq) -> Result<Negotiated, TermError> {
    let ch = &resp.common;
    if ch.pdu_type == PDU_C2H_TERM_REQ {
        return Err(TermError::status(
            FES_PDU_SEQUENCE,
            "the controller refused the ICReq (C2HTermReq)",
        ));
    }
    if ch.pdu_type != PDU_ICRESP {
        return Err(TermError::field(OFF_TYPE, "first PDU is not an ICResp"));
    }
    if ch.hlen as usize != IC_HLEN || ch.plen as usize != IC_HLEN {
        return Err(TermError::field(OFF_HLEN, "ICResp hlen/plen is not 128"));
    }
    if ch.pdo != 0 || ch.flags != 0 {
        return Err(TermError::field(
            OFF_PDO,
            "ICResp carries flags or a data offset",
        ));
    }
    if resp.pfv != 0 {
        return Err(TermError::field(8, "unsupported PDU format version"));
    }
    if resp.cpda > 31 {
        return Err(TermError::field(10, "CPDA above 31"));
    }
    // A controller may grant fewer digests than asked (never more).
    if resp.dgst & !req.dgst != 0 {
        return Err(TermError::field(
            11,
            "digests enabled that were not asked for",
        ));
    }
    if resp.maxh2cdata < MIN_MAXH2CDATA || !resp.maxh2cdata.is_multiple_of(4) {
        return Err(TermError::field(
            12,
            "MAXH2CDATA below 4096 or not dword-sized",
        ));
    }
    Ok(Negotiated {
        hdgst: resp.dgst & 1 != 0,
        ddgst: resp.dgst & 2 != 0,
        cpda: resp.cpda,
        hpda: req.hpda,
        maxh2cdata: resp.maxh2cdata,
        maxr2t: req.maxr2t,
    })
}

/// Validate the common header of a PDU from the controller (after ICResp). Checks the type
/// (CapsuleResp, C2HData, R2T, C2HTermReq), `hlen`, digest flags against the negotiation,
/// `plen` against header and digests, `pdo` alignment (HPDA) for data, and that only C2HData
/// carries data. Returns the framing, or the error for the H2CTermReq.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one check per rule of the C2H framing
pub fn validate_c2h(ch: &CommonHeader, neg: &Negotiated) -> Result<Framing, TermError> {
    let plen = ch.plen;
    if ch.hlen as usize != SHORT_HLEN {
        return Err(match ch.pdu_type {
            PDU_CAPSULE_RESP | PDU_C2H_DATA | PDU_R2T | PDU_C2H_TERM_REQ => {
                TermError::field(OFF_HLEN, "hlen does not match the PDU type")
            }
            PDU_ICRESP => TermError::status(FES_PDU_SEQUENCE, "second ICResp"),
            _ => TermError::field(OFF_TYPE, "PDU type not valid from a controller"),
        });
    }
    match ch.pdu_type {
        PDU_CAPSULE_RESP | PDU_C2H_DATA | PDU_R2T => {}
        PDU_C2H_TERM_REQ => {
            if (plen as usize) < SHORT_HLEN || plen as usize > TERM_MAX_PLEN {
                return Err(TermError::field(OFF_PLEN, "C2HTermReq plen out of range"));
            }
            return Ok(Framing {
                pdu_type: PDU_C2H_TERM_REQ,
                flags: ch.flags,
                hlen: SHORT_HLEN,
                hdgst: false,
                data_start: plen as usize,
                data_len: 0,
                ddgst: false,
                plen,
            });
        }
        _ => {
            return Err(TermError::field(
                OFF_TYPE,
                "PDU type not valid from a controller",
            ))
        }
    }
    let (hdgst, ddgstf) = crate::pdu::digest_flags(ch.flags, neg)?;
    let hdr_total = SHORT_HLEN + neg.hdgst_len();
    if ch.pdu_type != PDU_C2H_DATA {
        if ddgstf || ch.pdo != 0 || plen as usize != hdr_total {
            return Err(TermError::field(
                OFF_PLEN,
                "PDU without data has data framing",
            ));
        }
        if ch.pdu_type == PDU_CAPSULE_RESP && ch.flags & !FLAG_HDGSTF != 0 {
            return Err(TermError::field(OFF_FLAGS, "unexpected CapsuleResp flags"));
        }
        return Ok(Framing {
            pdu_type: ch.pdu_type,
            flags: ch.flags,
            hlen: SHORT_HLEN,
            hdgst,
            data_start: hdr_total,
            data_len: 0,
            ddgst: false,
            plen,
        });
    }
    if ddgstf != neg.ddgst {
        return Err(TermError::field(
            OFF_FLAGS,
            "DDGSTF does not match the negotiation",
        ));
    }
    if ch.flags & FLAG_SUCCESS != 0 && ch.flags & FLAG_LAST_PDU == 0 {
        return Err(TermError::field(OFF_FLAGS, "SUCCESS without LAST_PDU"));
    }
    let (pdo, data_len) = check_data_framing(ch, hdr_total, neg.hpda, neg.ddgst, MAX_C2H_DATA)?;
    Ok(Framing {
        pdu_type: PDU_C2H_DATA,
        flags: ch.flags,
        hlen: SHORT_HLEN,
        hdgst,
        data_start: pdo,
        data_len,
        ddgst: ddgstf,
        plen,
    })
}

/// Check the header digest of a received header (`hlen` bytes then 4 digest bytes).
pub fn check_hdgst(hdr: &[u8], hlen: usize) -> Result<(), TermError> {
    crate::pdu::check_header_digest(hdr, hlen).map_err(|_| {
        TermError::status(
            FES_HEADER_DIGEST,
            "header digest mismatch from the controller",
        )
    })
}

/// Encode a CapsuleCmd header for `sqe` with `icd_len` bytes of in-capsule data into `buf`
/// (at least [`CMD_HDR_ROOM`] bytes). Returns the header length (what precedes the data).
/// The data digest, if negotiated and `icd_len` > 0, is the caller's to append.
pub fn capsule_header(buf: &mut [u8], sqe: &NvmeCmd, icd_len: u32, neg: &Negotiated) -> usize {
    let hlen = std::mem::size_of::<CapsuleCmdHeader>();
    let mut common = CommonHeader::new(PDU_CAPSULE_CMD, hlen);
    let hdr_total = hlen + neg.hdgst_len();
    let mut pdo = 0;
    let mut plen = hdr_total;
    if neg.hdgst {
        common.flags |= FLAG_HDGSTF;
    }
    if icd_len > 0 {
        pdo = data_offset(hlen, neg.hdgst, neg.cpda);
        plen = pdo + icd_len as usize + neg.ddgst_len();
        if neg.ddgst {
            common.flags |= FLAG_DDGSTF;
        }
    }
    common.pdo = pdo as u8;
    common.plen = plen as u32;
    let h = CapsuleCmdHeader { common, sqe: *sqe };
    buf[..hlen].copy_from_slice(h.as_bytes());
    seal_header(buf, hlen, pdo, neg.hdgst)
}

/// Encode an H2CData header into `buf` (at least [`H2C_HDR_ROOM`] bytes) for `datal` bytes at
/// `datao` of command `cccid` under transfer tag `ttag`. Returns the header length.
pub fn h2c_header(
    buf: &mut [u8],
    cccid: u16,
    ttag: u16,
    datao: u32,
    datal: u32,
    last: bool,
    neg: &Negotiated,
) -> usize {
    let pdu = DataPdu {
        pdu_type: PDU_H2C_DATA,
        cccid,
        ttag,
        datao,
        datal,
        last,
        success: false,
    };
    encode_data_header(buf, &pdu, neg)
}

/// Encode an H2CTermReq for `err` (quoting nothing: the host terminates on what it received).
pub fn h2c_term_req(err: &TermError) -> [u8; SHORT_HLEN] {
    let mut out = [0u8; TERM_MAX_PLEN];
    crate::pdu::encode_term_req(err, &[], &mut out);
    out[0] = crate::pdu::PDU_H2C_TERM_REQ;
    let mut h = [0u8; SHORT_HLEN];
    h.copy_from_slice(&out[..SHORT_HLEN]);
    h
}

/// Whether `fes` is one this host reports (for logs of a C2HTermReq).
pub fn fes_name(fes: u16) -> &'static str {
    match fes {
        FES_INVALID_HEADER_FIELD => "invalid PDU header field",
        FES_PDU_SEQUENCE => "PDU sequence error",
        FES_HEADER_DIGEST => "header digest error",
        0x04 => "data transfer out of range",
        FES_DATA_LIMIT_EXCEEDED => "data transfer limit exceeded",
        0x06 => "unsupported parameter",
        _ => "unknown fatal error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::tests::ch;
    use crate::pdu::{validate_common, DataHeader, RxLimits, PDU_H2C_TERM_REQ};

    fn neg(hdgst: bool, ddgst: bool, cpda: u8, hpda: u8) -> Negotiated {
        Negotiated {
            hdgst,
            ddgst,
            cpda,
            hpda,
            maxh2cdata: 131072,
            maxr2t: 0,
        }
    }

    const LIM: RxLimits = RxLimits {
        max_in_capsule: 8192,
        maxh2cdata: 131072,
    };

    #[test]
    fn icresp_negotiation() {
        let req = icreq(0, true, true, 0);
        assert_eq!(req.as_bytes()[11], 3);
        let n = check_icresp(&IcResp::new(2, true, false, 65536), &req).unwrap();
        assert!(n.hdgst && !n.ddgst);
        assert_eq!((n.cpda, n.maxh2cdata), (2, 65536));
        // More digests than asked for.
        let plain = icreq(0, false, false, 0);
        assert_eq!(
            check_icresp(&IcResp::new(0, true, false, 65536), &plain)
                .unwrap_err()
                .fei,
            11
        );
        assert_eq!(
            check_icresp(&IcResp::new(0, false, false, 1024), &plain)
                .unwrap_err()
                .fei,
            12
        );
        let mut bad = IcResp::new(0, false, false, 65536);
        bad.common.pdu_type = PDU_CAPSULE_RESP;
        assert!(check_icresp(&bad, &plain).is_err());
    }

    #[test]
    fn capsule_headers_pass_the_targets_validator() {
        // What we encode, the target's own validator must accept with the same framing.
        for (h, d, cpda) in [
            (false, false, 0),
            (true, true, 0),
            (true, false, 3),
            (false, true, 1),
        ] {
            let n = neg(h, d, cpda, 0);
            let mut buf = [0u8; CMD_HDR_ROOM];
            let sqe = NvmeCmd {
                opc: 0x01,
                cid: 7,
                ..NvmeCmd::default()
            };
            for icd in [0u32, 512, 4096] {
                let len = capsule_header(&mut buf, &sqe, icd, &n);
                let common = CommonHeader::read_from(&buf).unwrap();
                let f = validate_common(&common, Some(&n), &LIM).unwrap();
                assert_eq!(f.data_start, len);
                assert_eq!(f.data_len, icd);
                if h {
                    crate::pdu::check_header_digest(&buf, 72).unwrap();
                }
                let got = CapsuleCmdHeader::read_from(&buf).unwrap();
                assert_eq!(got.sqe.cid, 7);
            }
            let len = h2c_header(&mut buf, 9, 3, 4096, 8192, true, &n);
            let common = CommonHeader::read_from(&buf).unwrap();
            let f = validate_common(&common, Some(&n), &LIM).unwrap();
            assert_eq!((f.data_start, f.data_len), (len, 8192));
            let dh = DataHeader::read_from(&buf).unwrap();
            assert_eq!((dh.cccid, dh.ttag, dh.datao, dh.datal), (9, 3, 4096, 8192));
            assert!(dh.common.flags & FLAG_LAST_PDU != 0);
        }
    }

    #[test]
    fn controller_pdus() {
        let n = neg(false, false, 0, 0);
        let f = validate_c2h(&ch(PDU_CAPSULE_RESP, 0, 24, 0, 24), &n).unwrap();
        assert_eq!((f.data_start, f.data_len), (24, 0));
        let f = validate_c2h(&ch(PDU_C2H_DATA, FLAG_LAST_PDU, 24, 24, 24 + 4096), &n).unwrap();
        assert_eq!((f.data_start, f.data_len, f.ddgst), (24, 4096, false));
        let f = validate_c2h(&ch(PDU_R2T, 0, 24, 0, 24), &n).unwrap();
        assert_eq!(f.pdu_type, PDU_R2T);
        let f = validate_c2h(&ch(PDU_C2H_TERM_REQ, 0, 24, 0, 40), &n).unwrap();
        assert_eq!(f.data_start, 40);

        // Digests on: flags must say so, data digest adds 4 bytes.
        let n = neg(true, true, 0, 1);
        let fl = FLAG_HDGSTF | FLAG_DDGSTF | FLAG_LAST_PDU | FLAG_SUCCESS;
        let f = validate_c2h(&ch(PDU_C2H_DATA, fl, 24, 32, 32 + 512 + 4), &n).unwrap();
        assert_eq!((f.data_start, f.data_len, f.ddgst), (32, 512, true));
        // pdo not aligned to HPDA (8 bytes).
        let e = validate_c2h(&ch(PDU_C2H_DATA, fl, 24, 28, 28 + 512 + 4), &n).unwrap_err();
        assert_eq!(e.fei, 3);
        // Header digest flag missing.
        let e = validate_c2h(&ch(PDU_CAPSULE_RESP, 0, 24, 0, 24), &n).unwrap_err();
        assert_eq!(e.fei, 1);
    }

    #[test]
    fn bad_controller_pdus() {
        let n = neg(false, false, 0, 0);
        // Host-to-controller types from a controller.
        for t in [
            PDU_ICREQ,
            PDU_H2C_TERM_REQ,
            PDU_CAPSULE_CMD,
            PDU_H2C_DATA,
            0x08,
            0xff,
        ] {
            let e = validate_c2h(&ch(t, 0, 24, 0, 24), &n).unwrap_err();
            assert_eq!((e.fes, e.fei), (FES_INVALID_HEADER_FIELD, 0), "type {t:#x}");
        }
        // Wrong hlen.
        assert_eq!(
            validate_c2h(&ch(PDU_CAPSULE_RESP, 0, 72, 0, 72), &n)
                .unwrap_err()
                .fei,
            2
        );
        // A response with data.
        assert!(validate_c2h(&ch(PDU_CAPSULE_RESP, 0, 24, 24, 100), &n).is_err());
        // Data PDU without data, with pdo inside the header, or with SUCCESS but not LAST.
        assert!(validate_c2h(&ch(PDU_C2H_DATA, 0, 24, 24, 24), &n).is_err());
        assert!(validate_c2h(&ch(PDU_C2H_DATA, 0, 24, 16, 100), &n).is_err());
        assert!(validate_c2h(&ch(PDU_C2H_DATA, FLAG_SUCCESS, 24, 24, 100), &n).is_err());
        // Data digest flag set but not negotiated.
        assert!(validate_c2h(&ch(PDU_C2H_DATA, FLAG_DDGSTF, 24, 24, 100), &n).is_err());
        // Oversized termination request.
        assert!(validate_c2h(&ch(PDU_C2H_TERM_REQ, 0, 24, 0, 1000), &n).is_err());
        // Absurd data length.
        assert_eq!(
            validate_c2h(&ch(PDU_C2H_DATA, 0, 24, 24, u32::MAX), &n)
                .unwrap_err()
                .fes,
            FES_DATA_LIMIT_EXCEEDED
        );
    }

    #[test]
    fn term_req_encoding() {
        let h = h2c_term_req(&TermError::field(3, "x"));
        let t = crate::pdu::TermReqHeader::read_from(&h).unwrap();
        assert_eq!(t.common.pdu_type, PDU_H2C_TERM_REQ);
        assert_eq!(t.common.plen, 24);
        assert_eq!((t.fes, t.fei()), (1, 3));
        assert_eq!(fes_name(2), "PDU sequence error");
    }

    /// A header-digest flag that disagrees with the negotiation is refused the same way in
    /// both directions (one check, `pdu::digest_flags`): same FES, FEI and reason.
    #[test]
    fn both_directions_refuse_a_wrong_hdgstf_alike() {
        for negotiated in [false, true] {
            let n = neg(negotiated, false, 0, 0);
            let flags = if negotiated { 0 } else { FLAG_HDGSTF };
            let hd = if negotiated { 0 } else { 4 };
            let resp = ch(PDU_CAPSULE_RESP, flags, 24, 0, 24 + hd);
            let c2h = ch(PDU_C2H_DATA, flags, 24, 24 + hd as u8, 24 + hd + 8);
            let cmd = ch(PDU_CAPSULE_CMD, flags, 72, 0, 72 + hd);
            let h2c = ch(PDU_H2C_DATA, flags, 24, 24 + hd as u8, 24 + hd + 8);
            let want = TermError::field(OFF_FLAGS, "HDGSTF does not match the negotiation");
            assert_eq!(validate_c2h(&resp, &n), Err(want));
            assert_eq!(validate_c2h(&c2h, &n), Err(want));
            assert_eq!(validate_common(&cmd, Some(&n), &LIM), Err(want));
            assert_eq!(validate_common(&h2c, Some(&n), &LIM), Err(want));
            assert_eq!(crate::pdu::digest_flags(flags, &n), Err(want));
        }
    }
}
