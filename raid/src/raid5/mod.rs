//! HOT PATH: raid5 — striping with one rotating (left-symmetric) parity strip per stripe.
//!
//! - [`write`]: writes (and unmap/write-zeroes), one stripe operation per stripe touched.
//! - [`read`]: reads: straight from the members holding the data when they are active (no
//!   stripe operation), else through a stripe operation (a piece on a member that is not
//!   active: reconstructed from parity, or read below a rebuild's watermark).

pub(crate) mod read;
pub(crate) mod write;

use crate::caps::Caps;
use crate::dispatch::write_ops;
use crate::geometry::Geometry;
use crate::level::{LevelModule, OpFns, RaidLevel, Resync, Strip, StripeOpFns};

/// Largest strip for raid5 (parity buffers come from the pool's largest class).
pub(crate) const MAX_STRIP_BYTES: u64 = keel_reactor::pool::MAX_CLASS as u64;

/// raid5 in the level table.
pub(crate) static RAID5: LevelModule = LevelModule {
    level: RaidLevel::Raid5,
    name: "raid5",
    aliases: &["5", "raid5f"],
    code: 5,
    min_members: 3,
    redundancy: |_| 1,
    data_members: |n| u64::from(n) - 1,
    stripe_unit: true,
    map: Some(Geometry::map_parity_striped),
    strip: Strip::Striped {
        max_bytes: Some(MAX_STRIP_BYTES),
    },
    caps: Caps::of_parity,
    read: read::submit,
    write: write_ops,
    ops: Some(StripeOpFns {
        write: OpFns {
            plan: write::plan,
            compute: Some(write::compute),
        },
        read: Some(OpFns {
            plan: read::plan,
            compute: Some(read::compute),
        }),
        rebuild: OpFns {
            plan: crate::rebuild::plan_parity,
            compute: Some(crate::rebuild::compute_parity),
        },
    }),
    resync: Some(Resync::Parity),
};
