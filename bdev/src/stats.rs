//! Per-core I/O counters per bdev, summed across cores on request (`bdev_get_iostat`).

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
