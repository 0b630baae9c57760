//! Allocation bitmaps (data clusters, metadata page pairs). Lives on the lvstore's metadata
//! core only; rebuilt from the volume maps at load.

/// A fixed-size set of `len` slots, each free or used, with next-fit allocation.
#[derive(Debug, Clone)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
    used: u64,
    hint: u64,
}

impl Bitmap {
    /// `len` free slots.
    pub fn new(len: u64) -> Bitmap {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            used: 0,
            hint: 0,
        }
    }

    /// `len` used slots.
    pub fn new_full(len: u64) -> Bitmap {
        let mut words = vec![u64::MAX; len.div_ceil(64) as usize];
        if !len.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        Bitmap {
            words,
            len,
            used: len,
            hint: 0,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Number of free slots.
    pub fn free(&self) -> u64 {
        self.len - self.used
    }

    /// Whether slot `i` is used (false beyond the end).
    pub fn is_used(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Mark `i` used; false if it already was (or is out of range).
    pub fn set(&mut self, i: u64) -> bool {
        if i >= self.len || self.is_used(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.used += 1;
        true
    }

    /// Mark `i` free; false if it already was (or is out of range).
    pub fn clear(&mut self, i: u64) -> bool {
        if !self.is_used(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.used -= 1;
        true
    }

    /// Take a free slot (next-fit from the last one taken), or `None` when full.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.used == self.len {
            return None;
        }
        let nwords = self.words.len() as u64;
        let start = self.hint / 64;
        for k in 0..=nwords {
            let w = (start + k) % nwords;
            let free = !self.words[w as usize];
            if free != 0 {
                let i = w * 64 + u64::from(free.trailing_zeros());
                if i < self.len {
                    self.set(i);
                    self.hint = i + 1;
                    return Some(i);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_every_slot_once_then_reports_full() {
        let mut b = Bitmap::new(130);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..130 {
            assert!(seen.insert(b.alloc().unwrap()));
        }
        assert_eq!(b.alloc(), None);
        assert_eq!(b.free(), 0);
        assert!(b.clear(77));
        assert!(!b.clear(77));
        assert_eq!(b.alloc(), Some(77));
        assert!(!b.set(77));
        assert!(!b.set(500));
        assert!(seen.iter().all(|&i| i < 130));
    }

    #[test]
    fn a_full_bitmap_has_every_slot_used_and_none_beyond() {
        for len in [1, 63, 64, 65, 130] {
            let mut b = Bitmap::new_full(len);
            assert_eq!(b.free(), 0, "len {len}");
            assert!((0..len).all(|i| b.is_used(i)));
            assert!(!b.is_used(len));
            assert_eq!(b.alloc(), None);
            assert!(b.clear(len - 1));
            assert_eq!(b.alloc(), Some(len - 1));
        }
    }
}
