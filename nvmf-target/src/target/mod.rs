//! The target model: subsystems, namespaces, hosts, listeners, controllers, queue pairs and
//! command execution.
//!
//! Threading (docs/ARCHITECTURE.md §1, §6):
//! - The control state (transports, subsystems, their namespaces/hosts/listeners, the list of
//!   controllers) is global, behind mutexes, and changed on the main core by the RPCs. The I/O
//!   path never touches it.
//! - A controller lives on the core of its admin queue ([`ctrlr`]); its I/O queues may live on
//!   other cores and reach it by message (Connect, queue loss, disconnect requests).
//! - Each core keeps, per subsystem it serves I/O queues for, a namespace table (nsid → bdev
//!   channel, [`nstable`]), read without locks by the I/O path and updated by message.
//!
//! Module map:
//! - `state`: global target state (transport factories and instances, listeners, subsystems,
//!   the discovery generation counter) and the control operations on it.
//! - `subsystem`: [`Subsystem`](subsystem::Subsystem) and namespace objects.
//! - `nstable`: per-core namespace tables and their fan-out updates.
//! - `ctrlr`: controllers: registers, features, AERs, keep-alive, destruction.
//! - `qpair`: [`Qpair`]: command dispatch and the Fabrics Connect sequence.
//! - `admin`, `identify`, `logpage`: admin commands and the data they return.
//! - `io`: HOT PATH: NVM I/O commands on bdev channels.
//! - `rpc`: the `nvmf_*` JSON-RPC methods and the `nvmf` config subsystem.
//! - `stats`: per-core poll group counters (`nvmf_get_stats`), plain cells on each core.

mod admin;
mod ctrlr;
mod identify;
mod io;
mod logpage;
mod nstable;
mod qpair;
pub mod rpc;
mod state;
mod stats;
mod subsystem;
#[cfg(test)]
mod tests;

pub use qpair::Qpair;
pub use rpc::register_rpcs;
pub use state::{
    add_host, add_listener, add_namespace, allow_any_host, create_subsystem, create_transport,
    delete_subsystem, register_transport_factory, remove_host, remove_listener, remove_namespace,
    shutdown, NamespaceOpts, NvmfError, SubsystemOpts, TransportFactory, DISCOVERY_NQN,
};
