//! RAID levels: their RPC names, their on-disk codes and their member-count rules.

use std::fmt;

/// A RAID level Keel builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping without redundancy.
    Raid0,
    /// Members one after the other, no striping, no redundancy.
    Concat,
    /// Mirroring: every member holds all the data.
    Raid1,
    /// Striping with one rotating (left-symmetric) parity strip per stripe.
    Raid5,
}

impl RaidLevel {
    /// Every level, in on-disk code order.
    pub const ALL: [RaidLevel; 4] = [
        RaidLevel::Raid0,
        RaidLevel::Concat,
        RaidLevel::Raid1,
        RaidLevel::Raid5,
    ];

    /// Parse the `raid_level` parameter of `bdev_raid_create`: SPDK's names (`raid0`/`0`,
    /// `raid1`/`1`, `concat`, `raid5f`) and Keel's `raid5`/`5`, case-insensitively.
    pub fn parse(s: &str) -> Option<RaidLevel> {
        match s.to_ascii_lowercase().as_str() {
            "raid0" | "0" => Some(RaidLevel::Raid0),
            "concat" => Some(RaidLevel::Concat),
            "raid1" | "1" => Some(RaidLevel::Raid1),
            "raid5" | "5" | "raid5f" => Some(RaidLevel::Raid5),
            _ => None,
        }
    }

    /// The name `bdev_raid_get_bdevs` reports and `save_config` writes.
    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Concat => "concat",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid5 => "raid5",
        }
    }

    /// The level's code in the superblock.
    pub fn code(self) -> u8 {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Concat => 1,
            RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 5,
        }
    }

    /// The level for a superblock code, `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<RaidLevel> {
        RaidLevel::ALL.into_iter().find(|l| l.code() == code)
    }

    /// Fewest members an array of this level may have.
    pub fn min_members(self) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Concat => 1,
            RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 3,
        }
    }

    /// How many members may be missing or failed while the array stays online.
    pub fn redundancy(self, members: usize) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Concat => 0,
            RaidLevel::Raid1 => members.saturating_sub(1),
            RaidLevel::Raid5 => 1,
        }
    }

    /// Whether the level stripes data in strips of `strip_size_kb` (raid1 ignores the strip size).
    pub fn uses_strips(self) -> bool {
        !matches!(self, RaidLevel::Raid1)
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_names_parse() {
        assert_eq!(RaidLevel::parse("raid0"), Some(RaidLevel::Raid0));
        assert_eq!(RaidLevel::parse("0"), Some(RaidLevel::Raid0));
        assert_eq!(RaidLevel::parse("RAID1"), Some(RaidLevel::Raid1));
        assert_eq!(RaidLevel::parse("concat"), Some(RaidLevel::Concat));
        assert_eq!(RaidLevel::parse("raid5f"), Some(RaidLevel::Raid5));
        assert_eq!(RaidLevel::parse("raid5"), Some(RaidLevel::Raid5));
        assert_eq!(RaidLevel::parse("raid6"), None);
        assert_eq!(RaidLevel::parse(""), None);
    }

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for l in RaidLevel::ALL {
            assert_eq!(RaidLevel::from_code(l.code()), Some(l));
            assert_eq!(RaidLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(RaidLevel::from_code(3), None);
        assert_eq!(RaidLevel::from_code(255), None);
    }

    #[test]
    fn redundancy_rules() {
        assert_eq!(RaidLevel::Raid0.redundancy(4), 0);
        assert_eq!(RaidLevel::Raid1.redundancy(3), 2);
        assert_eq!(RaidLevel::Raid5.redundancy(5), 1);
        assert_eq!(RaidLevel::Raid5.min_members(), 3);
    }
}
