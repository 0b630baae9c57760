//! Pure geometry: how array blocks map to member blocks for each level, and raid5's rotating
//! (left-symmetric) parity. (Host iovec lists are split along strip boundaries with
//! [`keel_bdev::IovCursor`]: views into the host's own memory, no copy.)
//!
//! Member block numbers here are relative to the member's data area (the caller adds the data
//! offset that the superblock reserves).

use crate::level::RaidLevel;

/// The shape of an array. All members contribute `member_blocks` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// RAID level.
    pub level: RaidLevel,
    /// Number of member slots.
    pub members: u32,
    /// Strip size in blocks (a power of two). For raid1 it is the rebuild/serialization region.
    pub strip_blocks: u64,
    /// Data blocks each member contributes (a multiple of `strip_blocks` for striped levels).
    pub member_blocks: u64,
}

/// Where a run of array blocks lands on one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Member slot.
    pub member: u32,
    /// First block on the member (relative to its data area).
    pub member_lba: u64,
    /// Blocks in the run.
    pub blocks: u64,
}

impl Geometry {
    /// Data strips per stripe: members for raid0/concat, members − 1 for raid5, 1 for raid1.
    pub fn data_members(&self) -> u64 {
        (self.level.module().data_members)(self.members)
    }

    /// Blocks the array exposes.
    pub fn num_blocks(&self) -> u64 {
        self.data_members() * self.member_blocks
    }

    /// Data blocks in one stripe (raid0/raid5), one strip for the others.
    pub fn stripe_data_blocks(&self) -> u64 {
        if self.level.module().stripe_unit {
            self.data_members() * self.strip_blocks
        } else {
            self.strip_blocks
        }
    }

    /// raid0, concat and raid5: the member run that array block `lba` starts, at most `max`
    /// blocks (it stops at the end of the strip, or of the member for concat). raid5 maps data
    /// blocks to the members that hold them (parity aside).
    ///
    /// # Panics
    /// For raid1 (every member holds every block).
    pub fn map_linear(&self, lba: u64, max: u64) -> Extent {
        let map = self
            .level
            .module()
            .map
            .expect("map_linear of a level whose blocks each live on one member");
        map(self, lba, max)
    }

    /// concat: members one after the other.
    pub(crate) fn map_concat(&self, lba: u64, max: u64) -> Extent {
        let member = lba / self.member_blocks;
        let member_lba = lba % self.member_blocks;
        Extent {
            member: member as u32,
            member_lba,
            blocks: max.min(self.member_blocks - member_lba),
        }
    }

    /// raid0: strips rotate over the members.
    pub(crate) fn map_striped(&self, lba: u64, max: u64) -> Extent {
        let strip = lba / self.strip_blocks;
        let within = lba % self.strip_blocks;
        let n = u64::from(self.members);
        Extent {
            member: (strip % n) as u32,
            member_lba: (strip / n) * self.strip_blocks + within,
            blocks: max.min(self.strip_blocks - within),
        }
    }

    /// raid5: the member holding data block `lba` (left-symmetric), to the end of its strip.
    pub(crate) fn map_parity_striped(&self, lba: u64, max: u64) -> Extent {
        let strip = lba / self.strip_blocks;
        let within = lba % self.strip_blocks;
        let k = self.data_members();
        let stripe = strip / k;
        Extent {
            member: self.data_member(stripe, strip % k),
            member_lba: stripe * self.strip_blocks + within,
            blocks: max.min(self.strip_blocks - within),
        }
    }

    /// raid5: the member holding parity for `stripe` (left-symmetric: the last member for
    /// stripe 0, then one member to the left per stripe).
    pub fn parity_member(&self, stripe: u64) -> u32 {
        let n = u64::from(self.members);
        (n - 1 - stripe % n) as u32
    }

    /// raid5: the member holding data strip `index` (0-based) of `stripe`: data starts right
    /// after the parity member and wraps around.
    pub fn data_member(&self, stripe: u64, index: u64) -> u32 {
        let n = u64::from(self.members);
        ((u64::from(self.parity_member(stripe)) + 1 + index) % n) as u32
    }

    /// raid5: which data strip of `stripe` member `member` holds (`None`: it holds parity).
    pub fn data_index(&self, stripe: u64, member: u32) -> Option<u64> {
        let n = u64::from(self.members);
        let p = u64::from(self.parity_member(stripe));
        let m = u64::from(member);
        (m != p).then(|| (m + n - p - 1) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(level: RaidLevel, members: u32) -> Geometry {
        Geometry {
            level,
            members,
            strip_blocks: 8,
            member_blocks: 64,
        }
    }

    #[test]
    fn raid0_strips_rotate_over_members() {
        let g = g(RaidLevel::Raid0, 3);
        assert_eq!(g.num_blocks(), 192);
        let e = g.map_linear(0, 100);
        assert_eq!((e.member, e.member_lba, e.blocks), (0, 0, 8));
        let e = g.map_linear(13, 100);
        assert_eq!((e.member, e.member_lba, e.blocks), (1, 5, 3));
        let e = g.map_linear(3 * 8 + 2, 1);
        assert_eq!((e.member, e.member_lba, e.blocks), (0, 10, 1));
    }

    #[test]
    fn concat_fills_members_in_order() {
        let g = g(RaidLevel::Concat, 2);
        let e = g.map_linear(60, 100);
        assert_eq!((e.member, e.member_lba, e.blocks), (0, 60, 4));
        let e = g.map_linear(64, 100);
        assert_eq!((e.member, e.member_lba, e.blocks), (1, 0, 64));
    }

    #[test]
    fn raid5_left_symmetric_layout() {
        let g = g(RaidLevel::Raid5, 4);
        assert_eq!(g.num_blocks(), 3 * 64);
        // stripe 0: parity on 3, data 0,1,2; stripe 1: parity on 2, data 3,0,1; …
        let layout: Vec<(u32, Vec<u32>)> = (0..5)
            .map(|s| {
                (
                    g.parity_member(s),
                    (0..3).map(|i| g.data_member(s, i)).collect(),
                )
            })
            .collect();
        assert_eq!(
            layout,
            vec![
                (3, vec![0, 1, 2]),
                (2, vec![3, 0, 1]),
                (1, vec![2, 3, 0]),
                (0, vec![1, 2, 3]),
                (3, vec![0, 1, 2]),
            ]
        );
        for s in 0..8 {
            assert_eq!(g.data_index(s, g.parity_member(s)), None);
            for i in 0..3 {
                assert_eq!(g.data_index(s, g.data_member(s, i)), Some(i));
            }
        }
    }

    #[test]
    fn raid5_maps_data_blocks_to_their_members() {
        let g = g(RaidLevel::Raid5, 4);
        // Stripe 1 (blocks 24..48): parity on 2, data strips on 3, 0, 1.
        let e = g.map_linear(24 + 8 + 5, 100);
        assert_eq!((e.member, e.member_lba, e.blocks), (0, 13, 3));
        for lba in 0..g.num_blocks() {
            let e = g.map_linear(lba, 1);
            let stripe = lba / 24;
            let i = lba % 24 / 8;
            assert_eq!(e.member, g.data_member(stripe, i));
            assert_eq!(e.member_lba, stripe * 8 + lba % 8);
        }
    }
}
