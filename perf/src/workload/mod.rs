//! The workload engine: what to run ([`spec`]), where each I/O goes ([`offsets`], [`rng`]),
//! `--rate` ([`rate`]), `--verify` ([`verify`]), what it runs against ([`target`]: the trait and
//! local bdevs; [`nvmf_tcp`]: a remote namespace over NVMe/TCP) and the per-core closed loop
//! ([`job`]).

pub mod job;
pub mod nvmf_tcp;
pub mod offsets;
pub mod rate;
pub mod rng;
pub mod spec;
pub mod target;
pub mod verify;

pub use job::{Job, Placement};
pub use nvmf_tcp::{NvmfTcpTarget, NvmfTcpTargetFactory};
pub use offsets::{Layout, OffsetGen};
pub use spec::{Distribution, Pattern, Range, WorkloadSpec};
pub use target::{BdevTarget, BdevTargetFactory, Direction, Target, TargetError, TargetFactory};
