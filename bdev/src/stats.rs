//! Per-core I/O counters per bdev, summed across cores on request (`bdev_get_iostat`).
//!
//! Each core keeps one [`CoreStats`] per bdev (in the per-core table, see `percore`), shared by
//! that core's channel: the completion path bumps plain counters (no atomics, no lock), and the
//! counters outlive the channel. Reading them is a control-path operation: one message per core.

use crate::histogram::Histogram;
use crate::{IoStatus, IoType};
use std::cell::UnsafeCell;
use std::sync::Arc;

/// I/O statistics of one bdev (SPDK's `bdev_get_iostat` fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Bytes read.
    pub bytes_read: u64,
    /// Read operations completed.
    pub num_read_ops: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Write operations completed.
    pub num_write_ops: u64,
    /// Bytes unmapped.
    pub bytes_unmapped: u64,
    /// Unmap operations completed.
    pub num_unmap_ops: u64,
    /// Write-zeroes operations completed.
    pub num_write_zeroes_ops: u64,
    /// Sum of read latencies, in reactor ticks.
    pub read_latency_ticks: u64,
    /// Sum of write latencies, in reactor ticks.
    pub write_latency_ticks: u64,
    /// Sum of unmap latencies, in reactor ticks.
    pub unmap_latency_ticks: u64,
    /// I/Os completed with an error status.
    pub num_io_errors: u64,
}

impl IoStats {
    /// Add `other` into `self` (wrapping, as counters do).
    pub fn accumulate(&mut self, other: &IoStats) {
        let IoStats {
            bytes_read,
            num_read_ops,
            bytes_written,
            num_write_ops,
            bytes_unmapped,
            num_unmap_ops,
            num_write_zeroes_ops,
            read_latency_ticks,
            write_latency_ticks,
            unmap_latency_ticks,
            num_io_errors,
        } = other;
        self.bytes_read = self.bytes_read.wrapping_add(*bytes_read);
        self.num_read_ops = self.num_read_ops.wrapping_add(*num_read_ops);
        self.bytes_written = self.bytes_written.wrapping_add(*bytes_written);
        self.num_write_ops = self.num_write_ops.wrapping_add(*num_write_ops);
        self.bytes_unmapped = self.bytes_unmapped.wrapping_add(*bytes_unmapped);
        self.num_unmap_ops = self.num_unmap_ops.wrapping_add(*num_unmap_ops);
        self.num_write_zeroes_ops = self
            .num_write_zeroes_ops
            .wrapping_add(*num_write_zeroes_ops);
        self.read_latency_ticks = self.read_latency_ticks.wrapping_add(*read_latency_ticks);
        self.write_latency_ticks = self.write_latency_ticks.wrapping_add(*write_latency_ticks);
        self.unmap_latency_ticks = self.unmap_latency_ticks.wrapping_add(*unmap_latency_ticks);
        self.num_io_errors = self.num_io_errors.wrapping_add(*num_io_errors);
    }
}

/// One core's counters for one bdev, and its latency histogram when enabled. `!Sync`: only its
/// core touches it.
#[derive(Default)]
pub(crate) struct CoreStats {
    counters: UnsafeCell<IoStats>,
    /// Allocated by `bdev_enable_histogram` (a message to this core), dropped by disabling.
    hist: UnsafeCell<Option<Box<Histogram>>>,
}

impl CoreStats {
    /// Account one completed I/O of `bytes` bytes that took `latency` ticks (and tally it in
    /// the histogram when one is enabled: every status, as SPDK does).
    #[inline]
    pub fn record(&self, io_type: IoType, status: IoStatus, bytes: u64, latency: u64) {
        // SAFETY: `CoreStats` is `!Sync` (UnsafeCell), so only this thread reaches it; the
        // reference lives within this statement, and `tally` cannot reach `self` again.
        if let Some(h) = unsafe { &mut *self.hist.get() } {
            h.tally(io_type, latency);
        }
        // SAFETY: as above; the reference lives within this function, which calls nothing that
        // could reach it again.
        let s = unsafe { &mut *self.counters.get() };
        if status != IoStatus::Success {
            s.num_io_errors = s.num_io_errors.wrapping_add(1);
            return;
        }
        match io_type {
            IoType::Read => {
                s.bytes_read = s.bytes_read.wrapping_add(bytes);
                s.num_read_ops = s.num_read_ops.wrapping_add(1);
                s.read_latency_ticks = s.read_latency_ticks.wrapping_add(latency);
            }
            IoType::Write => {
                s.bytes_written = s.bytes_written.wrapping_add(bytes);
                s.num_write_ops = s.num_write_ops.wrapping_add(1);
                s.write_latency_ticks = s.write_latency_ticks.wrapping_add(latency);
            }
            IoType::Unmap => {
                s.bytes_unmapped = s.bytes_unmapped.wrapping_add(bytes);
                s.num_unmap_ops = s.num_unmap_ops.wrapping_add(1);
                s.unmap_latency_ticks = s.unmap_latency_ticks.wrapping_add(latency);
            }
            IoType::WriteZeroes => s.num_write_zeroes_ops = s.num_write_zeroes_ops.wrapping_add(1),
            IoType::Flush | IoType::Reset => {}
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> IoStats {
        // SAFETY: as in `record`; the shared reference ends with the clone.
        unsafe { (*self.counters.get()).clone() }
    }

    /// Install (or with `None` remove) this core's histogram; hands back the old one (for the
    /// caller to drop). Control path, on this core, never inside `record`.
    pub fn set_histogram(&self, h: Option<Box<Histogram>>) -> Option<Box<Histogram>> {
        // SAFETY: as in `record`: this thread only, and `record` is not running (it calls
        // nothing that could get here).
        unsafe { std::mem::replace(&mut *self.hist.get(), h) }
    }

    /// A copy of this core's histogram, if enabled (control path).
    pub fn histogram(&self) -> Option<Histogram> {
        // SAFETY: as in `snapshot`.
        unsafe { (*self.hist.get()).as_deref().cloned() }
    }
}

/// Put a copy of `proto` (or, with `None`, no histogram) in every core's counters of bdev `id`
/// (one message per core; each core allocates its own copy). Without a running runtime, on
/// the calling thread.
pub(crate) async fn set_histograms(id: u64, proto: Option<Histogram>) {
    let cores = keel_reactor::cores();
    if cores.is_empty() {
        drop(crate::percore::stats_cell(id).set_histogram(proto.map(Box::new)));
        return;
    }
    let proto = Arc::new(proto);
    for core in cores {
        let proto = Arc::clone(&proto);
        let set = keel_reactor::call_on(core, move || {
            let h = (*proto).clone().map(Box::new);
            drop(crate::percore::stats_cell(id).set_histogram(h));
        });
        if let Err(e) = set.await {
            log::warn!("bdev histogram: core {core} did not answer: {e}");
        }
    }
}

/// Every core's histogram of bdev `id` merged (`None` when no core has one). Control path:
/// one message per core, each answering a copy.
pub(crate) async fn merged_histogram(id: u64) -> Option<Histogram> {
    let cores = keel_reactor::cores();
    if cores.is_empty() {
        return crate::percore::stats_cell(id).histogram();
    }
    let mut total: Option<Histogram> = None;
    for core in cores {
        let h = keel_reactor::call_on(core, move || crate::percore::stats_cell(id).histogram());
        match (h.await, total.as_mut()) {
            (Ok(Some(h)), None) => total = Some(h),
            (Ok(Some(h)), Some(t)) => {
                if !t.merge(&h) {
                    log::warn!("bdev histogram: core {core} has another layout, left out");
                }
            }
            (Ok(None), _) => {}
            (Err(e), _) => log::warn!("bdev histogram: core {core} did not answer: {e}"),
        }
    }
    total
}

/// Sum the counters of the bdevs `ids` over every core (one message per core). Without a
/// running runtime, reads the calling thread's counters.
pub(crate) async fn gather(ids: Vec<u64>) -> Vec<IoStats> {
    let mut total = vec![IoStats::default(); ids.len()];
    let cores = keel_reactor::cores();
    if cores.is_empty() {
        for (t, id) in total.iter_mut().zip(&ids) {
            t.accumulate(&crate::percore::stats_of(*id));
        }
        return total;
    }
    let ids: Arc<[u64]> = ids.into();
    for core in cores {
        let ids = Arc::clone(&ids);
        let per_core = keel_reactor::call_on(core, move || {
            ids.iter()
                .map(|&id| crate::percore::stats_of(id))
                .collect::<Vec<_>>()
        });
        match per_core.await {
            Ok(v) => total.iter_mut().zip(&v).for_each(|(t, s)| t.accumulate(s)),
            Err(e) => log::warn!("bdev iostat: core {core} did not answer: {e}"),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_by_type_and_status() {
        let c = CoreStats::default();
        c.record(IoType::Read, IoStatus::Success, 4096, 10);
        c.record(IoType::Read, IoStatus::Success, 512, 5);
        c.record(IoType::Write, IoStatus::Success, 8192, 7);
        c.record(IoType::Unmap, IoStatus::Success, 1 << 20, 3);
        c.record(IoType::WriteZeroes, IoStatus::Success, 4096, 3);
        c.record(IoType::Flush, IoStatus::Success, 0, 1);
        c.record(IoType::Write, IoStatus::IoError, 4096, 1);
        let s = c.snapshot();
        assert_eq!(
            (s.bytes_read, s.num_read_ops, s.read_latency_ticks),
            (4608, 2, 15)
        );
        assert_eq!(
            (s.bytes_written, s.num_write_ops, s.write_latency_ticks),
            (8192, 1, 7)
        );
        assert_eq!(
            (s.bytes_unmapped, s.num_unmap_ops, s.unmap_latency_ticks),
            (1 << 20, 1, 3)
        );
        assert_eq!(s.num_write_zeroes_ops, 1);
        assert_eq!(s.num_io_errors, 1);
    }

    #[test]
    fn accumulate_adds_every_field() {
        let a = IoStats {
            bytes_read: 1,
            num_read_ops: 2,
            bytes_written: 3,
            num_write_ops: 4,
            bytes_unmapped: 5,
            num_unmap_ops: 6,
            num_write_zeroes_ops: 7,
            read_latency_ticks: 8,
            write_latency_ticks: 9,
            unmap_latency_ticks: 10,
            num_io_errors: 11,
        };
        let mut t = a.clone();
        t.accumulate(&a);
        assert_eq!(t.bytes_read, 2);
        assert_eq!(t.num_io_errors, 22);
        assert_eq!(t.unmap_latency_ticks, 20);
        assert_eq!(t.num_write_zeroes_ops, 14);
    }
}
