//! Injected-error state of one error bdev, shared by all cores without a lock: per I/O type,
//! one atomic word packs (error kind, corrupt value, remaining count); an I/O consumes one count
//! with a compare-and-swap loop, so exactly `num` I/Os see the error however many cores race.

use crate::iov::IovCursor;
use crate::{IoStatus, IoType, IoVec};
use std::sync::atomic::{AtomicU64, Ordering};

/// What an injected error does to the I/Os it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Complete with [`crate::IoStatus::IoError`] without touching the base.
    Failure,
    /// Never complete, until the injection is cleared (then the I/O goes to the base) or the
    /// bdev is reset (then it completes as aborted).
    Pending,
    /// Flip bits of the data: a write is corrupted before it goes to the base, a read after
    /// the base returned it (byte `corrupt_offset` of the I/O's data XOR `corrupt_value`).
    CorruptData,
    /// SPDK's `nvme_failure`: complete with this status without touching the base, chosen so
    /// that the NVMe-oF target answers the (SCT, SC) the user asked for ([`ErrorKind::nvme`]).
    Complete(IoStatus),
}

/// The NVMe statuses (SCT, SC, what it is) a bdev outcome carries to an NVMe-oF host, and for
/// which I/O types (None: all). Keel's bdev layer completes an I/O with one of a few outcomes
/// ([`IoStatus`]), not an arbitrary NVMe status; the target maps them as listed here (see
/// `keel_nvmf`'s `status_from_io` (target/io.rs), which a test there checks against this
/// table).
pub const NVME_STATUSES: [(u8, u8, &str, IoStatus, Option<IoType>); 6] = [
    (
        0x0,
        0x07,
        "Command Abort Requested",
        IoStatus::Aborted,
        None,
    ),
    (0x0, 0x81, "Capacity Exceeded", IoStatus::NoSpace, None),
    (0x2, 0x85, "Compare Failure", IoStatus::Miscompare, None),
    (
        0x2,
        0x81,
        "Unrecovered Read Error",
        IoStatus::IoError,
        Some(IoType::Read),
    ),
    (
        0x2,
        0x80,
        "Write Fault",
        IoStatus::IoError,
        Some(IoType::Write),
    ),
    (
        0x0,
        0x06,
        "Internal Error",
        IoStatus::IoError,
        Some(IoType::Flush),
    ),
];

impl ErrorKind {
    const ALL: [ErrorKind; 3] = [
        ErrorKind::Failure,
        ErrorKind::Pending,
        ErrorKind::CorruptData,
    ];
    const COMPLETE: [IoStatus; 4] = [
        IoStatus::IoError,
        IoStatus::Aborted,
        IoStatus::NoSpace,
        IoStatus::Miscompare,
    ];

    /// SPDK's `error_type` name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Failure => "failure",
            ErrorKind::Pending => "pending",
            ErrorKind::CorruptData => "corrupt_data",
            ErrorKind::Complete(_) => "nvme_failure",
        }
    }

    /// SPDK's `nvme_failure` with `nvme_sct`/`nvme_sc` for I/Os of `target`: the outcome the
    /// host sees as exactly that status, or why there is none (the statuses Keel can give).
    pub fn nvme(sct: u8, sc: u8, target: InjectTarget) -> Result<ErrorKind, String> {
        let types: &[IoType] = match target {
            InjectTarget::Io(t) => &[t][..],
            InjectTarget::All | InjectTarget::Clear => &INJECT_TYPES[..],
        };
        // Internal Error is what a failed flush, unmap or write zeroes carries.
        let applies = |only: Option<IoType>, t: IoType| match only {
            None => true,
            Some(IoType::Flush) => !matches!(t, IoType::Read | IoType::Write),
            Some(o) => o == t,
        };
        for (s, c, _, status, only) in NVME_STATUSES {
            if (s, c) == (sct, sc) && types.iter().all(|&t| applies(only, t)) {
                return Ok(ErrorKind::Complete(status));
            }
        }
        let can: Vec<String> = NVME_STATUSES
            .iter()
            .filter(|(.., only)| types.iter().all(|&t| applies(*only, t)))
            .map(|(s, c, what, ..)| format!("{s}/0x{c:02x} ({what})"))
            .collect();
        Err(format!(
            "nvme_sct={sct} nvme_sc={sc} is not supported for io_type {}: Keel's bdev layer \
             completes an I/O with one of a few outcomes, not an arbitrary NVMe status; for \
             this io_type it can give sct/sc {}",
            match target {
                InjectTarget::Io(t) => t.name(),
                InjectTarget::All => "all",
                InjectTarget::Clear => "clear",
            },
            can.join(", ")
        ))
    }

    /// Parse an `error_type`; SPDK's `nomem` has no Keel equivalent (there is no NOMEM status)
    /// and is refused.
    pub fn parse(s: &str) -> Result<ErrorKind, String> {
        if let Some(k) = ErrorKind::ALL.into_iter().find(|k| k.name() == s) {
            return Ok(k);
        }
        Err(match s {
            "nomem" => {
                "error_type nomem is not supported: Keel has no NOMEM completion status".to_string()
            }
            _ => format!(
                "invalid error_type {s:?}: expected failure, nvme_failure, pending or corrupt_data"
            ),
        })
    }

    fn code(self) -> u64 {
        match self {
            ErrorKind::Failure => 1,
            ErrorKind::Pending => 2,
            ErrorKind::CorruptData => 3,
            ErrorKind::Complete(s) => {
                4 + ErrorKind::COMPLETE
                    .iter()
                    .position(|&c| c == s)
                    .expect("Complete carries a failure status") as u64
            }
        }
    }

    fn from_code(c: u64) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .chain(ErrorKind::COMPLETE.map(ErrorKind::Complete))
            .find(|k| k.code() == c)
    }
}

/// Which I/O types an injection applies to (`io_type` of `bdev_error_inject_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectTarget {
    /// One I/O type (read, write, unmap, flush or write_zeroes).
    Io(IoType),
    /// All of them.
    All,
    /// Remove every injection and release pending I/Os.
    Clear,
}

impl InjectTarget {
    /// Parse an `io_type`.
    pub fn parse(s: &str) -> Result<InjectTarget, String> {
        match s {
            "all" => Ok(InjectTarget::All),
            "clear" => Ok(InjectTarget::Clear),
            _ => INJECT_TYPES
                .into_iter()
                .find(|t| t.name() == s)
                .map(InjectTarget::Io)
                .ok_or_else(|| {
                    format!(
                        "invalid io_type {s:?}: expected read, write, unmap, flush, \
                         write_zeroes, all or clear"
                    )
                }),
        }
    }
}

/// The I/O types errors can be injected into (resets never fail).
pub(crate) const INJECT_TYPES: [IoType; 5] = [
    IoType::Read,
    IoType::Write,
    IoType::Unmap,
    IoType::Flush,
    IoType::WriteZeroes,
];

fn type_index(io_type: IoType) -> Option<usize> {
    INJECT_TYPES.iter().position(|&t| t == io_type)
}

/// One injection hit by an I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) kind: ErrorKind,
    pub(crate) corrupt_offset: u64,
    pub(crate) corrupt_value: u8,
}

const NUM_MASK: u64 = 0xffff_ffff;

fn pack(kind: ErrorKind, value: u8, num: u32) -> u64 {
    (kind.code() << 40) | (u64::from(value) << 32) | u64::from(num)
}

/// The injection armed for one I/O type.
#[derive(Debug, Default)]
struct Slot {
    /// bits 0..32 remaining count, 32..40 corrupt value, 40..48 kind code.
    state: AtomicU64,
    corrupt_offset: AtomicU64,
}

impl Slot {
    fn arm(&self, kind: ErrorKind, num: u32, corrupt_offset: u64, corrupt_value: u8) {
        self.corrupt_offset.store(corrupt_offset, Ordering::Relaxed);
        self.state
            .store(pack(kind, corrupt_value, num), Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.state.store(0, Ordering::SeqCst);
    }

    fn take(&self) -> Option<Hit> {
        let prev = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::Acquire, |s| {
                (s & NUM_MASK != 0).then(|| s - 1)
            })
            .ok()?;
        Some(Hit {
            kind: ErrorKind::from_code(prev >> 40)?,
            corrupt_offset: self.corrupt_offset.load(Ordering::Relaxed),
            corrupt_value: (prev >> 32) as u8,
        })
    }

    fn remaining(&self) -> (Option<ErrorKind>, u32) {
        let s = self.state.load(Ordering::Acquire);
        (ErrorKind::from_code(s >> 40), (s & NUM_MASK) as u32)
    }
}

/// Injection state of one error bdev, shared by its channels.
#[derive(Debug, Default)]
pub(crate) struct Injections {
    slots: [Slot; 5],
    /// Bumped by `clear`: channels release the pending I/Os they parked before it.
    clear_gen: AtomicU64,
    /// Bumped by each reset: channels abort the pending I/Os they parked before it.
    reset_gen: AtomicU64,
}

impl Injections {
    /// Arm `kind` for the next `num` I/Os of `target` (replacing what was armed), or clear.
    pub(crate) fn inject(
        &self,
        target: InjectTarget,
        kind: ErrorKind,
        num: u32,
        corrupt_offset: u64,
        corrupt_value: u8,
    ) {
        match target {
            InjectTarget::Io(t) => {
                if let Some(i) = type_index(t) {
                    self.slots[i].arm(kind, num, corrupt_offset, corrupt_value);
                }
            }
            InjectTarget::All => {
                for s in &self.slots {
                    s.arm(kind, num, corrupt_offset, corrupt_value);
                }
            }
            InjectTarget::Clear => self.clear(),
        }
    }

    /// Remove every injection and release pending I/Os.
    pub(crate) fn clear(&self) {
        for s in &self.slots {
            s.disarm();
        }
        self.clear_gen.fetch_add(1, Ordering::SeqCst);
    }

    /// Note a reset: pending I/Os parked before it are aborted.
    pub(crate) fn bump_reset(&self) -> u64 {
        self.reset_gen.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Current (clear, reset) generations. Read them BEFORE [`Injections::take`]: an I/O
    /// parked as pending records them, and a clear or reset after that releases it.
    pub(crate) fn generations(&self) -> (u64, u64) {
        (
            self.clear_gen.load(Ordering::SeqCst),
            self.reset_gen.load(Ordering::SeqCst),
        )
    }

    /// HOT PATH: consume one injected error for an I/O of `io_type`, if one is armed.
    pub(crate) fn take(&self, io_type: IoType) -> Option<Hit> {
        self.slots[type_index(io_type)?].take()
    }

    /// The kind armed for `io_type` and how many I/Os it will still hit.
    pub(crate) fn remaining(&self, io_type: IoType) -> (Option<ErrorKind>, u32) {
        type_index(io_type).map_or((None, 0), |i| self.slots[i].remaining())
    }
}

/// XOR byte `offset` of the first `len` bytes of data described by `iovs` with `value`
/// (nothing when `offset` is past the data).
///
/// # Safety
/// Every iovec must describe memory valid for reads and writes, not accessed by anyone else
/// meanwhile (true for the buffers of an I/O in flight in this module).
pub(crate) unsafe fn corrupt_iovs(iovs: &[IoVec], len: u64, offset: u64, value: u8) {
    if offset >= len {
        return;
    }
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    let mut c = IovCursor::new(iovs);
    if c.advance(off) == off {
        if let Some(p) = c.peek() {
            // SAFETY: `p` starts inside an iovec (a cursor piece is never empty) the caller
            // guarantees valid and ours.
            unsafe { *p.base ^= value };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn names_parse() {
        assert_eq!(ErrorKind::parse("failure"), Ok(ErrorKind::Failure));
        assert_eq!(ErrorKind::parse("pending"), Ok(ErrorKind::Pending));
        assert_eq!(ErrorKind::parse("corrupt_data"), Ok(ErrorKind::CorruptData));
        assert!(ErrorKind::parse("nomem")
            .unwrap_err()
            .contains("not supported"));
        assert!(ErrorKind::parse("boom").unwrap_err().contains("error_type"));
        assert_eq!(
            InjectTarget::parse("read"),
            Ok(InjectTarget::Io(IoType::Read))
        );
        assert_eq!(
            InjectTarget::parse("write_zeroes"),
            Ok(InjectTarget::Io(IoType::WriteZeroes))
        );
        assert_eq!(InjectTarget::parse("all"), Ok(InjectTarget::All));
        assert_eq!(InjectTarget::parse("clear"), Ok(InjectTarget::Clear));
        assert!(
            InjectTarget::parse("reset").is_err(),
            "resets cannot be failed"
        );
    }

    #[test]
    fn exactly_num_ios_are_hit() {
        let inj = Injections::default();
        assert_eq!(inj.take(IoType::Read), None);
        inj.inject(InjectTarget::Io(IoType::Read), ErrorKind::Failure, 3, 0, 0);
        assert_eq!(inj.remaining(IoType::Read), (Some(ErrorKind::Failure), 3));
        assert_eq!(inj.take(IoType::Write), None, "other types unaffected");
        for _ in 0..3 {
            assert_eq!(
                inj.take(IoType::Read).map(|h| h.kind),
                Some(ErrorKind::Failure)
            );
        }
        assert_eq!(inj.take(IoType::Read), None);
        assert_eq!(inj.remaining(IoType::Read).1, 0);
        assert_eq!(inj.take(IoType::Reset), None);
    }

    #[test]
    fn all_and_clear() {
        let inj = Injections::default();
        inj.inject(InjectTarget::All, ErrorKind::CorruptData, 2, 77, 0x5a);
        for t in INJECT_TYPES {
            let hit = inj.take(t).unwrap();
            assert_eq!(
                (hit.kind, hit.corrupt_offset, hit.corrupt_value),
                (ErrorKind::CorruptData, 77, 0x5a)
            );
        }
        let (gen_before, _) = inj.generations();
        inj.inject(InjectTarget::Clear, ErrorKind::Failure, 1, 0, 0);
        for t in INJECT_TYPES {
            assert_eq!(inj.take(t), None);
        }
        assert_eq!(inj.generations().0, gen_before + 1);
        assert_eq!(inj.bump_reset(), 1);
        assert_eq!(inj.generations().1, 1);
    }

    #[test]
    fn racing_cores_consume_exactly_num() {
        let inj = Arc::new(Injections::default());
        inj.inject(
            InjectTarget::Io(IoType::Write),
            ErrorKind::Pending,
            1000,
            0,
            0,
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let inj = Arc::clone(&inj);
                std::thread::spawn(move || {
                    (0..5000)
                        .filter(|_| inj.take(IoType::Write).is_some())
                        .count()
                })
            })
            .collect();
        let hits: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(hits, 1000);
    }

    #[test]
    fn corruption_flips_one_byte_within_the_data() {
        let mut a = vec![0u8; 8];
        let mut b = vec![0u8; 8];
        // SAFETY: the vectors outlive the iovecs and nobody else touches them.
        let iovs = unsafe {
            [
                IoVec::from_raw_parts(a.as_mut_ptr(), a.len()),
                IoVec::from_raw_parts(b.as_mut_ptr(), b.len()),
            ]
        };
        // SAFETY: as above.
        unsafe { corrupt_iovs(&iovs, 16, 10, 0xff) };
        assert_eq!(b[2], 0xff);
        // SAFETY: as above.
        unsafe { corrupt_iovs(&iovs, 16, 0, 0x01) };
        assert_eq!(a[0], 0x01);
        // Past the I/O's data length (12 bytes here): untouched.
        // SAFETY: as above.
        unsafe { corrupt_iovs(&iovs, 12, 13, 0xff) };
        assert_eq!(b[5], 0);
        assert_eq!(a.iter().chain(b.iter()).filter(|&&x| x != 0).count(), 2);
    }
}
