//! Preparing data clusters on the metadata core without stalling the core: zero-filling and
//! copying new clusters, and unmapping freed ones.
//!
//! A base may do the whole work of an I/O inside its submit call (malloc's WriteZeroes and
//! Unmap are a memset, its writes a memcpy), so one WriteZeroes over a 4 MiB cluster would hold
//! every other I/O of the core for the length of that memset. Here a cluster is processed in
//! chunks of [`FILL_CHUNK`] bytes, and at most [`FILL_WINDOW`] chunks are in flight per core,
//! across every store and every cluster being prepared there. A chunk's completion (delivered
//! in a later reactor iteration) lets the next one start, so one reactor iteration does at most
//! `FILL_WINDOW × FILL_CHUNK` bytes of this work, and an asynchronous base still sees
//! `FILL_WINDOW` I/Os in flight.
//!
//! Control path only (one allocation per cluster for the chunk workers, one per chunk for copy
//! buffers).

use super::md::{join_all, MdFut};
use super::mdio::{self, LocalSemaphore, MdIo};
use super::store::StoreShared;
use keel_bdev::{BdevError, IoChannel, IoStatus, IoVec};
use keel_reactor::pool::DmaBuf;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Bytes per chunk of cluster preparation.
pub const FILL_CHUNK: u64 = 128 * 1024;
/// Chunks in flight per core.
pub const FILL_WINDOW: usize = 4;
const _: () = assert!(FILL_CHUNK as usize <= keel_reactor::pool::MAX_CLASS);

thread_local! {
    static WINDOW: Rc<LocalSemaphore> = Rc::new(LocalSemaphore::new(FILL_WINDOW));
    /// [`FILL_CHUNK`] zero bytes, for zero-filling on bases without WriteZeroes (allocated once
    /// per core, only ever read).
    static ZEROES: RefCell<Option<DmaBuf>> = const { RefCell::new(None) };
}

/// This core's chunk window.
fn window() -> Rc<LocalSemaphore> {
    WINDOW.with(Rc::clone)
}

/// How a newly allocated cluster is prepared before the map names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The cluster is known to read zeroes already (see `MdState::clean`): nothing to write.
    Clean,
    /// Zero it.
    Zero,
    /// Copy this physical cluster into it (copy on write from the parent chain).
    Copy(u32),
}

/// What one chunk does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// WriteZeroes on the base.
    WriteZeroes,
    /// Writes of a zero buffer (bases without WriteZeroes).
    WriteZeroBuf,
    /// Read the same range of this physical cluster, then write it.
    Copy(u32),
    /// Unmap on the base.
    Unmap,
}

impl Op {
    fn what(self) -> &'static str {
        match self {
            Op::WriteZeroes | Op::WriteZeroBuf => "cluster zero-fill",
            Op::Copy(_) => "copy on write",
            Op::Unmap => "unmap of a freed cluster",
        }
    }
}

fn io_err(what: &str, status: IoStatus) -> BdevError {
    BdevError::Os {
        context: format!("lvstore {what}"),
        message: format!("base I/O failed ({status:?})"),
        errno: libc::EIO,
    }
}

/// First base block of physical cluster `phys`.
fn cluster_block(s: &StoreShared, phys: u32) -> u64 {
    s.data_start_blocks + u64::from(phys) * s.blocks_per_cluster
}

/// Prepare physical cluster `phys` of store `s` as `fill` says, through `ch` (the metadata
/// core's base channel).
pub async fn prepare(
    s: &StoreShared,
    ch: &IoChannel,
    phys: u32,
    fill: Fill,
) -> Result<(), BdevError> {
    let op = match fill {
        Fill::Clean => return Ok(()),
        Fill::Zero if s.base_write_zeroes => Op::WriteZeroes,
        Fill::Zero => Op::WriteZeroBuf,
        Fill::Copy(src) => Op::Copy(src),
    };
    chunked(s, ch, phys, op).await
}

/// Unmap physical cluster `phys` (a freed cluster) on the base.
pub async fn unmap(s: &StoreShared, ch: &IoChannel, phys: u32) -> Result<(), BdevError> {
    chunked(s, ch, phys, Op::Unmap).await
}

/// Run `op` over the whole cluster, chunk by chunk, up to [`FILL_WINDOW`] chunks at once.
async fn chunked(s: &StoreShared, ch: &IoChannel, phys: u32, op: Op) -> Result<(), BdevError> {
    let bpc = s.blocks_per_cluster;
    let per_chunk = (FILL_CHUNK.min(s.cluster_size) / u64::from(s.block_size)).max(1);
    let next = Cell::new(0u64);
    let workers = (bpc.div_ceil(per_chunk) as usize).min(FILL_WINDOW);
    let futs: Vec<MdFut<'_>> = (0..workers)
        .map(|_| Box::pin(worker(s, ch, phys, op, per_chunk, &next)) as MdFut<'_>)
        .collect();
    join_all(futs).await.into_iter().collect()
}

/// Take the next chunk of the cluster until none is left (or one failed).
async fn worker(
    s: &StoreShared,
    ch: &IoChannel,
    phys: u32,
    op: Op,
    per_chunk: u64,
    next: &Cell<u64>,
) -> Result<(), BdevError> {
    let bpc = s.blocks_per_cluster;
    let window = window();
    loop {
        let off = next.get();
        if off >= bpc {
            return Ok(());
        }
        let n = per_chunk.min(bpc - off);
        next.set(off + n);
        let _permit = window.acquire().await;
        if let Err(e) = chunk(s, ch, phys, op, off, n).await {
            next.set(bpc); // the other workers stop too
            return Err(e);
        }
    }
}

/// Blocks `off .. off + n` of cluster `phys`.
async fn chunk(
    s: &StoreShared,
    ch: &IoChannel,
    phys: u32,
    op: Op,
    off: u64,
    n: u64,
) -> Result<(), BdevError> {
    let dst = cluster_block(s, phys) + off;
    let bytes = (n * u64::from(s.block_size)) as usize;
    let status = match op {
        Op::WriteZeroes => mdio::io(ch, MdIo::WriteZeroes, &[], dst, n).await,
        Op::Unmap => mdio::io(ch, MdIo::Unmap, &[], dst, n).await,
        Op::WriteZeroBuf => {
            let iov = zero_iov(bytes)?;
            mdio::io(ch, MdIo::Write, &[iov], dst, n).await
        }
        Op::Copy(src) => {
            let mut buf = keel_reactor::pool::alloc(bytes)
                .map_err(|e| BdevError::NoMem(format!("lvol copy buffer: {e}")))?;
            // SAFETY: `buf` holds at least `bytes` bytes and outlives both awaited I/Os.
            let iov = unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), bytes) };
            let st = mdio::io(ch, MdIo::Read, &[iov], cluster_block(s, src) + off, n).await;
            if st != IoStatus::Success {
                return Err(io_err("copy-on-write read", st));
            }
            mdio::io(ch, MdIo::Write, &[iov], dst, n).await
        }
    };
    match status {
        IoStatus::Success => Ok(()),
        st => Err(io_err(op.what(), st)),
    }
}

/// An iovec over `bytes` (≤ [`FILL_CHUNK`]) of this core's zero buffer.
fn zero_iov(bytes: usize) -> Result<IoVec, BdevError> {
    ZEROES.with(|z| {
        let mut z = z.borrow_mut();
        if z.is_none() {
            let mut b = keel_reactor::pool::alloc(FILL_CHUNK as usize)
                .map_err(|e| BdevError::NoMem(format!("lvol zero buffer: {e}")))?;
            b.as_mut_slice().fill(0);
            *z = Some(b);
        }
        let b = z.as_mut().expect("just set");
        debug_assert!(bytes <= b.len());
        // SAFETY: the buffer lives as long as this core's thread and is never written after
        // being zeroed; writes only read it, so concurrent writes may share it.
        Ok(unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), bytes.min(b.len())) })
    })
}
