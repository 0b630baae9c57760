//! [`IovCursor`]: the one way to walk a scatter-gather list ([`IoVec`]s) by bytes — skip to an
//! offset, split off views of a byte range (nothing copied), visit the contiguous pieces of a
//! range, and copy/zero/compare through the list. HOT PATH safe: no allocation, no syscall.
//!
//! Moving the cursor and building views is safe (pointer arithmetic only, `wrapping_add`; a view
//! of part of an iovec is as valid as the iovec). Reading or writing the memory is `unsafe`: the
//! caller vouches that the iovecs are valid for the access and not used by anyone else meanwhile
//! (true of an I/O's buffers while the layer holding the I/O runs).

use crate::IoVec;

/// A byte position in an iovec list. `Copy`: save a position by copying the cursor.
///
/// Invariant: the cursor is either at the end (`idx == iovs.len()`) or inside a non-empty iovec
/// (`off < iovs[idx].len`); empty iovecs are stepped over.
#[derive(Debug, Clone, Copy)]
pub struct IovCursor<'a> {
    iovs: &'a [IoVec],
    idx: usize,
    off: usize,
}

impl<'a> IovCursor<'a> {
    /// A cursor at the first byte of `iovs`.
    #[inline]
    pub fn new(iovs: &'a [IoVec]) -> IovCursor<'a> {
        let mut c = IovCursor {
            iovs,
            idx: 0,
            off: 0,
        };
        c.skip_empty();
        c
    }

    /// A cursor `offset` bytes into `iovs` (at the end when the list is shorter).
    #[inline]
    pub fn at(iovs: &'a [IoVec], offset: usize) -> IovCursor<'a> {
        let mut c = IovCursor::new(iovs);
        c.advance(offset);
        c
    }

    #[inline]
    fn skip_empty(&mut self) {
        while self.idx < self.iovs.len() && self.off == self.iovs[self.idx].len {
            self.idx += 1;
            self.off = 0;
        }
    }

    /// Move forward `n` bytes; returns how many it moved (less than `n` only at the end).
    #[inline]
    pub fn advance(&mut self, n: usize) -> usize {
        let mut left = n;
        while left > 0 && self.idx < self.iovs.len() {
            let room = self.iovs[self.idx].len - self.off;
            if left < room {
                self.off += left;
                return n;
            }
            left -= room;
            self.idx += 1;
            self.off = 0;
            self.skip_empty();
        }
        n - left
    }

    /// Whether no byte is left.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.idx == self.iovs.len()
    }

    /// Whether the cursor is at the start of an iovec (or at the end).
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.off == 0
    }

    /// Index of the iovec the cursor is in (`iovs.len()` at the end).
    #[inline]
    pub fn index(&self) -> usize {
        self.idx
    }

    /// Bytes left from the cursor to the end of the list.
    pub fn remaining(&self) -> usize {
        self.iovs[self.idx.min(self.iovs.len())..]
            .iter()
            .map(|v| v.len)
            .sum::<usize>()
            - self.off
    }

    /// The iovecs from the one the cursor is in to the end of the list, whole (the first may
    /// be partly behind the cursor unless [`IovCursor::at_boundary`]).
    #[inline]
    pub fn rest(&self) -> &'a [IoVec] {
        &self.iovs[self.idx..]
    }

    /// The rest of the current iovec, without moving (`None` at the end).
    #[inline]
    pub fn peek(&self) -> Option<IoVec> {
        let v = self.iovs.get(self.idx)?;
        Some(IoVec {
            base: v.base.wrapping_add(self.off),
            len: v.len - self.off,
        })
    }

    /// The next contiguous piece of at most `max` bytes, moving past it (`None` at the end or
    /// when `max` is 0).
    #[inline]
    pub fn next_piece(&mut self, max: usize) -> Option<IoVec> {
        if max == 0 {
            return None;
        }
        let mut p = self.peek()?;
        p.len = p.len.min(max);
        self.advance(p.len);
        Some(p)
    }

    /// The contiguous pieces covering the next `len` bytes (fewer bytes when the list ends),
    /// moving past them as they are yielded.
    #[inline]
    pub fn pieces(&mut self, len: usize) -> Pieces<'_, 'a> {
        Pieces {
            cur: self,
            left: len,
        }
    }

    /// Where the next `len` bytes start, if one iovec holds them all (nothing moves).
    #[inline]
    pub fn contiguous(&self, len: usize) -> Option<*mut u8> {
        self.peek().filter(|p| p.len >= len).map(|p| p.base)
    }

    /// Fill `out` with views of the next `len` bytes (pointers into the same memory, nothing
    /// copied) and move past them. Stops early when the list or `out` ends. Returns
    /// `(views written, bytes covered)`: the range was covered when the bytes equal `len`.
    #[inline]
    pub fn split_into(&mut self, len: usize, out: &mut [IoVec]) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        while n < out.len() {
            let Some(p) = self.next_piece(len - bytes) else {
                break;
            };
            out[n] = p;
            n += 1;
            bytes += p.len;
        }
        (n, bytes)
    }

    /// Copy `src` into the iovecs from the cursor on, moving past what was written; returns
    /// the bytes copied (less than `src.len()` when the list ends).
    ///
    /// # Safety
    /// The iovecs must be valid for writes of their whole length, not accessed by anyone else
    /// during the call, and not overlap `src`.
    #[inline]
    pub unsafe fn copy_from_slice(&mut self, src: &[u8]) -> usize {
        let mut done = 0;
        for p in self.pieces(src.len()) {
            // SAFETY: `p` lies inside an iovec the caller vouches for; `done + p.len ≤
            // src.len()` (the pieces cover at most `src.len()` bytes); no overlap per contract.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), p.base, p.len) };
            done += p.len;
        }
        done
    }

    /// Copy from the iovecs, from the cursor on, into `dst`, moving past what was read;
    /// returns the bytes copied (less than `dst.len()` when the list ends).
    ///
    /// # Safety
    /// The iovecs must be valid for reads of their whole length, not written by anyone else
    /// during the call, and not overlap `dst`.
    #[inline]
    pub unsafe fn copy_to_slice(&mut self, dst: &mut [u8]) -> usize {
        let mut done = 0;
        for p in self.pieces(dst.len()) {
            // SAFETY: as in `copy_from_slice`, reading.
            unsafe { std::ptr::copy_nonoverlapping(p.base, dst.as_mut_ptr().add(done), p.len) };
            done += p.len;
        }
        done
    }

    /// Set the next `len` bytes to `byte`, moving past them; returns the bytes written (less
    /// than `len` when the list ends).
    ///
    /// # Safety
    /// As for [`IovCursor::copy_from_slice`].
    #[inline]
    pub unsafe fn fill(&mut self, byte: u8, len: usize) -> usize {
        let mut done = 0;
        for p in self.pieces(len) {
            // SAFETY: `p` lies inside an iovec the caller vouches for.
            unsafe { std::ptr::write_bytes(p.base, byte, p.len) };
            done += p.len;
        }
        done
    }

    /// Whether the next `data.len()` bytes equal `data` (false when the list is shorter),
    /// moving past what was compared.
    ///
    /// # Safety
    /// As for [`IovCursor::copy_to_slice`].
    pub unsafe fn starts_with(&mut self, data: &[u8]) -> bool {
        let mut done = 0;
        for p in self.pieces(data.len()) {
            // SAFETY: `p` lies inside an iovec the caller vouches for; the slice lives only
            // for this comparison.
            let s = unsafe { std::slice::from_raw_parts(p.base, p.len) };
            if s != &data[done..done + p.len] {
                return false;
            }
            done += p.len;
        }
        done == data.len()
    }
}

/// The pieces of a range ([`IovCursor::pieces`]).
#[derive(Debug)]
pub struct Pieces<'c, 'a> {
    cur: &'c mut IovCursor<'a>,
    left: usize,
}

impl Iterator for Pieces<'_, '_> {
    type Item = IoVec;

    #[inline]
    fn next(&mut self) -> Option<IoVec> {
        let p = self.cur.next_piece(self.left)?;
        self.left -= p.len;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_IOVS;

    fn iov(b: &mut [u8]) -> IoVec {
        // SAFETY: the tests keep the buffers alive while the iovecs are used.
        unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), b.len()) }
    }

    #[test]
    fn advance_skips_empty_iovecs_and_stops_at_the_end() {
        let (mut a, mut b) = ([0u8; 10], [0u8; 5]);
        let v = [IoVec::EMPTY, iov(&mut a), IoVec::EMPTY, iov(&mut b)];
        let mut c = IovCursor::new(&v);
        assert_eq!((c.index(), c.remaining()), (1, 15));
        assert_eq!(c.advance(10), 10);
        assert_eq!(c.index(), 3, "past the empty one");
        assert!(c.at_boundary());
        assert_eq!(c.advance(2), 2);
        assert!(!c.at_boundary());
        assert_eq!(c.peek().unwrap().base, b.as_mut_ptr().wrapping_add(2));
        assert_eq!(c.advance(10), 3);
        assert!(c.is_done());
        assert_eq!((c.peek(), c.remaining(), c.rest().len()), (None, 0, 0));
        assert!(IovCursor::new(&[]).is_done());
        assert!(IovCursor::at(&v, 99).is_done());
    }

    #[test]
    fn split_into_views_a_range_across_iovecs() {
        let (mut a, mut b, mut d) = ([1u8; 100], [2u8; 50], [3u8; 8]);
        let v = [iov(&mut a), iov(&mut b), iov(&mut d)];
        let mut out = [IoVec::EMPTY; MAX_IOVS];
        let mut c = IovCursor::at(&v, 90);
        assert_eq!(c.split_into(30, &mut out), (2, 30));
        assert_eq!((out[0].len, out[1].len), (10, 20));
        assert_eq!(out[0].base, a.as_mut_ptr().wrapping_add(90));
        assert_eq!(out[1].base, b.as_mut_ptr());
        // continues where it stopped; a short list covers fewer bytes
        assert_eq!(c.split_into(100, &mut out), (2, 38));
        // a short `out` stops early
        let mut two = [IoVec::EMPTY; 1];
        assert_eq!(IovCursor::new(&v).split_into(120, &mut two), (1, 100));
        assert_eq!(IovCursor::new(&v).split_into(0, &mut out), (0, 0));
    }

    #[test]
    fn pieces_contiguous_and_rest() {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let v = [iov(&mut a), iov(&mut b)];
        let mut c = IovCursor::at(&v, 6);
        assert_eq!(c.contiguous(2), Some(a.as_mut_ptr().wrapping_add(6)));
        assert_eq!(c.contiguous(3), None);
        assert_eq!(c.rest().len(), 2);
        let lens: Vec<usize> = c.pieces(5).map(|p| p.len).collect();
        assert_eq!(lens, vec![2, 3]);
        assert_eq!((c.index(), c.remaining()), (1, 5));
        let lens: Vec<usize> = c.pieces(100).map(|p| p.len).collect();
        assert_eq!(lens, vec![5], "clipped at the end");
        assert_eq!(c.next_piece(4), None);
    }

    #[test]
    fn copy_fill_and_compare_through_the_list() {
        let (mut a, mut b, mut d) = ([0u8; 3], [0u8; 4], [0u8; 5]);
        let v = [iov(&mut a), iov(&mut b), iov(&mut d)];
        let src: Vec<u8> = (1..=12).collect();
        // SAFETY: the buffers are valid, ours alone, and do not overlap `src`/`out`.
        unsafe {
            assert_eq!(IovCursor::at(&v, 1).copy_from_slice(&src[..9]), 9);
            assert_eq!(IovCursor::at(&v, 10).copy_from_slice(&src), 2, "list ends");
            let mut out = [0u8; 12];
            assert_eq!(IovCursor::new(&v).copy_to_slice(&mut out), 12);
            assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]);
            assert!(IovCursor::at(&v, 1).starts_with(&src[..9]));
            assert!(!IovCursor::at(&v, 1).starts_with(&src[..10]));
            assert!(
                !IovCursor::at(&v, 10).starts_with(&[1, 2, 3]),
                "shorter list"
            );
            assert_eq!(IovCursor::at(&v, 2).fill(0, 4), 4);
            assert_eq!(IovCursor::at(&v, 11).fill(0xee, 4), 1);
            let mut out = [0u8; 12];
            IovCursor::new(&v).copy_to_slice(&mut out);
            assert_eq!(out, [0, 1, 0, 0, 0, 0, 6, 7, 8, 9, 1, 0xee]);
        }
    }
}
