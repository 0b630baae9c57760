//! Message rates of the reactor mailboxes.
//!
//! - `cross_core`: a poller on core A sends closures capturing a u64 (stored inline in the
//!   ring) to core B in batches of 256, keeping at most 16384 in flight; measured until B ran
//!   them all. Throughput = messages/s.
//! - `cross_core_boxed`: the same with 64-byte captures (boxed: one allocation on A, freed on B).
//! - `same_core`: as `cross_core`, with A sending to itself.
//! - `ping_pong`: one message at a time A → B → A; the time per round trip.
//!
//! `cargo bench -p keel-reactor --bench messages`

use criterion::{black_box, Criterion, Throughput};
use keel_reactor::{
    register_poller, request_shutdown, send_to, unregister_poller, CpuMask, PollStatus, Runtime,
    RuntimeOptions,
};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH: u64 = 256;
const WINDOW: u64 = 16384;

/// Messages run by the receiving core (only it writes).
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Count one message on the receiving core (its only writer: no read-modify-write needed).
fn received() {
    RECEIVED.store(RECEIVED.load(Ordering::Relaxed) + 1, Ordering::Release);
}

fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Send `n` messages from core `from` to core `to` (flow-controlled), return the time taken.
/// With `boxed`, each message captures 64 bytes (too big to store inline).
fn stream(from: u32, to: u32, n: u64, boxed: bool) -> Duration {
    let base = RECEIVED.load(Ordering::Acquire);
    let target = base + n;
    let start = Instant::now();
    send_to(from, move || {
        let sent = Rc::new(Cell::new(0u64));
        let id = Rc::new(Cell::new(None));
        let id2 = id.clone();
        let pid = register_poller("bench-sender", None, move || {
            let done = sent.get();
            if done == n {
                if let Some(id) = id2.take() {
                    unregister_poller(id);
                }
                return PollStatus::Idle;
            }
            let in_flight = base + done - RECEIVED.load(Ordering::Relaxed);
            if in_flight >= WINDOW {
                return PollStatus::Idle;
            }
            let batch = BATCH.min(n - done);
            for seq in done..done + batch {
                if boxed {
                    let payload = [seq; 8];
                    send_to(to, move || {
                        black_box(payload);
                        received();
                    })
                } else {
                    send_to(to, move || {
                        black_box(seq);
                        received();
                    })
                }
                .expect("send");
            }
            sent.set(done + batch);
            PollStatus::Busy
        });
        id.set(Some(pid));
    })
    .expect("send");
    wait_for(&RECEIVED, target);
    start.elapsed()
}

/// Round trips completed by `ping_pong`.
static PONGS: AtomicU64 = AtomicU64::new(0);

fn ping(a: u32, b: u32, left: u64) {
    if left == 0 {
        return;
    }
    send_to(b, move || {
        send_to(a, move || {
            PONGS.fetch_add(1, Ordering::Release);
            ping(a, b, left - 1);
        })
        .expect("send");
    })
    .expect("send");
}

fn ping_pong(a: u32, b: u32, n: u64) -> Duration {
    let target = PONGS.load(Ordering::Acquire) + n;
    let start = Instant::now();
    send_to(a, move || ping(a, b, n)).expect("send");
    wait_for(&PONGS, target);
    start.elapsed()
}

fn main() {
    let (cpumask, pin_threads) = match CpuMask::parse_and_validate("[0,1]") {
        Ok(mask) => (mask, true),
        Err(_) => (
            CpuMask::parse("[0,1]").expect("a literal, valid mask"),
            false,
        ),
    };
    let opts = RuntimeOptions {
        cpumask,
        interrupt_mode: false,
        pin_threads,
    };
    let rt = Runtime::start(opts, || {}).expect("start runtime");

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    let mut g = c.benchmark_group("messages");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cross_core", |b| b.iter_custom(|n| stream(0, 1, n, false)));
    g.bench_function("cross_core_boxed", |b| {
        b.iter_custom(|n| stream(0, 1, n, true))
    });
    g.bench_function("same_core", |b| b.iter_custom(|n| stream(1, 1, n, false)));
    g.bench_function("ping_pong", |b| b.iter_custom(|n| ping_pong(0, 1, n)));
    g.finish();
    c.final_summary();

    request_shutdown();
    rt.join();
}
