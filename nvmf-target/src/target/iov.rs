//! Copying between a request's iovecs and plain buffers (admin data, Connect data, DSM
//! ranges, Compare). The iovecs come from the transport, which guarantees they are valid for
//! their length while the request runs (`request.rs`).

use keel_bdev::IoVec;

/// Copy `src` into the iovecs starting at byte `offset` of their concatenation; returns the
/// bytes copied (less than `src.len()` if the iovecs are shorter).
pub(crate) fn copy_to(iovs: &[IoVec], mut offset: usize, src: &[u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        if done == src.len() {
            break;
        }
        if offset >= v.len {
            offset -= v.len;
            continue;
        }
        let n = (v.len - offset).min(src.len() - done);
        // SAFETY: the transport guarantees `v.base..v.base+v.len` is valid, writable and not
        // otherwise accessed while the request runs; `offset + n <= v.len`, and `src` is a
        // separate buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), v.base.add(offset), n) };
        done += n;
        offset = 0;
    }
    done
}

/// Copy from the iovecs, starting at byte `offset`, into `dst`; returns the bytes copied.
pub(crate) fn copy_from(iovs: &[IoVec], mut offset: usize, dst: &mut [u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        if done == dst.len() {
            break;
        }
        if offset >= v.len {
            offset -= v.len;
            continue;
        }
        let n = (v.len - offset).min(dst.len() - done);
        // SAFETY: as in `copy_to`, for reading; `dst` is a separate buffer.
        unsafe { std::ptr::copy_nonoverlapping(v.base.add(offset), dst.as_mut_ptr().add(done), n) };
        done += n;
        offset = 0;
    }
    done
}

/// Whether the iovecs' first `data.len()` bytes equal `data`.
pub(crate) fn equals(iovs: &[IoVec], data: &[u8]) -> bool {
    let mut off = 0;
    for v in iovs {
        if off == data.len() {
            break;
        }
        let n = v.len.min(data.len() - off);
        // SAFETY: as in `copy_from`; the slice lives only for this comparison.
        let s = unsafe { std::slice::from_raw_parts(v.base, n) };
        if s != &data[off..off + n] {
            return false;
        }
        off += n;
    }
    off == data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovs(bufs: &mut [Vec<u8>]) -> Vec<IoVec> {
        bufs.iter_mut()
            // SAFETY: the test's buffers outlive the iovecs.
            .map(|b| unsafe { IoVec::from_raw(b.as_mut_ptr(), b.len()) })
            .collect()
    }

    #[test]
    fn copies_across_iovec_boundaries() {
        let mut bufs = vec![vec![0u8; 3], vec![0u8; 2], vec![0u8; 4]];
        let v = iovs(&mut bufs);
        assert_eq!(copy_to(&v, 2, &[1, 2, 3, 4, 5]), 5);
        assert_eq!(bufs[0], [0, 0, 1]);
        assert_eq!(bufs[1], [2, 3]);
        assert_eq!(bufs[2], [4, 5, 0, 0]);
        let mut out = [0u8; 4];
        assert_eq!(copy_from(&v, 1, &mut out), 4);
        assert_eq!(out, [0, 1, 2, 3]);
        let mut big = [0u8; 20];
        assert_eq!(copy_from(&v, 0, &mut big), 9);
        assert_eq!(copy_to(&v, 8, &[9, 9]), 1);
        assert!(equals(&v, &[0, 0, 1, 2, 3, 4, 5]));
        assert!(!equals(&v, &[0, 0, 1, 2, 3, 4, 6]));
        assert!(!equals(&v, &[0; 12]));
    }
}
