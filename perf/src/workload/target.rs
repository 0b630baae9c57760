//! What the workload drives: a [`Target`] accepts block reads and writes and completes them on
//! the submitting core through a plain function-pointer callback (no allocation per I/O). The
//! local implementation, [`BdevTarget`], wraps a bdev [`IoChannel`]; `super::nvmf_tcp` implements
//! the same two traits over NVMe/TCP (one initiator queue pair per core).

use keel_bdev::{BdevDesc, BdevEvent, IoChannel, IoStatus, IoVec};
use std::future::Future;

/// Completion callback: `ctx` is the value given at submission. Runs on the submitting core,
/// from the reactor loop — never from inside [`Target::submit`].
pub type Completion = fn(ctx: usize, status: IoStatus);

/// Direction of an I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
}

/// Why an I/O was not accepted (its callback will not run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Out of submission resources for now: retry after a completion.
    #[error("target busy, retry later")]
    Busy,
    /// The I/O can never succeed (the message says why).
    #[error("{0}")]
    Rejected(String),
}

/// Why a target could not be set up on a core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

/// One core's connection to the device under test. `!Send` is fine: it lives on its core.
pub trait Target {
    /// A short description for reports (e.g. `bdev Null0`).
    fn describe(&self) -> String;
    /// Logical block size, bytes.
    fn block_size(&self) -> u32;
    /// Capacity in blocks.
    fn num_blocks(&self) -> u64;
    /// Whether reads return what was written (false for a null device: `--verify` then only
    /// stamps writes and does not check reads).
    fn stores_data(&self) -> bool;
    /// Submit one I/O of `num_blocks` blocks at `offset_blocks` using `iov` (whose memory the
    /// caller keeps valid and untouched until the completion). On `Ok`, `cb(ctx, status)` runs
    /// exactly once, later, on this core.
    fn submit(
        &self,
        dir: Direction,
        iov: IoVec,
        offset_blocks: u64,
        num_blocks: u64,
        cb: Completion,
        ctx: usize,
    ) -> Result<(), SubmitError>;
}

/// Makes one [`Target`] per core; shared by every job (`Send + Sync`).
pub trait TargetFactory: Send + Sync + 'static {
    /// The per-core target.
    type Target: Target + 'static;
    /// Connect on the calling core (a reactor). `write` asks for write access.
    fn connect(&self, write: bool) -> impl Future<Output = Result<Self::Target, TargetError>>;
}

/// A local bdev, by name (or alias).
#[derive(Debug, Clone)]
pub struct BdevTargetFactory {
    /// The bdev name.
    pub name: String,
}

/// A bdev opened on one core, with that core's channel.
pub struct BdevTarget {
    // Field order: the channel goes before the descriptor it was taken from.
    channel: IoChannel,
    desc: BdevDesc,
    stores_data: bool,
}

impl TargetFactory for BdevTargetFactory {
    type Target = BdevTarget;

    async fn connect(&self, write: bool) -> Result<BdevTarget, TargetError> {
        let name = self.name.clone();
        let desc = keel_bdev::open(&self.name, write, move |ev| match ev {
            BdevEvent::Remove => log::warn!("bdev {name} is being removed under the benchmark"),
            BdevEvent::Resize => log::warn!("bdev {name} was resized under the benchmark"),
        })
        .map_err(|e| TargetError(format!("cannot open bdev {}: {e}", self.name)))?;
        let channel = desc
            .get_io_channel()
            .map_err(|e| TargetError(format!("no I/O channel on bdev {}: {e}", self.name)))?;
        let stores_data =
            desc.bdev().backend().product_name() != keel_bdev::modules::null::PRODUCT_NAME;
        Ok(BdevTarget {
            channel,
            desc,
            stores_data,
        })
    }
}

impl Target for BdevTarget {
    fn describe(&self) -> String {
        let b = self.desc.bdev();
        format!("bdev {} ({})", b.name(), b.backend().product_name())
    }
    fn block_size(&self) -> u32 {
        self.desc.bdev().info().block_size
    }
    fn num_blocks(&self) -> u64 {
        self.desc.bdev().num_blocks()
    }
    fn stores_data(&self) -> bool {
        self.stores_data
    }
    #[inline]
    fn submit(
        &self,
        dir: Direction,
        iov: IoVec,
        offset_blocks: u64,
        num_blocks: u64,
        cb: Completion,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        let iovs = [iov];
        let r = match dir {
            Direction::Read => self.channel.read(&iovs, offset_blocks, num_blocks, cb, ctx),
            Direction::Write => self
                .channel
                .write(&iovs, offset_blocks, num_blocks, cb, ctx),
        };
        r.map_err(|e| match e {
            keel_bdev::SubmitError::NoDescriptor => SubmitError::Busy,
            other => SubmitError::Rejected(other.to_string()),
        })
    }
}
