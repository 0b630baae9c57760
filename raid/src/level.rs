//! RAID levels and the level table: per level its names, on-disk code, member rules, layout,
//! capabilities, and the entry points of its data path (SPDK's `raid_bdev_module`).

use crate::caps::{Caps, MemberCaps};
use crate::channel::{Chan, OpKind, PlanResult, StripeOp};
use crate::geometry::{Extent, Geometry};
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

    /// The level's entry in the level table: everything the generic driver knows about it.
    #[inline]
    pub(crate) fn module(self) -> &'static LevelModule {
        MODULES[self as usize]
    }

    /// Parse the `raid_level` parameter of `bdev_raid_create`: SPDK's names (`raid0`/`0`,
    /// `raid1`/`1`, `concat`, `raid5f`) and Keel's `raid5`/`5`, case-insensitively.
    pub fn parse(s: &str) -> Option<RaidLevel> {
        let s = s.to_ascii_lowercase();
        MODULES
            .iter()
            .find(|m| m.name == s || m.aliases.contains(&s.as_str()))
            .map(|m| m.level)
    }

    /// The name `bdev_raid_get_bdevs` reports and `save_config` writes.
    pub fn as_str(self) -> &'static str {
        self.module().name
    }

    /// The level's code in the superblock.
    pub fn code(self) -> u8 {
        self.module().code
    }

    /// The level for a superblock code, `None` for an unknown one.
    pub fn from_code(code: u8) -> Option<RaidLevel> {
        MODULES.iter().find(|m| m.code == code).map(|m| m.level)
    }

    /// Fewest members an array of this level may have.
    pub fn min_members(self) -> usize {
        self.module().min_members
    }

    /// How many members may be missing or failed while the array stays online.
    pub fn redundancy(self, members: usize) -> usize {
        (self.module().redundancy)(members)
    }

    /// Whether the level stripes data in strips of `strip_size_kb` (raid1 ignores the strip size).
    pub fn uses_strips(self) -> bool {
        matches!(self.module().strip, Strip::Striped { .. })
    }
}

/// A host I/O step of a level: dispatch what is left of parked host I/O
/// ([`crate::channel::HostRaw`], progress in its context); false when it must wait for a free
/// stripe operation or member descriptor (the channel resumes it from its poll).
pub(crate) type SubmitFn = fn(&Chan, crate::channel::HostRaw) -> bool;

/// A level's code for one kind of stripe operation ([`crate::channel::OpKind`]).
pub(crate) struct OpFns {
    /// Plan the operation: which member reads, which member writes, which buffers.
    pub plan: fn(&Chan, &mut StripeOp) -> PlanResult,
    /// The compute step of the write phase (parity, rebuilt data), once the reads are in
    /// (`None`: nothing to compute).
    pub compute: Option<fn(&Chan, &mut StripeOp)>,
}

/// What a free operation refers to before it is taken for a kind.
pub(crate) static NO_OP_FNS: OpFns = OpFns {
    plan: |_, _| unreachable!("a free stripe operation is never planned"),
    compute: None,
};

/// A level's stripe (raid5) or region (raid1) operations.
pub(crate) struct StripeOpFns {
    /// Host writes, unmaps and write-zeroes.
    pub write: OpFns,
    /// Host reads that need an operation (`None`: the level never reads through one).
    pub read: Option<OpFns>,
    /// Rebuild and resync of one unit.
    pub rebuild: OpFns,
}

/// How a level uses `strip_size_kb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strip {
    /// Data is striped in strips of `strip_size_kb` (a power of two), at most `max_bytes`.
    Striped {
        /// Largest strip, bytes (`None`: no limit).
        max_bytes: Option<u64>,
    },
    /// No strips (`strip_size_kb` must be absent or 0); the unit of serialization and rebuild
    /// is a region of this many bytes.
    Region {
        /// Region size, bytes.
        bytes: u64,
    },
}

/// How a redundant level makes its copies consistent after an unclean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Recompute each stripe's parity from its data: needs every member active, one operation
    /// per stripe (targeting its parity member), progress kept in `resynced_stripes` (writes
    /// to stripes not yet resynced do not trust the old parity); a degraded array cannot be
    /// resynced (write hole).
    Parity,
    /// Copy one active member over the other active ones: needs two active members.
    Mirror,
}

impl Resync {
    /// What the log calls it.
    pub fn name(self) -> &'static str {
        match self {
            Resync::Parity => "parity",
            Resync::Mirror => "mirror",
        }
    }

    /// Whether a resync can run with `active` of `members` members active.
    pub fn can_run(self, active: usize, members: usize) -> bool {
        match self {
            Resync::Parity => active == members,
            Resync::Mirror => active >= 2,
        }
    }
}

/// One RAID level as the generic driver sees it (SPDK's `raid_bdev_module`): names, member
/// rules, layout, capabilities, and the entry points of its data path. The generic code
/// (dispatch, channel, rebuild, create/assemble, RPC) asks this table and never names a level.
pub(crate) struct LevelModule {
    /// The level.
    pub level: RaidLevel,
    /// Its name (RPC, config, logs).
    pub name: &'static str,
    /// Other names `bdev_raid_create` accepts (lower case).
    pub aliases: &'static [&'static str],
    /// Its superblock code.
    pub code: u8,
    /// Fewest members.
    pub min_members: usize,
    /// How many of `members` members may be gone while the array stays online.
    pub redundancy: fn(usize) -> usize,
    /// Data strips per stripe for `members` members.
    pub data_members: fn(u32) -> u64,
    /// Whether a stripe operation (and the dispatch unit of a host I/O) covers a whole stripe
    /// (`data_members` strips) rather than one strip/region.
    pub stripe_unit: bool,
    /// Where a run of array blocks lands (levels whose data blocks each live on one member:
    /// raid0, concat, raid5's data strips).
    pub map: Option<fn(&Geometry, u64, u64) -> Extent>,
    /// How it uses `strip_size_kb`.
    pub strip: Strip,
    /// What an array offers beyond read/write/flush/reset, from what its members offer.
    pub caps: fn(&[MemberCaps]) -> Caps,
    /// Host reads.
    pub read: SubmitFn,
    /// Host writes, unmaps and write-zeroes (flush and reset fan out to every member).
    pub write: SubmitFn,
    /// Its stripe/region operations (`None`: it has none).
    pub ops: Option<StripeOpFns>,
    /// How it resyncs after an unclean shutdown (`None`: no redundancy, nothing to resync).
    pub resync: Option<Resync>,
}

impl LevelModule {
    /// The level's code for stripe operations of `kind`.
    #[inline]
    pub fn op_fns(&'static self, kind: OpKind) -> &'static OpFns {
        let ops = self
            .ops
            .as_ref()
            .expect("only a level with stripe operations takes one");
        match kind {
            OpKind::Write => &ops.write,
            OpKind::Read => ops
                .read
                .as_ref()
                .expect("only a level that reads through stripe operations takes one to read"),
            OpKind::Rebuild | OpKind::Resync => &ops.rebuild,
        }
    }
}

/// The level table, indexed by `RaidLevel as usize`.
static MODULES: [&LevelModule; 4] = [
    &crate::raid0::RAID0,
    &crate::raid0::CONCAT,
    &crate::raid1::RAID1,
    &crate::raid5::RAID5,
];

// Every level sits at its own index, so `RaidLevel::module` is one load.
const _: () = {
    let mut i = 0;
    while i < RaidLevel::ALL.len() {
        assert!(RaidLevel::ALL[i] as usize == i);
        i += 1;
    }
};

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

    #[test]
    fn every_level_sits_at_its_index_with_its_own_name_and_code() {
        for (i, l) in RaidLevel::ALL.into_iter().enumerate() {
            assert_eq!(MODULES[i].level, l);
        }
        let mut names: Vec<&str> = MODULES
            .iter()
            .flat_map(|m| m.aliases.iter().copied())
            .collect();
        names.extend(MODULES.iter().map(|m| m.name));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a name parses to one level");
        assert!(RaidLevel::Raid0.module().ops.is_none() && RaidLevel::Raid5.module().ops.is_some());
    }
}
