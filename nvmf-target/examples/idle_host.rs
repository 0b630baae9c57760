//! An idle NVMe/TCP host, for measuring what a target does while a host is connected and
//! quiet (`perf/idle.sh`): it connects an admin queue (with a keep-alive timeout) and I/O
//! queue 1 like a Linux host, then only sends Keep Alive every KATO/2 (as Linux does) until
//! the time is up.
//!
//! `cargo run --release -p keel-nvmf --example idle_host -- ADDR:PORT NQN SECONDS [KATO_MS]`
//! (KATO defaults to Linux's 5000 ms). It prints `connected` once both queues are up.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{bring_up_addr, opc};
use keel_nvme::cmd::NvmeCmd;
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: idle_host ADDR:PORT NQN SECONDS [KATO_MS]");
        std::process::exit(2);
    }
    let (addr, nqn) = (&args[0], &args[1]);
    let secs: f64 = args[2].parse().expect("SECONDS is a number");
    let kato_ms: u32 = args
        .get(3)
        .map_or(5000, |k| k.parse().expect("KATO_MS is a number"));
    let mut h = bring_up_addr(addr, nqn, false, false, kato_ms);
    println!("connected");
    std::io::stdout().flush().expect("stdout");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let period = Duration::from_millis(u64::from(kato_ms / 2).max(1));
    let mut sent = 0u64;
    while Instant::now() < end {
        std::thread::sleep(period.min(end.saturating_duration_since(Instant::now())));
        let sqe = NvmeCmd {
            opc: opc::KEEP_ALIVE,
            ..Default::default()
        };
        h.admin.ok(sqe, &[], 0);
        sent += 1;
    }
    eprintln!("idle_host: {sent} Keep Alive sent in {secs} s; disconnecting");
}
