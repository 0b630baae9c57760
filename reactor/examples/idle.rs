//! CPU used by an idle reactor: one core, a 1-second timed poller, nothing else.
//!
//! `cargo run --release -p keel-reactor --example idle -- [SECONDS] [--busy]`
//! (interrupt mode by default; `--busy` for busy polling, for comparison). Prints the process
//! CPU time (getrusage) over the run; `/usr/bin/time -v` on the binary gives the same figure.

use keel_reactor::{
    reactor_stats, register_poller, request_shutdown, tick_rate, CpuMask, PollStatus, Runtime,
    RuntimeOptions,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zero-initialised struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let mut secs = 10u64;
    let mut interrupt_mode = true;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--busy" => interrupt_mode = false,
            s => match s.parse() {
                Ok(n) => secs = n,
                Err(_) => {
                    eprintln!("usage: idle [SECONDS] [--busy]");
                    std::process::exit(2);
                }
            },
        }
    }
    let (cpumask, pin_threads) = match CpuMask::parse_and_validate("0x1") {
        Ok(mask) => (mask, true),
        Err(_) => (CpuMask::parse("0x1").expect("a literal, valid mask"), false),
    };
    tick_rate(); // calibrate before measuring
    let runs = Arc::new(AtomicU64::new(0));
    let runs2 = runs.clone();
    let cpu0 = cpu_time();
    let wall0 = Instant::now();
    let opts = RuntimeOptions {
        cpumask,
        interrupt_mode,
        pin_threads,
    };
    let rt = Runtime::start(opts, move || {
        register_poller("tick", Some(Duration::from_secs(1)), move || {
            runs2.fetch_add(1, Ordering::Relaxed);
            PollStatus::Idle
        });
    })
    .expect("start runtime");
    std::thread::sleep(Duration::from_secs(secs));
    let stats = reactor_stats();
    request_shutdown();
    rt.join();
    let cpu = cpu_time() - cpu0;
    let wall = wall0.elapsed();
    let mode = if interrupt_mode {
        "interrupt mode"
    } else {
        "busy polling"
    };
    println!(
        "{mode}: wall {:.2} s, CPU {:.4} s = {:.3}% of one core; timer ran {} times",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        runs.load(Ordering::Relaxed)
    );
    for s in stats {
        println!(
            "core {}: busy {} ticks, idle {} ticks, {} pollers",
            s.lcore, s.busy_ticks, s.idle_ticks, s.pollers
        );
    }
}
