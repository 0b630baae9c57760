//! HOT PATH: what a work request id says, so a completion finds its owner without a lookup
//! table: `[kind:8][generation:8][connection token:16][index:32]`.
//!
//! The generation tells a reused connection token from the connection that held it before
//! (a completion of a torn-down QP may still sit in the core's CQ).

/// What a work request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A receive posted to the core's shared receive queue (index: buffer).
    SrqRecv,
    /// A receive posted to one connection's own receive queue (index: buffer).
    QpRecv,
    /// The last (signaled) RDMA READ fetching a request's data (index: slot).
    Read,
    /// The response SEND, last of its chain, signaled (index: slot).
    Send,
    /// An unsignaled RDMA READ/WRITE; completes only when flushed (index: slot).
    Unsignaled,
}

impl Kind {
    fn code(self) -> u64 {
        match self {
            Kind::SrqRecv => 1,
            Kind::QpRecv => 2,
            Kind::Read => 3,
            Kind::Send => 4,
            Kind::Unsignaled => 5,
        }
    }
    fn from_code(c: u64) -> Option<Kind> {
        Some(match c {
            1 => Kind::SrqRecv,
            2 => Kind::QpRecv,
            3 => Kind::Read,
            4 => Kind::Send,
            5 => Kind::Unsignaled,
            _ => return None,
        })
    }
}

/// A decoded work request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrId {
    pub kind: Kind,
    pub gen: u8,
    pub token: u16,
    pub index: u32,
}

impl WrId {
    /// Encode.
    #[inline]
    pub fn encode(self) -> u64 {
        (self.kind.code() << 56)
            | (u64::from(self.gen) << 48)
            | (u64::from(self.token) << 32)
            | u64::from(self.index)
    }

    /// Decode (`None` for an id this transport never made).
    #[inline]
    pub fn decode(v: u64) -> Option<WrId> {
        Some(WrId {
            kind: Kind::from_code(v >> 56)?,
            gen: (v >> 48) as u8,
            token: (v >> 32) as u16,
            index: v as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_kinds() {
        for kind in [
            Kind::SrqRecv,
            Kind::QpRecv,
            Kind::Read,
            Kind::Send,
            Kind::Unsignaled,
        ] {
            let w = WrId {
                kind,
                gen: 0xab,
                token: 0xfffe,
                index: 0xdead_beef,
            };
            assert_eq!(WrId::decode(w.encode()), Some(w));
        }
        assert_eq!(WrId::decode(0), None);
        assert_eq!(WrId::decode(9 << 56), None);
    }
}
