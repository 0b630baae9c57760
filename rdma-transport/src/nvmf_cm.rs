//! NVMe-oF RDMA transport binding: the RDMA CM private data exchanged while connecting
//! (NVMe RDMA Transport Specification, figures 5–7 and 11; all fields little-endian).
//!
//! ```text
//! RDMA_CM_REQUEST (host → controller, 32 B): RECFMT u16 @0 (0), QID u16 @2,
//!     HRQSIZE u16 @4 (host receive entries), HSQSIZE u16 @6 (0's based, = SQSIZE),
//!     CNTLID u16 @8, reserved to 32
//! RDMA_CM_ACCEPT  (controller → host, 32 B): RECFMT u16 @0, CRQSIZE u16 @2, reserved to 32
//! RDMA_CM_REJECT  (controller → host, 4 B):  RECFMT u16 @0, STS u16 @2
//! ```

use thiserror::Error;

/// The only defined record format.
pub const RECFMT_1_0: u16 = 0;
/// Length of the request and accept records.
pub const CM_REQ_LEN: usize = 32;
/// Length of the accept record.
pub const CM_ACCEPT_LEN: usize = 32;
/// Length of the reject record.
pub const CM_REJECT_LEN: usize = 4;

/// RDMA transport errors sent in an RDMA_CM_REJECT (figure 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[repr(u16)]
pub enum RejectStatus {
    /// The host sent an incorrect private data size.
    #[error("invalid private data length")]
    InvalidLength = 0x01,
    /// The host sent an invalid RECFMT.
    #[error("invalid record format")]
    InvalidRecfmt = 0x02,
    /// The host sent an invalid QID.
    #[error("invalid queue id")]
    InvalidQid = 0x03,
    /// The host sent an invalid HSQSIZE.
    #[error("invalid host send queue size")]
    InvalidHsqsize = 0x04,
    /// The host sent an invalid HRQSIZE.
    #[error("invalid host receive queue size")]
    InvalidHrqsize = 0x05,
    /// The controller cannot create the QP.
    #[error("no resources")]
    NoResources = 0x06,
    /// The host sent an invalid IRD.
    #[error("invalid IRD")]
    InvalidIrd = 0x07,
    /// The host sent an invalid ORD.
    #[error("invalid ORD")]
    InvalidOrd = 0x08,
    /// The host sent an invalid CNTLID.
    #[error("invalid controller id")]
    InvalidCntlid = 0x09,
}

impl RejectStatus {
    /// The wire value.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The status for a wire value, if defined.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0x01 => Self::InvalidLength,
            0x02 => Self::InvalidRecfmt,
            0x03 => Self::InvalidQid,
            0x04 => Self::InvalidHsqsize,
            0x05 => Self::InvalidHrqsize,
            0x06 => Self::NoResources,
            0x07 => Self::InvalidIrd,
            0x08 => Self::InvalidOrd,
            0x09 => Self::InvalidCntlid,
            _ => return None,
        })
    }
}

/// What the controller accepts, for validating requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmLimits {
    /// Highest I/O queue id (admin is 0).
    pub max_qid: u16,
    /// Entries of an I/O queue (1's based; like the Connect command: SQSIZE < this).
    pub max_queue_depth: u16,
    /// Entries of the admin queue (1's based).
    pub max_aq_depth: u16,
}

/// A validated RDMA_CM_REQUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmRequest {
    /// Queue id (0: admin).
    pub qid: u16,
    /// Receive entries the host posted for responses (1's based): bounds our sends.
    pub hrqsize: u16,
    /// Host submission queue size, 0's based (entries = `hsqsize + 1`).
    pub hsqsize: u16,
    /// Controller id the host names for an I/O queue (checked later by Connect).
    pub cntlid: u16,
}

impl CmRequest {
    /// Submission queue entries (1's based).
    pub fn sq_entries(&self) -> u32 {
        u32::from(self.hsqsize) + 1
    }

    /// Encodes the request (host side).
    pub fn encode(&self) -> [u8; CM_REQ_LEN] {
        let mut b = [0u8; CM_REQ_LEN];
        b[0..2].copy_from_slice(&RECFMT_1_0.to_le_bytes());
        b[2..4].copy_from_slice(&self.qid.to_le_bytes());
        b[4..6].copy_from_slice(&self.hrqsize.to_le_bytes());
        b[6..8].copy_from_slice(&self.hsqsize.to_le_bytes());
        b[8..10].copy_from_slice(&self.cntlid.to_le_bytes());
        b
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Parses and validates a CONNECT_REQUEST's private data against `limits`; on failure returns
/// the status to send in the REJECT. Longer data is accepted (InfiniBand/RoCE pad the CM
/// request's private data to 56 bytes); reserved bytes are ignored. The CNTLID is only
/// recorded: whether it names a live controller is decided by the Connect command.
pub fn parse_request(data: &[u8], limits: &CmLimits) -> Result<CmRequest, RejectStatus> {
    if data.len() < CM_REQ_LEN {
        return Err(RejectStatus::InvalidLength);
    }
    if le16(data, 0) != RECFMT_1_0 {
        return Err(RejectStatus::InvalidRecfmt);
    }
    let req = CmRequest {
        qid: le16(data, 2),
        hrqsize: le16(data, 4),
        hsqsize: le16(data, 6),
        cntlid: le16(data, 8),
    };
    if req.qid > limits.max_qid {
        return Err(RejectStatus::InvalidQid);
    }
    let depth = if req.qid == 0 {
        limits.max_aq_depth
    } else {
        limits.max_queue_depth
    };
    // A queue has at least two entries; SQSIZE is 0's based, so it must be below the depth.
    if req.hsqsize == 0 || req.hsqsize >= depth {
        return Err(RejectStatus::InvalidHsqsize);
    }
    if req.hrqsize == 0 || req.hrqsize > depth {
        return Err(RejectStatus::InvalidHrqsize);
    }
    Ok(req)
}

/// Encodes the RDMA_CM_ACCEPT private data with our receive queue size for this QP.
pub fn encode_accept(crqsize: u16) -> [u8; CM_ACCEPT_LEN] {
    let mut b = [0u8; CM_ACCEPT_LEN];
    b[0..2].copy_from_slice(&RECFMT_1_0.to_le_bytes());
    b[2..4].copy_from_slice(&crqsize.to_le_bytes());
    b
}

/// Encodes the RDMA_CM_REJECT private data.
pub fn encode_reject(status: RejectStatus) -> [u8; CM_REJECT_LEN] {
    let mut b = [0u8; CM_REJECT_LEN];
    b[0..2].copy_from_slice(&RECFMT_1_0.to_le_bytes());
    b[2..4].copy_from_slice(&status.code().to_le_bytes());
    b
}

/// Why a controller's reply could not be parsed (host side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// Shorter than the record.
    #[error("private data too short: {0} bytes")]
    TooShort(usize),
    /// A RECFMT other than 0.
    #[error("unknown record format {0}")]
    Recfmt(u16),
}

/// Parses an RDMA_CM_ACCEPT (host side): the controller's CRQSIZE.
pub fn parse_accept(data: &[u8]) -> Result<u16, ReplyError> {
    if data.len() < 4 {
        return Err(ReplyError::TooShort(data.len()));
    }
    match le16(data, 0) {
        RECFMT_1_0 => Ok(le16(data, 2)),
        f => Err(ReplyError::Recfmt(f)),
    }
}

/// Parses an RDMA_CM_REJECT (host side): the raw STS (see [`RejectStatus::from_code`]).
pub fn parse_reject(data: &[u8]) -> Result<u16, ReplyError> {
    if data.len() < CM_REJECT_LEN {
        return Err(ReplyError::TooShort(data.len()));
    }
    match le16(data, 0) {
        RECFMT_1_0 => Ok(le16(data, 2)),
        f => Err(ReplyError::Recfmt(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CmLimits = CmLimits {
        max_qid: 8,
        max_queue_depth: 128,
        max_aq_depth: 32,
    };

    /// A request as the Linux host sends it for I/O queue 3 (SQSIZE 127, 128 receives,
    /// controller 1), padded to 56 bytes as on RoCE.
    fn io_request() -> [u8; 56] {
        let mut b = [0u8; 56];
        b[..10].copy_from_slice(&[0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x7f, 0x00, 0x01, 0x00]);
        b
    }

    #[test]
    fn parses_io_and_admin_requests() {
        let r = parse_request(&io_request(), &LIMITS).unwrap();
        assert_eq!(
            r,
            CmRequest {
                qid: 3,
                hrqsize: 128,
                hsqsize: 127,
                cntlid: 1
            }
        );
        assert_eq!(r.sq_entries(), 128);
        // Admin queue: 32 receives, SQSIZE 31, CNTLID 0, exactly 32 bytes.
        let mut a = [0u8; 32];
        a[..10].copy_from_slice(&[0, 0, 0, 0, 0x20, 0, 0x1f, 0, 0, 0]);
        assert_eq!(
            parse_request(&a, &LIMITS),
            Ok(CmRequest {
                qid: 0,
                hrqsize: 32,
                hsqsize: 31,
                cntlid: 0
            })
        );
    }

    #[test]
    fn encode_round_trips_and_ignores_reserved() {
        let r = CmRequest {
            qid: 8,
            hrqsize: 2,
            hsqsize: 1,
            cntlid: 0xfffe,
        };
        let mut b = r.encode();
        assert_eq!(&b[..10], &[0, 0, 8, 0, 2, 0, 1, 0, 0xfe, 0xff]);
        assert!(b[10..].iter().all(|&x| x == 0));
        b[31] = 0xaa;
        assert_eq!(parse_request(&b, &LIMITS), Ok(r));
    }

    #[test]
    fn rejects_bad_requests_with_the_right_status() {
        let ok = io_request();
        let bad = |at: usize, v: u16| {
            let mut b = ok;
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            parse_request(&b, &LIMITS)
        };
        assert_eq!(
            parse_request(&ok[..31], &LIMITS),
            Err(RejectStatus::InvalidLength)
        );
        assert_eq!(
            parse_request(&[], &LIMITS),
            Err(RejectStatus::InvalidLength)
        );
        assert_eq!(bad(0, 1), Err(RejectStatus::InvalidRecfmt));
        assert_eq!(bad(2, 9), Err(RejectStatus::InvalidQid));
        assert_eq!(bad(2, 0xffff), Err(RejectStatus::InvalidQid));
        assert_eq!(bad(6, 0), Err(RejectStatus::InvalidHsqsize));
        assert_eq!(bad(6, 128), Err(RejectStatus::InvalidHsqsize));
        assert_eq!(bad(4, 0), Err(RejectStatus::InvalidHrqsize));
        assert_eq!(bad(4, 129), Err(RejectStatus::InvalidHrqsize));
        // The admin queue is bounded by the admin depth.
        let mut a = ok;
        a[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            parse_request(&a, &LIMITS),
            Err(RejectStatus::InvalidHsqsize)
        );
        a[6..8].copy_from_slice(&31u16.to_le_bytes());
        assert_eq!(
            parse_request(&a, &LIMITS),
            Err(RejectStatus::InvalidHrqsize)
        );
        // Boundaries are accepted.
        assert!(bad(6, 127).is_ok() && bad(4, 128).is_ok() && bad(2, 8).is_ok());
    }

    #[test]
    fn accept_and_reject_are_byte_exact() {
        let acc = encode_accept(0x0080);
        assert_eq!(&acc[..4], &[0x00, 0x00, 0x80, 0x00]);
        assert!(acc[4..].iter().all(|&x| x == 0));
        assert_eq!(acc.len(), 32);
        assert_eq!(parse_accept(&acc), Ok(128));
        assert_eq!(
            encode_reject(RejectStatus::InvalidHsqsize),
            [0x00, 0x00, 0x04, 0x00]
        );
        assert_eq!(
            encode_reject(RejectStatus::NoResources),
            [0x00, 0x00, 0x06, 0x00]
        );
        assert_eq!(
            parse_reject(&encode_reject(RejectStatus::InvalidQid)),
            Ok(3)
        );
        assert_eq!(parse_reject(&[0, 0, 2]), Err(ReplyError::TooShort(3)));
        assert_eq!(parse_accept(&[1, 0, 0, 0]), Err(ReplyError::Recfmt(1)));
    }

    #[test]
    fn status_codes_match_the_spec() {
        let all = [
            (RejectStatus::InvalidLength, 1),
            (RejectStatus::InvalidRecfmt, 2),
            (RejectStatus::InvalidQid, 3),
            (RejectStatus::InvalidHsqsize, 4),
            (RejectStatus::InvalidHrqsize, 5),
            (RejectStatus::NoResources, 6),
            (RejectStatus::InvalidIrd, 7),
            (RejectStatus::InvalidOrd, 8),
            (RejectStatus::InvalidCntlid, 9),
        ];
        for (s, code) in all {
            assert_eq!(s.code(), code);
            assert_eq!(RejectStatus::from_code(code), Some(s));
        }
        assert_eq!(RejectStatus::from_code(0), None);
        assert_eq!(RejectStatus::from_code(10), None);
    }
}
