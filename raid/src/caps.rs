//! What a raid bdev offers beyond read, write, flush and reset — unmap, write-zeroes, and the
//! promise that unmapped blocks read back as zeroes — decided from its members when it
//! registers (the bdev layer asks once), and what a member joining later must offer so the
//! array keeps its word.
//!
//! - raid0, concat, raid1: unmap and write-zeroes when every member has both (raid1 sends them
//!   to every mirror); the zeroes promise when every member makes it.
//! - raid5: write-zeroes when every member has it (full stripes: data and parity zeroed, zero
//!   parity being the parity of zero data; partial stripes: zero data written through the
//!   ordinary write path, parity updated). Unmap only when every member also unmaps *and*
//!   promises zeroes after it: a member whose unmapped blocks read back as anything else would
//!   leave parity that no longer matches the data, and a later rebuild would reconstruct
//!   garbage into blocks that hold acknowledged writes. With that promise, unmap of whole
//!   stripes unmaps data and parity (zeroes on every member: consistent) and the partial-stripe
//!   parts are zeroed as by write-zeroes, so the raid5 bdev makes the zeroes promise too.

use crate::level::RaidLevel;
use keel_bdev::{Bdev, IoType};

/// What one member offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberCaps {
    /// It takes unmap.
    pub unmap: bool,
    /// It takes write-zeroes.
    pub write_zeroes: bool,
    /// Its unmapped (and write-zeroed) blocks read back as zeroes.
    pub zeroes: bool,
}

impl MemberCaps {
    /// What bdev `b` offers.
    pub fn of(b: &Bdev) -> MemberCaps {
        MemberCaps {
            unmap: b.io_type_supported(IoType::Unmap),
            write_zeroes: b.io_type_supported(IoType::WriteZeroes),
            zeroes: b.unmap_reads_zeroes(),
        }
    }
}

/// What a raid bdev offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// It takes unmap.
    pub unmap: bool,
    /// It takes write-zeroes.
    pub write_zeroes: bool,
    /// Unmapped and write-zeroed blocks read back as zeroes.
    pub zeroes: bool,
}

impl Caps {
    /// What an array of `level` over members offering `members` offers (members not present
    /// are left out; they must offer as much when they join, see [`Caps::admits`]).
    pub fn of(level: RaidLevel, members: &[MemberCaps]) -> Caps {
        (level.module().caps)(members)
    }

    /// The rule of levels that keep data as it is (raid0, concat, raid1): unmap and
    /// write-zeroes go to the members as they are.
    pub(crate) fn of_plain(members: &[MemberCaps]) -> Caps {
        let all = |f: fn(&MemberCaps) -> bool| members.iter().all(f);
        let both = all(|m| m.unmap && m.write_zeroes);
        Caps {
            unmap: both,
            write_zeroes: both,
            zeroes: both && all(|m| m.zeroes),
        }
    }

    /// The rule of parity levels (raid5): see the module doc.
    pub(crate) fn of_parity(members: &[MemberCaps]) -> Caps {
        let all = |f: fn(&MemberCaps) -> bool| members.iter().all(f);
        let write_zeroes = all(|m| m.write_zeroes);
        let unmap = write_zeroes && all(|m| m.unmap && m.zeroes);
        Caps {
            unmap,
            write_zeroes,
            zeroes: unmap,
        }
    }

    /// Whether a member offering `m` may join an array of `level` that offers `self`;
    /// `Err` says what it lacks.
    pub fn admits(&self, level: RaidLevel, m: MemberCaps) -> Result<(), String> {
        let alone = Caps::of(level, &[m]);
        let lacks: Vec<&str> = [
            (self.unmap && !alone.unmap, "unmap"),
            (self.write_zeroes && !alone.write_zeroes, "write-zeroes"),
            (self.zeroes && !alone.zeroes, "zeroes after unmap"),
        ]
        .into_iter()
        .filter_map(|(lacking, what)| lacking.then_some(what))
        .collect();
        if lacks.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the array offers {} and the bdev does not",
                lacks.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: MemberCaps = MemberCaps {
        unmap: true,
        write_zeroes: true,
        zeroes: true,
    };
    /// Unmaps, but unmapped blocks read back as anything (a null bdev, many SSDs).
    const NO_PROMISE: MemberCaps = MemberCaps {
        unmap: true,
        write_zeroes: true,
        zeroes: false,
    };
    const RW_ONLY: MemberCaps = MemberCaps {
        unmap: false,
        write_zeroes: false,
        zeroes: false,
    };

    #[test]
    fn striping_and_mirrors_need_both_on_every_member() {
        for level in [RaidLevel::Raid0, RaidLevel::Concat, RaidLevel::Raid1] {
            let c = Caps::of(level, &[FULL, FULL]);
            assert_eq!(
                c,
                Caps {
                    unmap: true,
                    write_zeroes: true,
                    zeroes: true
                }
            );
            let c = Caps::of(level, &[FULL, NO_PROMISE]);
            assert!(c.unmap && c.write_zeroes && !c.zeroes, "{level}");
            assert_eq!(Caps::of(level, &[FULL, RW_ONLY]), Caps::default());
        }
    }

    #[test]
    fn raid5_unmaps_only_over_members_that_read_back_zeroes() {
        let c = Caps::of(RaidLevel::Raid5, &[FULL, FULL, FULL]);
        assert!(c.unmap && c.write_zeroes && c.zeroes);
        let c = Caps::of(RaidLevel::Raid5, &[FULL, NO_PROMISE, FULL]);
        assert!(!c.unmap && c.write_zeroes && !c.zeroes);
        let wz_only = MemberCaps {
            unmap: false,
            write_zeroes: true,
            zeroes: false,
        };
        let c = Caps::of(RaidLevel::Raid5, &[wz_only, wz_only, wz_only]);
        assert!(!c.unmap && c.write_zeroes);
        assert_eq!(
            Caps::of(RaidLevel::Raid5, &[FULL, RW_ONLY, FULL]),
            Caps::default()
        );
    }

    #[test]
    fn a_joining_member_must_offer_what_the_array_offers() {
        let c = Caps::of(RaidLevel::Raid5, &[FULL, FULL, FULL]);
        assert_eq!(c.admits(RaidLevel::Raid5, FULL), Ok(()));
        let e = c.admits(RaidLevel::Raid5, NO_PROMISE).unwrap_err();
        assert!(
            e.contains("unmap") && e.contains("zeroes after unmap"),
            "{e}"
        );
        let e = c.admits(RaidLevel::Raid5, RW_ONLY).unwrap_err();
        assert!(e.contains("write-zeroes"), "{e}");
        // An array that offers nothing takes any member.
        assert_eq!(Caps::default().admits(RaidLevel::Raid1, RW_ONLY), Ok(()));
        let c = Caps::of(RaidLevel::Raid1, &[NO_PROMISE, NO_PROMISE]);
        assert_eq!(c.admits(RaidLevel::Raid1, NO_PROMISE), Ok(()));
        assert!(c.admits(RaidLevel::Raid1, RW_ONLY).is_err());
    }
}
