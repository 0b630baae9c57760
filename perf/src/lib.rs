//! `keel-perf`: Keel's benchmark tool (docs/ARCHITECTURE.md §8), as a library the binary and the tests
//! share. It drives a closed-loop block workload on every core of a mask against a [`Target`]
//! (a local bdev, or a remote namespace through keel-nvmf's NVMe/TCP initiator), measures
//! latency into HDR histograms and reports text, fio-compatible JSON and an SVG plot.
//!
//! Module map:
//! - `workload`: the engine — spec, offsets, PRNG/Zipf, rate limit, verify format, the
//!   [`Target`] trait and its bdev implementation, the per-core job (HOT PATH).
//! - `engine`: starting one job per core, the per-second samples, collecting results.
//! - `stats`: histograms and counters, their merge, live counters for the progress line.
//! - `report`: text table, fio JSON, SVG plot.
//! - `cli`: command-line options and their validation; `app`: the binary's run.
//!
//! [`Target`]: workload::Target

pub mod app;
pub mod cli;
pub mod engine;
pub mod report;
pub mod stats;
pub mod workload;
