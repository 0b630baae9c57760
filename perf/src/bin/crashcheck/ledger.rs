//! What the checker knows about every block it ever wrote: the last acknowledged generation,
//! and the generations that may or may not have landed (in flight when the target died, or
//! failed). [`Ledger::judge`] decides whether what a read found is allowed.
//!
//! Rules (generations only grow, and the workload never has two commands in flight on one
//! block, so every possible generation is newer than the acknowledged one):
//! - a block never acknowledged may read as zeroes or as any possible generation;
//! - an acknowledged block must read as that generation or a newer possible one — zeroes, an
//!   older generation or garbage mean an acknowledged write was lost.
//! - An acknowledgement or a verified read settles the block: the possible set is cleared.

use crate::block::Found;
use std::collections::{HashMap, HashSet};

/// The blocks of one namespace.
#[derive(Debug, Default)]
pub struct NsLedger {
    /// Namespace id.
    pub nsid: u32,
    /// Last acknowledged generation per LBA (0: never acknowledged).
    acked: Vec<u64>,
    /// Generations that may have landed, per LBA (all newer than the acknowledged one).
    possible: HashMap<u64, Vec<u64>>,
    /// Every LBA that ever had a write of unknown outcome (kept after settling: such a write
    /// may have allocated its cluster even where its data did not land).
    ever_uncertain: HashSet<u64>,
}

/// Why a block is allowed to read as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never written and reads as zeroes.
    Unwritten,
    /// Reads as the last acknowledged generation.
    Acked,
    /// Reads as a generation that was in flight or failed (it landed after all).
    Landed,
    /// Has possible generations, none of them landed (reads as zeroes, never acknowledged).
    NotLanded,
}

/// A read that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Namespace id.
    pub nsid: u32,
    /// LBA.
    pub lba: u64,
    /// Last acknowledged generation (0: none).
    pub acked: u64,
    /// Generations that may have landed.
    pub possible: Vec<u64>,
    /// What was read.
    pub found: Found,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.found {
            Found::Stamped(g) if g < self.acked => "LOST ACKNOWLEDGED WRITE (older data)",
            Found::Stamped(_) => "UNKNOWN GENERATION (never written there)",
            Found::Zeroes => "LOST ACKNOWLEDGED WRITE (reads as zeroes)",
            Found::Misplaced { .. } => "MISDIRECTED DATA",
            Found::Garbage | Found::BadCrc => "CORRUPT BLOCK",
        };
        write!(
            f,
            "{what}: namespace {} LBA {}: expected ",
            self.nsid, self.lba
        )?;
        if self.acked == 0 {
            f.write_str("zeroes")?;
        } else {
            write!(f, "generation {}", self.acked)?;
        }
        if !self.possible.is_empty() {
            write!(f, " or one of the possibly landed {:?}", self.possible)?;
        }
        write!(f, ", found {}", self.found)
    }
}

impl NsLedger {
    fn grow(&mut self, end: u64) {
        if self.acked.len() < end as usize {
            self.acked.resize(end as usize, 0);
        }
    }

    /// Make room for LBAs below `blocks` (so that acknowledging never allocates).
    pub fn reserve(&mut self, blocks: u64) {
        self.grow(blocks);
    }

    /// One past the highest LBA known.
    pub fn end(&self) -> u64 {
        let possible = self.possible.keys().max().map_or(0, |&l| l + 1);
        (self.acked.len() as u64).max(possible)
    }

    /// Last acknowledged generation of `lba` (0: none).
    pub fn acked(&self, lba: u64) -> u64 {
        self.acked.get(lba as usize).copied().unwrap_or(0)
    }

    /// Whether anything was ever written (or possibly written) at `lba`.
    pub fn touched(&self, lba: u64) -> bool {
        self.acked(lba) != 0 || self.possible.contains_key(&lba)
    }

    /// `blocks` blocks from `lba` were acknowledged with `generation`.
    pub fn ack(&mut self, lba: u64, blocks: u64, generation: u64) {
        self.grow(lba + blocks);
        for l in lba..lba + blocks {
            self.acked[l as usize] = generation;
            if !self.possible.is_empty() {
                self.possible.remove(&l);
            }
        }
    }

    /// `blocks` blocks from `lba` may have been written with `generation`.
    pub fn maybe(&mut self, lba: u64, blocks: u64, generation: u64) {
        for l in lba..lba + blocks {
            self.possible.entry(l).or_default().push(generation);
            self.ever_uncertain.insert(l);
        }
    }

    /// A read showed `lba` holds `generation` (0: zeroes) after a restart: that is its state now.
    pub fn settle(&mut self, lba: u64, generation: u64) {
        self.possible.remove(&lba);
        if generation != 0 || (lba as usize) < self.acked.len() {
            self.grow(lba + 1);
            self.acked[lba as usize] = generation;
        }
    }

    /// Every LBA that ever had a write of unknown outcome.
    pub fn ever_uncertain(&self) -> impl Iterator<Item = u64> + '_ {
        self.ever_uncertain.iter().copied()
    }

    /// Whether `lba` has generations that may have landed.
    pub fn is_uncertain(&self, lba: u64) -> bool {
        self.possible.contains_key(&lba)
    }

    /// Whether reading `found` at `lba` is allowed, and why.
    pub fn judge(&self, lba: u64, found: Found) -> Result<Verdict, Violation> {
        let acked = self.acked(lba);
        let possible = self.possible.get(&lba);
        let ok = match found {
            Found::Zeroes if acked == 0 => Some(if possible.is_some() {
                Verdict::NotLanded
            } else {
                Verdict::Unwritten
            }),
            Found::Stamped(g) if g == acked && acked != 0 => Some(if possible.is_some() {
                Verdict::NotLanded
            } else {
                Verdict::Acked
            }),
            Found::Stamped(g) if possible.is_some_and(|p| p.contains(&g)) => Some(Verdict::Landed),
            _ => None,
        };
        ok.ok_or_else(|| Violation {
            nsid: self.nsid,
            lba,
            acked,
            possible: possible.cloned().unwrap_or_default(),
            found,
        })
    }
}

/// Every namespace's blocks, and the newest generation used.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Logical block size of the blocks recorded (0: not known yet).
    pub block_size: u32,
    /// The namespaces, in the order first seen.
    pub namespaces: Vec<NsLedger>,
    /// Newest generation recorded (the next write uses a larger one).
    pub max_generation: u64,
}

impl Ledger {
    /// The namespace `nsid` (created empty if unknown).
    pub fn ns_mut(&mut self, nsid: u32) -> &mut NsLedger {
        let i = match self.namespaces.iter().position(|n| n.nsid == nsid) {
            Some(i) => i,
            None => {
                self.namespaces.push(NsLedger {
                    nsid,
                    ..NsLedger::default()
                });
                self.namespaces.len() - 1
            }
        };
        &mut self.namespaces[i]
    }

    /// The namespace `nsid`, if anything was recorded for it.
    pub fn ns(&self, nsid: u32) -> Option<&NsLedger> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }

    /// Note that `generation` was used.
    pub fn saw_generation(&mut self, generation: u64) {
        self.max_generation = self.max_generation.max(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> NsLedger {
        NsLedger {
            nsid: 1,
            ..NsLedger::default()
        }
    }

    #[test]
    fn unwritten_blocks_must_be_zeroes() {
        let l = ns();
        assert_eq!(l.judge(5, Found::Zeroes), Ok(Verdict::Unwritten));
        assert!(l.judge(5, Found::Stamped(1)).is_err());
        assert!(l.judge(5, Found::Garbage).is_err());
    }

    #[test]
    fn acknowledged_writes_must_survive() {
        let mut l = ns();
        l.ack(10, 4, 7);
        assert_eq!(l.judge(11, Found::Stamped(7)), Ok(Verdict::Acked));
        let v = l.judge(11, Found::Zeroes).unwrap_err();
        assert_eq!((v.lba, v.acked), (11, 7));
        assert!(v.to_string().contains("LOST ACKNOWLEDGED WRITE"), "{v}");
        l.ack(11, 1, 9);
        let v = l.judge(11, Found::Stamped(7)).unwrap_err();
        assert!(v.to_string().contains("older data"), "{v}");
        assert!(l.judge(11, Found::Stamped(10)).is_err());
        assert!(l.judge(11, Found::Misplaced { nsid: 1, lba: 12 }).is_err());
        assert!(l.judge(11, Found::BadCrc).is_err());
    }

    #[test]
    fn in_flight_generations_may_or_may_not_land() {
        let mut l = ns();
        l.ack(0, 2, 3);
        l.maybe(1, 2, 8);
        assert_eq!(l.judge(1, Found::Stamped(8)), Ok(Verdict::Landed));
        assert_eq!(l.judge(1, Found::Stamped(3)), Ok(Verdict::NotLanded));
        assert_eq!(l.judge(2, Found::Stamped(8)), Ok(Verdict::Landed));
        assert_eq!(l.judge(2, Found::Zeroes), Ok(Verdict::NotLanded));
        assert!(l.judge(1, Found::Zeroes).is_err());
        assert!(l.judge(0, Found::Stamped(8)).is_err());
        // A later acknowledgement supersedes what was in flight.
        l.ack(1, 1, 11);
        assert!(l.judge(1, Found::Stamped(8)).is_err());
        assert_eq!(l.judge(1, Found::Stamped(11)), Ok(Verdict::Acked));
    }

    #[test]
    fn a_verified_read_settles_the_block() {
        let mut l = ns();
        l.ack(4, 1, 2);
        l.maybe(4, 1, 5);
        l.maybe(6, 1, 6);
        assert_eq!(l.end(), 7);
        l.settle(4, 5);
        assert_eq!(l.judge(4, Found::Stamped(5)), Ok(Verdict::Acked));
        assert!(l.judge(4, Found::Stamped(2)).is_err());
        l.settle(6, 0);
        assert!(!l.is_uncertain(6));
        let mut ever: Vec<u64> = l.ever_uncertain().collect();
        ever.sort_unstable();
        assert_eq!(ever, [4, 6]);
        assert_eq!(l.judge(6, Found::Zeroes), Ok(Verdict::Unwritten));
        assert!(l.judge(6, Found::Stamped(6)).is_err());
        assert_eq!(l.end(), 5); // nothing is known beyond the acknowledged block 4 any more
    }

    #[test]
    fn namespaces_are_kept_apart() {
        let mut led = Ledger::default();
        led.ns_mut(1).ack(0, 1, 1);
        led.ns_mut(2).ack(0, 1, 2);
        led.saw_generation(2);
        assert_eq!(led.ns(1).unwrap().acked(0), 1);
        assert_eq!(led.ns(2).unwrap().acked(0), 2);
        assert!(led.ns(3).is_none());
        assert_eq!(led.max_generation, 2);
    }
}
