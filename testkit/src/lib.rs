//! Keel's test kit, one copy of what the crates' tests and benches share (a dev-dependency
//! only; nothing here runs in keel-tgt):
//!
//! - [`counting`]: a counting global allocator for "no heap allocation per I/O in steady state"
//!   (docs/ARCHITECTURE.md §3.6) and the functions that count a run;
//! - [`reactors`]: one reactor runtime per test process, running a task on a core and getting
//!   its result back (bounded), small futures to wait inside reactor tasks;
//! - [`closed_loop`] (feature `bdev`): a closed loop of `qd` I/Os on one bdev channel, each
//!   completion submitting the slot's next I/O;
//! - [`io`] (feature `bdev`): submit one I/O or a batch and await the completions, iovecs over
//!   test buffers;
//! - [`probe`]: bounded waits for a condition, from outside the reactors;
//! - [`nvmf`] (feature `nvmf`): an in-process NVMe/TCP target with malloc namespaces on a
//!   free loopback port;
//! - [`rpc`] (feature `rpc`): a keel-rpc server in the test process and rpc.py-style calls;
//! - [`json_rpc`]: a JSON-RPC client connection over a Unix socket (rpc.py's framing).

#[cfg(feature = "bdev")]
pub mod closed_loop;
pub mod counting;
#[cfg(feature = "bdev")]
pub mod fixtures;
#[cfg(feature = "bdev")]
pub mod io;
pub mod json_rpc;
#[cfg(feature = "nvmf")]
pub mod nvmf;
#[cfg(feature = "bdev")]
pub mod prelude;
pub mod probe;
pub mod reactors;
#[cfg(feature = "rpc")]
pub mod rpc;
