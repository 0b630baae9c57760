//! Fixtures of the bdev-module and lvol integration tests: interrupt mode, pool buffers, opening
//! a bdev with a channel, a write-then-read round trip, a temporary file, a byte pattern.

use crate::io::{iov_dma as iov, one};
use keel_bdev::{BdevDesc, IoChannel, IoStatus};
use keel_reactor::pool::DmaBuf;

/// Run this binary's reactors in interrupt mode (call before anything else in every test).
pub fn use_interrupt_mode() {
    crate::reactors::configure("0x3", true);
}

/// A pool buffer (4 KiB aligned) of `len` bytes filled with `fill`.
pub fn dma(len: usize, fill: u8) -> DmaBuf {
    let mut b = keel_reactor::pool::alloc(len).expect("pool buffer");
    b.as_mut_slice().fill(fill);
    b
}

/// Open `name` read-write and take a channel on this core.
pub fn open_rw(name: &str) -> (BdevDesc, IoChannel) {
    let desc = keel_bdev::open(name, true, |_| {}).expect("open bdev");
    let ch = desc.get_io_channel().expect("io channel");
    (desc, ch)
}

/// Write `data` at block `lba` and read it back into a fresh pool buffer.
pub async fn write_then_read(
    ch: &IoChannel,
    lba: u64,
    data: &mut DmaBuf,
) -> (IoStatus, IoStatus, DmaBuf) {
    let bs = u64::from(ch.bdev().info().block_size);
    let blocks = data.len() as u64 / bs;
    let w = one(|cb, ctx| ch.write(&[iov(data)], lba, blocks, cb, ctx))
        .await
        .expect("submit write");
    let mut back = dma(data.len(), 0);
    let r = one(|cb, ctx| ch.read(&[iov(&mut back)], lba, blocks, cb, ctx))
        .await
        .expect("submit read");
    (w, r, back)
}

/// A file under /tmp removed on drop.
pub struct TempFile(pub String);

impl TempFile {
    /// Create `/tmp/keel-<tag>-<pid>` of `len` bytes (sparse).
    pub fn new(tag: &str, len: u64) -> TempFile {
        let path = format!("/tmp/keel-{tag}-{}", std::process::id());
        let f = std::fs::File::create(&path).expect("create temp file");
        f.set_len(len).expect("size temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A deterministic byte pattern for block `lba`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
