//! Slices: runs of equal-size objects, with their state machine and free bitmap.
//!
//! A slice is [`SLICE_SIZE`] = 256 KiB of a page: a page holds 8 slices, and a slice holds
//! 512 objects of the smallest class (512 B) down to 2 of the largest (128 KiB). A fixed byte
//! size (rather than a fixed object count) keeps every slice interchangeable: any clean or
//! dirty slice can be carved for any class without fragmenting the page, and the waste of the
//! largest class is nil (2 × 128 KiB fill the slice exactly). 256 KiB is the smallest size
//! holding more than one 128 KiB object, so a slice of the largest class goes partial (not
//! straight full) and per-page slice counts stay small (8 slices of metadata per 2 MiB).
//!
//! The metadata (state, class, free bitmap, list links) lives in the domain's slice table on the
//! ordinary heap, never in the DMA memory: a buffer carries no allocator bytes, so it can be
//! handed to a device or registered for RDMA whole.
//!
//! States: `Clean` (never carved) → `Partial` (some objects out) ⇄ `Full` (all out);
//! `Partial` → `Dirty` when its last object comes back; `Dirty` → `Partial` when carved again,
//! for the same class or (re-purposed) for another one.

use super::{MIN_CLASS, PAGE_SIZE};

/// Bytes per slice.
pub(super) const SLICE_SIZE: usize = 256 * 1024;
/// Slices per pool page.
pub(super) const SLICES_PER_PAGE: usize = PAGE_SIZE / SLICE_SIZE;
/// Most objects a slice holds (of the smallest class).
pub(super) const MAX_OBJECTS: usize = SLICE_SIZE / MIN_CLASS;
/// Bits of an object index inside a slot id (`slot = slice << OBJ_BITS | object`).
pub(super) const OBJ_BITS: u32 = MAX_OBJECTS.trailing_zeros();
/// Words of the free bitmap.
const WORDS: usize = MAX_OBJECTS / 64;
/// "No slice" in the intrusive list links.
const NIL: u32 = u32::MAX;

/// Where a slice is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SliceState {
    /// Never carved into objects since its page was mapped.
    Clean,
    /// Carved, some objects handed out, some free.
    Partial,
    /// Carved, every object handed out.
    Full,
    /// Carved before, every object free again: reusable for any class.
    Dirty,
}

/// What a free did to its slice's state (the domain moves it between lists accordingly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freed {
    /// The slice stayed partial.
    StillPartial,
    /// The slice was full and is partial now.
    FullToPartial,
    /// The slice's last object came back: it is dirty now (`was_full` for one-object slices).
    ToDirty {
        /// The slice was full (so it is in no list) rather than partial.
        was_full: bool,
    },
}

/// Metadata of one slice.
#[derive(Debug)]
pub(super) struct Slice {
    /// First byte of the slice in its page.
    base: *mut u8,
    state: SliceState,
    /// Class index while carved (meaningless when clean).
    class: u8,
    /// Objects of this carving, and how many of them are free.
    cap: u16,
    free: u16,
    /// Links of the intrusive list (partial or dirty of its class) the slice is on.
    prev: u32,
    next: u32,
    /// Bit `i` set = object `i` is free.
    bitmap: [u64; WORDS],
}

impl Slice {
    /// A clean slice starting at `base`.
    pub(super) fn new(base: *mut u8) -> Slice {
        Slice {
            base,
            state: SliceState::Clean,
            class: 0,
            cap: 0,
            free: 0,
            prev: NIL,
            next: NIL,
            bitmap: [0; WORDS],
        }
    }

    pub(super) fn state(&self) -> SliceState {
        self.state
    }

    pub(super) fn class(&self) -> usize {
        usize::from(self.class)
    }

    #[cfg(test)]
    pub(super) fn free_objects(&self) -> usize {
        usize::from(self.free)
    }

    /// Carve a clean or dirty slice into objects of `class` (all free); it becomes `Partial`
    /// in anticipation of the [`take`](Self::take) that always follows.
    pub(super) fn carve(&mut self, class: usize) {
        debug_assert!(matches!(self.state, SliceState::Clean | SliceState::Dirty));
        if self.state == SliceState::Dirty && self.class() == class {
            // Same carving, every object free: the bitmap is already right.
            self.state = SliceState::Partial;
            return;
        }
        let cap = SLICE_SIZE / (MIN_CLASS << class);
        self.class = class as u8;
        self.cap = cap as u16;
        self.free = cap as u16;
        for (i, w) in self.bitmap.iter_mut().enumerate() {
            let lo = i * 64;
            *w = match cap.saturating_sub(lo) {
                0 => 0,
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
        }
        self.state = SliceState::Partial;
    }

    /// Take the lowest free object (low addresses first keeps the slice's hot part small).
    /// Returns its index, or `None` when the slice has no free object.
    pub(super) fn take(&mut self) -> Option<u16> {
        let words = usize::from(self.cap).div_ceil(64);
        let (i, w) = self.bitmap[..words]
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != 0)?;
        let bit = w.trailing_zeros();
        *w &= !(1u64 << bit);
        self.free -= 1;
        if self.free == 0 {
            self.state = SliceState::Full;
        }
        Some((i * 64) as u16 + bit as u16)
    }

    /// Give object `obj` back. The caller guarantees it is a handed-out object of this carving.
    pub(super) fn put(&mut self, obj: u16) -> Freed {
        let (word, bit) = (usize::from(obj) / 64, u32::from(obj) % 64);
        debug_assert!(
            obj < self.cap,
            "object {obj} outside a slice of {}",
            self.cap
        );
        debug_assert_eq!(
            self.bitmap[word] >> bit & 1,
            0,
            "double free of object {obj}"
        );
        self.bitmap[word] |= 1u64 << bit;
        let was_full = self.free == 0;
        self.free += 1;
        if self.free == self.cap {
            self.state = SliceState::Dirty;
            Freed::ToDirty { was_full }
        } else if was_full {
            self.state = SliceState::Partial;
            Freed::FullToPartial
        } else {
            Freed::StillPartial
        }
    }

    /// Address of object `obj` of the current carving.
    pub(super) fn object_ptr(&self, obj: u16) -> *mut u8 {
        // The offset stays inside the slice: obj < cap and cap × size = SLICE_SIZE.
        self.base
            .wrapping_add(usize::from(obj) * (MIN_CLASS << self.class))
    }
}

/// An intrusive doubly-linked list of slices (by index into the domain's slice table): O(1)
/// push, pop and removal from the middle, no allocation.
#[derive(Debug)]
pub(super) struct SliceList {
    head: u32,
    len: usize,
}

impl SliceList {
    pub(super) const fn new() -> SliceList {
        SliceList { head: NIL, len: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The first slice, if any.
    pub(super) fn first(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Put slice `idx` (on no list) first.
    pub(super) fn push_front(&mut self, slices: &mut [Slice], idx: u32) {
        let s = &mut slices[idx as usize];
        debug_assert!(s.prev == NIL && s.next == NIL && self.head != idx);
        s.next = self.head;
        if self.head != NIL {
            slices[self.head as usize].prev = idx;
        }
        self.head = idx;
        self.len += 1;
    }

    /// Unlink slice `idx`, which is on this list.
    pub(super) fn remove(&mut self, slices: &mut [Slice], idx: u32) {
        let (prev, next) = {
            let s = &mut slices[idx as usize];
            let links = (s.prev, s.next);
            s.prev = NIL;
            s.next = NIL;
            links
        };
        if prev == NIL {
            debug_assert_eq!(self.head, idx);
            self.head = next;
        } else {
            slices[prev as usize].next = next;
        }
        if next != NIL {
            slices[next as usize].prev = prev;
        }
        self.len -= 1;
    }

    /// Unlink and return the first slice.
    pub(super) fn pop_front(&mut self, slices: &mut [Slice]) -> Option<u32> {
        let idx = self.first()?;
        self.remove(slices, idx);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::NUM_CLASSES;

    fn slices(n: usize) -> Vec<Slice> {
        (0..n)
            .map(|i| Slice::new((i * SLICE_SIZE) as *mut u8))
            .collect()
    }

    #[test]
    fn geometry() {
        assert_eq!(SLICES_PER_PAGE, 8);
        assert_eq!(MAX_OBJECTS, 512);
        assert_eq!(1 << OBJ_BITS, MAX_OBJECTS);
    }

    #[test]
    fn carve_take_all_then_put_all() {
        for class in 0..NUM_CLASSES {
            let mut s = Slice::new(std::ptr::null_mut());
            s.carve(class);
            let cap = SLICE_SIZE / (MIN_CLASS << class);
            assert_eq!(
                (s.state(), s.free_objects(), s.class()),
                (SliceState::Partial, cap, class)
            );
            let objs: Vec<u16> = (0..cap).map(|_| s.take().expect("free object")).collect();
            assert_eq!(
                objs,
                (0..cap as u16).collect::<Vec<_>>(),
                "lowest first, each once"
            );
            assert_eq!(s.state(), SliceState::Full);
            assert_eq!(s.take(), None);
            assert_eq!(
                s.put(objs[0]),
                if cap == 1 {
                    Freed::ToDirty { was_full: true }
                } else {
                    Freed::FullToPartial
                }
            );
            for &o in &objs[1..cap - 1] {
                assert_eq!(s.put(o), Freed::StillPartial);
            }
            assert_eq!(s.put(objs[cap - 1]), Freed::ToDirty { was_full: false });
            assert_eq!(s.state(), SliceState::Dirty);
        }
    }

    #[test]
    fn recarve_dirty_for_other_class() {
        let mut s = Slice::new(std::ptr::null_mut());
        s.carve(0);
        let o = s.take().unwrap();
        s.put(o);
        assert_eq!(s.state(), SliceState::Dirty);
        s.carve(8);
        assert_eq!((s.class(), s.free_objects()), (8, 2));
        assert_eq!(s.object_ptr(1) as usize, 128 * 1024);
    }

    #[test]
    fn list_push_remove_pop() {
        let mut sl = slices(4);
        let mut list = SliceList::new();
        for i in 0..4 {
            list.push_front(&mut sl, i);
        }
        assert_eq!(list.len(), 4);
        list.remove(&mut sl, 2); // middle
        list.remove(&mut sl, 3); // head
        list.remove(&mut sl, 0); // tail
        assert_eq!(list.first(), Some(1));
        assert_eq!(list.pop_front(&mut sl), Some(1));
        assert_eq!((list.len(), list.pop_front(&mut sl)), (0, None));
        // Removed slices can be listed again.
        list.push_front(&mut sl, 2);
        list.push_front(&mut sl, 0);
        assert_eq!(list.pop_front(&mut sl), Some(0));
        assert_eq!(list.pop_front(&mut sl), Some(2));
    }
}
