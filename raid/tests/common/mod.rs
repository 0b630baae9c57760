//! Shared harness of the raid integration tests: one two-core reactor runtime per test binary,
//! test bodies run as local tasks, async helpers to submit I/O, a reference model, and a test
//! bdev that records the buffer addresses it is given.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test
#![allow(dead_code)]

use keel_bdev::{
    BackendChannel, BdevBackend, BdevDesc, BdevError, BdevInfo, ConfigCall, IoChannel, IoRef,
    IoStatus, IoType, IoVec, Uuid,
};
use std::sync::{Arc, Mutex};

#[allow(unused_imports)] // each test binary uses its own subset
pub use keel_testkit::io::{iov, one_retrying as one};
#[allow(unused_imports)] // each test binary uses its own subset
pub use keel_testkit::reactors::{cores, run, run_on, yield_now};

/// Split `buf` into iovecs at the given cut points (bytes).
pub fn iovs_cut(buf: &mut [u8], cuts: &[usize]) -> Vec<IoVec> {
    let mut v = Vec::new();
    let mut at = 0;
    let base = buf.as_mut_ptr();
    for &c in cuts.iter().chain(std::iter::once(&buf.len())) {
        if c > at && c <= buf.len() {
            // SAFETY: a sub-range of `buf`, kept alive by the caller.
            v.push(unsafe { IoVec::from_raw_parts(base.add(at), c - at) });
            at = c;
        }
    }
    v
}

/// Open `name` read-write and take a channel on this core.
pub fn open_rw(name: &str) -> (BdevDesc, IoChannel) {
    let desc = keel_bdev::open(name, true, |_| {}).expect("open bdev");
    let ch = desc.get_io_channel().expect("io channel");
    (desc, ch)
}

/// Read `blocks` blocks at `lba` of `ch`.
pub async fn read(ch: &IoChannel, lba: u64, blocks: u64) -> (IoStatus, Vec<u8>) {
    let bs = ch.bdev().info().block_size as usize;
    let mut buf = vec![0u8; blocks as usize * bs];
    let v = [iov(&mut buf)];
    let s = one(|cb, ctx| ch.read(&v, lba, blocks, cb, ctx)).await;
    (s, buf)
}

/// Write `data` at `lba` of `ch` as the iovecs cut at `cuts`.
pub async fn write(ch: &IoChannel, lba: u64, data: &mut [u8], cuts: &[usize]) -> IoStatus {
    let bs = ch.bdev().info().block_size as usize;
    let blocks = (data.len() / bs) as u64;
    let v = iovs_cut(data, cuts);
    one(|cb, ctx| ch.write(&v, lba, blocks, cb, ctx)).await
}

/// Unmap `blocks` blocks at `lba` of `ch`.
pub async fn unmap(ch: &IoChannel, lba: u64, blocks: u64) -> IoStatus {
    one(|cb, ctx| ch.unmap(lba, blocks, cb, ctx)).await
}

/// Write zeroes to `blocks` blocks at `lba` of `ch`.
pub async fn write_zeroes(ch: &IoChannel, lba: u64, blocks: u64) -> IoStatus {
    one(|cb, ctx| ch.write_zeroes(lba, blocks, cb, ctx)).await
}

/// xorshift64*: deterministic test randomness.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

/// What a recording bdev saw: (type, iovec base address, length) per iovec.
pub type Seen = Arc<Mutex<Vec<(IoType, usize, usize)>>>;

/// A memory-backed bdev that records every iovec address it receives (unmap and write-zeroes
/// as one entry at address 0; both zero the blocks).
pub struct RecordingBdev {
    data: Arc<Mutex<Vec<u8>>>,
    pub seen: Seen,
    bs: usize,
}

struct RecordingChannel {
    data: Arc<Mutex<Vec<u8>>>,
    seen: Seen,
    bs: usize,
}

impl BackendChannel for RecordingChannel {
    fn submit(&mut self, io: IoRef) {
        let t = io.io_type();
        let mut off = io.offset_blocks() as usize * self.bs;
        let mut data = self.data.lock().unwrap();
        let mut seen = self.seen.lock().unwrap();
        if matches!(t, IoType::Unmap | IoType::WriteZeroes) {
            let len = io.num_blocks() as usize * self.bs;
            seen.push((t, 0, len));
            data[off..off + len].fill(0);
        }
        for v in io.iovs() {
            seen.push((t, v.base() as usize, v.len()));
            // SAFETY: the iovec is valid for the I/O's life (bdev layer contract).
            let s = unsafe { std::slice::from_raw_parts_mut(v.base(), v.len()) };
            match t {
                IoType::Read => s.copy_from_slice(&data[off..off + v.len()]),
                IoType::Write => data[off..off + v.len()].copy_from_slice(s),
                _ => {}
            }
            off += v.len();
        }
        drop((data, seen));
        io.complete(IoStatus::Success);
    }
}

impl BdevBackend for RecordingBdev {
    fn product_name(&self) -> &'static str {
        "Recording disk"
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read
                | IoType::Write
                | IoType::Flush
                | IoType::Reset
                | IoType::Unmap
                | IoType::WriteZeroes
        )
    }
    fn unmap_reads_zeroes(&self) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(RecordingChannel {
            data: Arc::clone(&self.data),
            seen: Arc::clone(&self.seen),
            bs: self.bs,
        }))
    }
    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        None
    }
}

/// Register a recording bdev; returns what it will see.
pub fn recording_bdev(name: &str, blocks: u64, bs: u32) -> Seen {
    let seen: Seen = Arc::default();
    let b = RecordingBdev {
        data: Arc::new(Mutex::new(vec![0u8; blocks as usize * bs as usize])),
        seen: Arc::clone(&seen),
        bs: bs as usize,
    };
    keel_bdev::register(
        BdevInfo {
            name: name.into(),
            aliases: Vec::new(),
            uuid: Uuid::new_random(),
            block_size: bs,
            num_blocks: blocks,
        },
        Arc::new(b),
    )
    .expect("register recording bdev");
    seen
}
