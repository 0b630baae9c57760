//! Safe layer over the verbs and RDMA CM bindings. Every object owns its handle and frees it
//! exactly once in `Drop`; objects keep what they depend on alive through `Arc`s, so the C
//! destruction order is enforced by the type system:
//!
//! ```text
//! Context ◀─ ProtectionDomain ◀─ MemoryRegion
//!    ▲               ▲  ◀────── SharedReceiveQueue
//!    ├── CompChannel ◀─ CompletionQueue
//!    │               ▲          ▲
//! CmEventChannel ◀─ CmId ─ owns QueuePair (destroyed before the id; holds PD, CQs, SRQ)
//! ```
//!
//! A QP is destroyed before its CQs, SRQ and PD; an MR before its PD; a PD and CQ before their
//! device context; every CM id before its event channel. The per-I/O calls (post, poll) are in
//! [`data_path`] and never allocate.

mod cm;
mod cq;
pub mod data_path;
mod device;
mod error;
mod mr;
mod pd;
mod qp;
mod srq;

pub use cm::{CmEvent, CmEventChannel, CmEventKind, CmId, CmIdHandle, ConnParam};
pub use cq::{CompChannel, CompletionQueue};
pub use data_path::{PostError, RecvWr, SendWr, Sge, WcOpcode, WorkCompletion};
pub use device::{cm_contexts, Context, Device, DeviceAttr, DeviceList};
pub use error::Error;
pub use mr::{Access, MemoryRegion};
pub use pd::ProtectionDomain;
pub use qp::{QpInit, QueuePair};
pub use srq::SharedReceiveQueue;
