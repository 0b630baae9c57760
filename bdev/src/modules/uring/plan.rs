//! Pure per-I/O decisions of the uring channel (HOT PATH, no allocation): whether an I/O may
//! use the `O_DIRECT` descriptor, and which part of a read/write to issue next.

use super::file::DioAlign;
use crate::iov::IovCursor;
use crate::IoVec;

/// Whether a transfer of `len` bytes at byte `offset` through `iovs` meets the direct-I/O
/// alignment: offset and every segment length (as far as the transfer reaches) multiples of
/// `align.offset`, every buffer address a multiple of `align.mem`.
pub(crate) fn dio_eligible(iovs: &[IoVec], offset: u64, len: u64, align: DioAlign) -> bool {
    let off_mask = u64::from(align.offset) - 1;
    let mem_mask = align.mem as usize - 1;
    if offset & off_mask != 0 || len & off_mask != 0 {
        return false;
    }
    let mut left = len;
    for iov in iovs {
        if left == 0 {
            break;
        }
        let seg = (iov.len as u64).min(left);
        if (iov.base as usize) & mem_mask != 0 || seg & off_mask != 0 {
            return false;
        }
        left -= seg;
    }
    left == 0
}

/// The next piece of a read/write to hand to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `count` whole iovecs starting at index `first` (readv/writev).
    Vectored { first: usize, count: usize },
    /// One contiguous buffer (a partly done iovec, or one longer than what is left).
    Single { base: *mut u8, len: usize },
}

/// What to issue after `done` of `len` bytes moved: whole iovecs when the position is at an
/// iovec boundary and at least one fits in what is left, else a single buffer. `None` when
/// nothing is left or the iovecs are too short.
pub(crate) fn next_step(iovs: &[IoVec], done: u64, len: u64) -> Option<Step> {
    if done >= len {
        return None;
    }
    let left = len - done;
    let c = IovCursor::at(iovs, usize::try_from(done).ok()?);
    let cur = c.peek()?;
    let l = cur.len as u64;
    if !c.at_boundary() || l > left {
        return Some(Step::Single {
            base: cur.base,
            len: l.min(left) as usize,
        });
    }
    let mut count = 0;
    let mut covered = 0u64;
    for next in c.rest() {
        let nl = next.len as u64;
        if covered + nl > left {
            break;
        }
        covered += nl;
        count += 1;
        if covered == left {
            break;
        }
    }
    Some(Step::Vectored {
        first: c.index(),
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(base: usize, len: usize) -> IoVec {
        IoVec {
            base: base as *mut u8,
            len,
        }
    }

    const A: DioAlign = DioAlign {
        mem: 512,
        offset: 4096,
    };

    #[test]
    fn dio_needs_every_segment_aligned() {
        let aligned = [iov(0x10000, 4096), iov(0x20000, 8192)];
        assert!(dio_eligible(&aligned, 0, 12288, A));
        assert!(
            dio_eligible(&aligned, 8192, 4096, A),
            "only the part transferred counts"
        );
        assert!(!dio_eligible(&aligned, 512, 12288, A), "offset");
        assert!(
            !dio_eligible(&[iov(0x10000, 4096), iov(0x20100, 8192)], 0, 12288, A),
            "address"
        );
        assert!(dio_eligible(
            &[iov(0x10000, 4096), iov(0x20200, 8192)],
            0,
            12288,
            A
        ));
        assert!(
            !dio_eligible(&[iov(0x10000, 2048), iov(0x20000, 10240)], 0, 12288, A),
            "length"
        );
        assert!(
            !dio_eligible(&[iov(0x10000, 4096)], 0, 8192, A),
            "iovecs too short"
        );
        assert!(!dio_eligible(&aligned, 0, 1024, A), "transfer length");
    }

    #[test]
    fn whole_iovecs_go_vectored() {
        let v = [iov(0x1000, 512), iov(0x2000, 1024), iov(0x3000, 512)];
        assert_eq!(
            next_step(&v, 0, 2048),
            Some(Step::Vectored { first: 0, count: 3 })
        );
        assert_eq!(
            next_step(&v, 512, 2048),
            Some(Step::Vectored { first: 1, count: 2 })
        );
        assert_eq!(
            next_step(&v, 0, 1536),
            Some(Step::Vectored { first: 0, count: 2 })
        );
        assert_eq!(next_step(&v, 2048, 2048), None);
    }

    #[test]
    fn partial_progress_and_long_iovecs_go_single() {
        let v = [iov(0x1000, 512), iov(0x2000, 1024), iov(0x3000, 512)];
        assert_eq!(
            next_step(&v, 700, 2048),
            Some(Step::Single {
                base: 0x20bc as *mut u8,
                len: 836
            })
        );
        // The transfer ends inside the second iovec: the whole first one, then a single piece.
        assert_eq!(
            next_step(&v, 0, 1024),
            Some(Step::Vectored { first: 0, count: 1 })
        );
        assert_eq!(
            next_step(&v, 512, 1024),
            Some(Step::Single {
                base: 0x2000 as *mut u8,
                len: 512
            })
        );
        // A first iovec longer than the transfer.
        assert_eq!(
            next_step(&[iov(0x8000, 65536)], 0, 4096),
            Some(Step::Single {
                base: 0x8000 as *mut u8,
                len: 4096
            })
        );
        assert_eq!(
            next_step(&v, 0, 4096).map(|_| ()),
            Some(()),
            "short list still makes progress"
        );
        assert_eq!(
            next_step(&v, 2048, 4096),
            None,
            "nothing left to describe the rest"
        );
    }

    #[test]
    fn steps_cover_the_transfer_exactly() {
        // Walk a transfer with arbitrary short completions and check the bytes add up.
        let v = [iov(0x1000, 4096), iov(0x3000, 4096), iov(0x5000, 8192)];
        let len = 14336;
        let mut done = 0u64;
        let mut steps = 0;
        while let Some(s) = next_step(&v, done, len) {
            let n = match s {
                Step::Vectored { first, count } => {
                    v[first..first + count].iter().map(|i| i.len).sum()
                }
                Step::Single { len, .. } => len,
            } as u64;
            assert!(n > 0 && done + n <= len);
            done += n.min(3000); // the kernel moved at most 3000 bytes
            steps += 1;
        }
        assert_eq!(done, len);
        assert!(steps >= 5);
    }
}
