//! `keel-nvmf-host`: a userspace NVMe/TCP host (initiator) as a library. It connects a
//! controller the way Linux and SPDK hosts do and drives I/O queue pairs from Keel's reactors
//! with the target's rules — one queue pair per core per namespace, owned by that core, one
//! poller per core for all its queue pairs, no lock and no allocation per I/O. keel-perf's
//! `-r` mode uses it; next, a remote NVMe bdev (replication).
//!
//! ```ignore
//! let ctrlr = Controller::connect(&ConnectOpts::new(addr, "nqn.2016-06.io.keel:default")).await?;
//! let info = Arc::clone(ctrlr.info());            // Send + Sync: give it to other cores
//! // on each core, from async code:
//! let q = IoQpair::connect(&info, 1).await?;
//! // or from synchronous code (a bdev's create_channel): usable at once, I/O submitted
//! // before the connection is up waits for it
//! let q = IoQpair::start(&info, 1)?;
//! q.read(&[iov], lba, blocks, on_done, ctx)?;     // on_done(ctx, IoStatus) runs later, here
//! ```
//!
//! I/O queue ids are leased from the controller's granted range and given back when the
//! queue pair is dropped, so queues can be connected again and again.
//!
//! - `keel_nvme::frame` (the wire crate): host-side PDU framing (validate controller PDUs,
//!   encode host PDUs).
//! - [`sock`]: non-blocking connect and gathered/scattered socket calls.
//! - `group`: the per-core poll group: one poller for every queue pair of the core.
//! - [`qpair`]: one queue pair: slots by CID, batched send/receive, R2T/H2CData, C2HData
//!   straight into the caller's buffers, digests (HOT PATH).
//! - [`ident`]: the Identify fields a host reads.
//! - `ctrlr`: admin bring-up ([`Controller`]) and I/O queue connection ([`IoQpair`]).

mod ctrlr;
mod group;
pub mod ident;
pub mod qpair;
pub mod sock;

pub use ctrlr::{Controller, CtrlrInfo, IoQpair, NsInfo};
pub use qpair::{io_status, QpairStats, SubmitError};

/// Host queue pairs (admin and I/O, of every controller) on the calling core: all of them
/// are driven by one poller (for tests and stats).
pub fn qpairs_on_this_core() -> usize {
    group::len()
}

use keel_nvme::fabrics::{validate_nqn, NQN_MAX_LEN};
use keel_nvme::status::Status;
use std::net::SocketAddr;
use std::time::Duration;

/// How to connect a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOpts {
    /// The controller's address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Our host NQN (default: `nqn.2014-08.org.nvmexpress:uuid:<hostid>`). Empty: connect as
    /// an anonymous host, as SPDK's initiator does by default (targets admit it only where
    /// any host is allowed).
    pub hostnqn: String,
    /// Our host identifier (default: random).
    pub hostid: [u8; 16],
    /// Ask for header digests.
    pub hdgst: bool,
    /// Ask for data digests.
    pub ddgst: bool,
    /// Entries per I/O queue asked for (capped by CAP.MQES and MAXCMD).
    pub io_queue_depth: u16,
    /// I/O queues asked for (one per core per namespace).
    pub io_queues: u16,
    /// Keep-alive timeout in ms (0: none); Keep Alive goes out every half of it.
    pub kato_ms: u32,
    /// Limit for each bring-up step.
    pub timeout: Duration,
}

impl ConnectOpts {
    /// Defaults for `addr` and `subnqn`: a random host id and its UUID host NQN, no digests,
    /// 128-entry I/O queues, 64 I/O queues, no keep-alive, 10 s per step.
    pub fn new(addr: SocketAddr, subnqn: &str) -> ConnectOpts {
        let hostid = random_hostid();
        ConnectOpts {
            addr,
            subnqn: subnqn.into(),
            hostnqn: format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid_string(&hostid)),
            hostid,
            hdgst: false,
            ddgst: false,
            io_queue_depth: 128,
            io_queues: 64,
            kato_ms: 0,
            timeout: Duration::from_secs(10),
        }
    }

    /// Check what the controller would refuse anyway.
    pub fn validate(&self) -> Result<(), InitiatorError> {
        for (what, nqn) in [("subsystem", &self.subnqn), ("host", &self.hostnqn)] {
            if what == "host" && nqn.is_empty() {
                continue; // anonymous host
            }
            if nqn.len() > NQN_MAX_LEN {
                return Err(InitiatorError::Invalid(format!(
                    "{what} NQN longer than 223 bytes"
                )));
            }
            validate_nqn(nqn)
                .map_err(|e| InitiatorError::Invalid(format!("{what} NQN {nqn:?}: {e}")))?;
        }
        if self.io_queue_depth < 2 {
            return Err(InitiatorError::Invalid(
                "I/O queue depth must be at least 2".into(),
            ));
        }
        if self.io_queues == 0 || self.io_queues == u16::MAX {
            return Err(InitiatorError::Invalid(
                "I/O queues must be 1 to 65534".into(),
            ));
        }
        Ok(())
    }
}

/// A random 128-bit host identifier (from the kernel's entropy; time and pid if unavailable).
fn random_hostid() -> [u8; 16] {
    let mut id = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    // RFC 4122 version 4, variant 1.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Why a connection could not be made or a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// The TCP connection failed.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The controller broke the NVMe/TCP protocol.
    #[error("NVMe/TCP protocol error: {0}")]
    Protocol(String),
    /// A command failed with an NVMe status.
    #[error("{0} failed: {1}")]
    Status(&'static str, Status),
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The connection went away.
    #[error("the connection to the controller was lost")]
    Disconnected,
    /// Bad options or an impossible request.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_random() {
        let a = ConnectOpts::new(
            "127.0.0.1:4420".parse().unwrap(),
            "nqn.2016-06.io.keel:default",
        );
        let b = ConnectOpts::new(
            "127.0.0.1:4420".parse().unwrap(),
            "nqn.2016-06.io.keel:default",
        );
        a.validate().unwrap();
        assert_ne!(a.hostid, b.hostid);
        assert!(a.hostnqn.starts_with("nqn.2014-08.org.nvmexpress:uuid:"));
        assert_eq!(
            a.hostnqn.len(),
            "nqn.2014-08.org.nvmexpress:uuid:".len() + 36
        );
        assert_eq!(a.hostid[6] >> 4, 4);
    }

    #[test]
    fn bad_options_are_refused() {
        let mut o = ConnectOpts::new("127.0.0.1:4420".parse().unwrap(), "not an nqn");
        assert!(o.validate().is_err());
        o.subnqn = "nqn.2016-06.io.keel:x".into();
        o.io_queue_depth = 1;
        assert!(o.validate().is_err());
        o.io_queue_depth = 32;
        o.io_queues = 0;
        assert!(o.validate().is_err());
        o.io_queues = 4;
        o.validate().unwrap();
        // An empty host NQN is an anonymous host (SPDK's default); a malformed one is refused.
        o.hostnqn = String::new();
        o.validate().unwrap();
        o.hostnqn = "not an nqn".into();
        assert!(o.validate().is_err());
    }
}
