//! HOT PATH: per-stripe serialization without a lock.
//!
//! Each array has a table of stripe tokens (one atomic word per bucket; a stripe, or a raid1
//! region, maps to bucket `stripe % BUCKETS`). An operation that writes a stripe (or reads it
//! through parity) takes the stripe's token with one compare-and-swap and gives it back with one
//! swap. Nobody ever spins or blocks on a token: an operation that finds it taken records its
//! core in the token word (same CAS) and parks on its own core; whoever gives the token back
//! sees the waiting cores in the word it swapped out and sends each a message (8-byte closure,
//! stored in the lock-free ring, no allocation), whose channels then retry their parked
//! operations. Registration and release are read-modify-writes of the same word, so a waiter
//! either sees the token free or is seen by the release: no wake-up is lost.
//!
//! Buckets are shared by stripes `BUCKETS` apart (false conflicts only serialize, never break);
//! an operation holds at most one token at a time, so there is no deadlock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Tokens per array.
pub const BUCKETS: usize = 4096;
/// Bit set while the token is held.
const HELD: u64 = 1 << 63;
/// Waiter bits: one per core id modulo 63.
const WAITER_BITS: u32 = 63;

/// The token table of one array.
pub struct StripeLocks {
    words: Box<[AtomicU64]>,
    /// Reactor cores, to wake the waiters a bit stands for.
    cores: Vec<u32>,
}

/// The waiter bit of `core`.
#[inline]
pub fn core_bit(core: u32) -> u64 {
    1u64 << (core % WAITER_BITS)
}

impl StripeLocks {
    /// A table with every token free; `cores` are the reactor cores that may wait.
    pub fn new(cores: Vec<u32>) -> StripeLocks {
        StripeLocks {
            words: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            cores,
        }
    }

    /// The bucket of `stripe`.
    #[inline]
    pub fn bucket(stripe: u64) -> usize {
        (stripe % BUCKETS as u64) as usize
    }

    /// Take the token of `bucket`, or (if taken) register `my_bit` as waiting and return false.
    #[inline]
    pub fn try_acquire(&self, bucket: usize, my_bit: u64) -> bool {
        let a = &self.words[bucket];
        let mut w = a.load(Ordering::Relaxed);
        loop {
            let (new, acquired) = if w & HELD == 0 {
                (w | HELD, true)
            } else if w & my_bit != 0 {
                return false;
            } else {
                (w | my_bit, false)
            };
            match a.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return acquired,
                Err(x) => w = x,
            }
        }
    }

    /// Give the token of `bucket` back; calls `wake(core)` for every core that may be waiting.
    #[inline]
    pub fn release(&self, bucket: usize, mut wake: impl FnMut(u32)) {
        let w = self.words[bucket].swap(0, Ordering::AcqRel);
        debug_assert!(w & HELD != 0, "released a stripe token that was not held");
        let waiters = w & !HELD;
        if waiters != 0 {
            for &c in &self.cores {
                if waiters & core_bit(c) != 0 {
                    wake(c);
                }
            }
        }
    }

    /// Whether the token of `bucket` is held (tests and assertions).
    pub fn is_held(&self, bucket: usize) -> bool {
        self.words[bucket].load(Ordering::Acquire) & HELD != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_and_waiters_are_told() {
        let t = StripeLocks::new(vec![0, 1, 2]);
        let b = StripeLocks::bucket(5 + BUCKETS as u64);
        assert_eq!(b, 5);
        assert!(t.try_acquire(b, core_bit(0)));
        assert!(t.is_held(b));
        assert!(!t.try_acquire(b, core_bit(1)));
        assert!(
            !t.try_acquire(b, core_bit(1)),
            "registering twice is harmless"
        );
        assert!(!t.try_acquire(b, core_bit(2)));
        let mut woken = Vec::new();
        t.release(b, |c| woken.push(c));
        assert_eq!(woken, vec![1, 2]);
        assert!(!t.is_held(b));
        assert!(t.try_acquire(b, core_bit(2)));
        let mut woken = Vec::new();
        t.release(b, |c| woken.push(c));
        assert!(woken.is_empty(), "waiters are told once");
    }

    #[test]
    fn threads_never_hold_a_token_together() {
        use std::sync::atomic::AtomicU32;
        use std::sync::Arc;
        let t = Arc::new(StripeLocks::new(vec![0, 1, 2, 3]));
        let inside = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..4u32)
            .map(|c| {
                let (t, inside) = (Arc::clone(&t), Arc::clone(&inside));
                std::thread::spawn(move || {
                    let mut got = 0;
                    while got < 2000 {
                        if t.try_acquire(7, core_bit(c)) {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            t.release(7, |_| {});
                            got += 1;
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(!t.is_held(7));
    }
}
