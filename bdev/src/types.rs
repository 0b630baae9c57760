//! Plain types shared by consumers and modules.

/// Kinds of block I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read blocks into the iovecs.
    Read,
    /// Write blocks from the iovecs.
    Write,
    /// Make blocks read back as zeroes (no data buffer).
    WriteZeroes,
    /// Deallocate blocks (contents afterwards are unspecified unless the bdev says zeroes).
    Unmap,
    /// Make completed writes durable.
    Flush,
    /// Abort/flush everything in flight on the bdev (used by hosts after timeouts).
    Reset,
}

impl IoType {
    /// Every I/O type, for `supported_io_types` reporting.
    pub const ALL: [IoType; 6] = [
        IoType::Read,
        IoType::Write,
        IoType::WriteZeroes,
        IoType::Unmap,
        IoType::Flush,
        IoType::Reset,
    ];
    /// SPDK's name for the type (`read`, `write`, `write_zeroes`, `unmap`, `flush`, `reset`).
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Unmap => "unmap",
            IoType::Flush => "flush",
            IoType::Reset => "reset",
        }
    }
}

/// How an I/O ended. Transports map these to NVMe statuses. `repr(u8)` with `Success = 0`,
/// so a zeroed per-I/O context field of this type reads as success ([`crate::IoCtx`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IoStatus {
    /// Done.
    Success = 0,
    /// The device failed the I/O (NVMe: internal/data transfer error or media error).
    IoError,
    /// The I/O was aborted (reset, hot-remove, channel teardown).
    Aborted,
    /// A thin-provisioned device has no space left (NVMe: capacity exceeded).
    NoSpace,
    /// Compare failed (NVMe: compare failure).
    Miscompare,
}

/// One scatter-gather element. Same layout as `struct iovec`, so it can go straight to the kernel.
///
/// An `IoVec` is a raw pointer with a promise: whoever builds one vouches that the memory stays
/// valid (and, for reads, exclusively writable by the I/O) until the I/O that carries it
/// completes. The fields are private so only [`IoVec::from_raw_parts`] (`unsafe`: the caller
/// makes that promise) or a constructor whose argument proves it ([`IoVec::from_static`]) can
/// build one; the safe `IoChannel::read`/`write` rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct IoVec {
    /// Start address. Crate-visible so the layer (and [`crate::IovCursor`]) can build views of
    /// iovecs it was given; no other crate can write it.
    pub(crate) base: *mut u8,
    /// Length in bytes.
    pub(crate) len: usize,
}

impl IoVec {
    /// Build an iovec from raw parts.
    ///
    /// # Safety
    /// `base..base+len` must be one allocation valid for reads and writes until every I/O that
    /// carries this iovec (or a piece of it) completes, and must not be accessed by anyone else
    /// meanwhile (by anyone at all for an I/O that writes into it, a read; only read by others
    /// for an I/O that reads from it, a write).
    #[inline]
    pub const unsafe fn from_raw_parts(base: *mut u8, len: usize) -> IoVec {
        IoVec { base, len }
    }
    /// An iovec over a buffer that lives, unshared, for the rest of the program (e.g. from
    /// `Box::leak`): the exclusive `'static` borrow is the validity promise.
    ///
    /// (A pool buffer cannot have a safe constructor like this one: an `IoVec` is `Copy` and
    /// carries no lifetime, so the buffer could go back to the pool, and to another user,
    /// while an I/O still writes through the iovec.)
    #[inline]
    pub fn from_static(buf: &'static mut [u8]) -> IoVec {
        IoVec {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }
    /// An empty iovec (for initialising arrays).
    pub const EMPTY: IoVec = IoVec {
        base: std::ptr::null_mut(),
        len: 0,
    };
    /// Start address.
    #[inline]
    pub const fn base(&self) -> *mut u8 {
        self.base
    }
    /// Length in bytes.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }
    /// Whether the iovec has no bytes.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes `off..off + len` of this iovec, as valid as it is (`None` when out of range).
    #[inline]
    pub fn sub(&self, off: usize, len: usize) -> Option<IoVec> {
        let end = off.checked_add(len)?;
        (end <= self.len).then(|| IoVec {
            base: self.base.wrapping_add(off),
            len,
        })
    }
}

/// Most iovecs one I/O may carry (stored inline in the descriptor: no allocation).
pub const MAX_IOVS: usize = 32;

/// Why an I/O could not be submitted (the callback is then NOT called).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The channel's descriptor pool is empty: retry after one of its I/Os completes
    /// ([`crate::IoChannel::queue_io_wait`]).
    #[error("no free I/O descriptor on this channel")]
    NoDescriptor,
    /// offset + length beyond the end of the bdev, or zero blocks.
    #[error("I/O range beyond the end of the bdev")]
    OutOfRange,
    /// The bdev does not support this I/O type.
    #[error("I/O type not supported by this bdev")]
    Unsupported,
    /// More than [`MAX_IOVS`] iovecs, or iovecs shorter than the blocks named.
    #[error("bad iovec list")]
    BadIovecs,
    /// The bdev is being removed; no new I/O is accepted.
    #[error("bdev is being removed")]
    Removed,
}

/// Control-path errors (open, claim, create, delete). `errno()` gives the value SPDK answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BdevError {
    /// No bdev by that name or alias.
    #[error("bdev {0} not found")]
    NotFound(String),
    /// A bdev (or alias) by that name exists.
    #[error("bdev name {0} already exists")]
    Exists(String),
    /// Another module claimed the bdev.
    #[error("bdev {name} is already claimed by {by}")]
    Claimed {
        /// The bdev.
        name: String,
        /// The module that holds the claim.
        by: String,
    },
    /// A parameter is invalid (the message says which and why).
    #[error("{0}")]
    Invalid(String),
    /// An OS call failed.
    #[error("{context}: {message}")]
    Os {
        /// What was being done.
        context: String,
        /// The OS's description of the error.
        message: String,
        /// The errno value.
        errno: i32,
    },
    /// Out of memory or other resources.
    #[error("{0}")]
    NoMem(String),
}

impl BdevError {
    /// The negative errno SPDK answers for this error in JSON-RPC.
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::NotFound(_) => -libc::ENODEV,
            BdevError::Exists(_) => -libc::EEXIST,
            BdevError::Claimed { .. } => -libc::EPERM,
            BdevError::Invalid(_) => -libc::EINVAL,
            BdevError::Os { errno, .. } => -errno.abs(),
            BdevError::NoMem(_) => -libc::ENOMEM,
        }
    }
}

/// A 128-bit UUID, printed and parsed in the usual 8-4-4-4-12 hex form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random (version 4) UUID from the OS's random source.
    pub fn new_random() -> Uuid {
        let mut b = [0u8; 16];
        // SAFETY: getrandom writes at most b.len() bytes into the valid buffer `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        assert_eq!(n, 16, "getrandom failed");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (case-insensitive).
    pub fn parse(s: &str) -> Option<Uuid> {
        let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        let dashes_ok = s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
        if hex.len() != 32 || !dashes_ok {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Uuid(out))
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uuid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovec_accessors_and_sub_ranges() {
        let v = IoVec::from_static(Box::leak(vec![0u8; 16].into_boxed_slice()));
        assert_eq!(v.len(), 16);
        assert!(!v.is_empty() && IoVec::EMPTY.is_empty());
        let s = v.sub(4, 12).unwrap();
        assert_eq!((s.base(), s.len()), (v.base().wrapping_add(4), 12));
        assert_eq!(v.sub(4, 13), None);
        assert_eq!(v.sub(usize::MAX, 2), None);
        assert_eq!(v.sub(16, 0).map(|s| s.len()), Some(0));
    }

    #[test]
    fn uuid_round_trips_and_rejects_garbage() {
        let u = Uuid::new_random();
        let s = u.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(Uuid::parse(&s), Some(u));
        assert_eq!(Uuid::parse(&s.to_uppercase()), Some(u));
        assert_eq!(Uuid::parse("not-a-uuid"), None);
        assert_eq!(Uuid::parse("0123456789abcdef0123456789abcdef0123"), None);
        assert_eq!(u.0[6] >> 4, 4, "version 4");
    }
}
