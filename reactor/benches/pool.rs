//! Costs of the per-core buffer pool (see `keel_reactor::pool`).
//!
//! - `alloc_free_4k`: take and free one 4 KiB buffer on its home thread (time per pair).
//! - `mixed_sizes`: keep a window of 64 buffers of sizes drawn from every class, replacing the
//!   oldest on each step (time per free + alloc).
//! - `foreign_free`: the home thread allocates 4 KiB buffers and hands them over a bounded
//!   queue to another thread, which drops them (back home through the remote-free queue, drained
//!   by the home's next allocs). Throughput = buffers/s.
//!
//! `cargo bench -p keel-reactor --bench pool`
#![expect(missing_docs)] // criterion_group! makes an undocumented `pub fn`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use keel_reactor::pool::{self, DmaBuf, PoolError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn alloc_free_4k(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    drop(pool::alloc(4096).expect("warm-up"));
    g.bench_function("alloc_free_4k", |b| {
        b.iter(|| {
            let buf = pool::alloc(black_box(4096)).expect("pool has room");
            black_box(buf.as_ptr());
        })
    });
    g.finish();
}

fn mixed_sizes(c: &mut Criterion) {
    const WINDOW: usize = 64;
    let sizes: Vec<usize> = {
        // A fixed pseudo-random sequence (xorshift) over 1 B ..= 128 KiB, skewed to small sizes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let class = (x % 9) as u32;
                ((x >> 8) as usize % (512usize << class)).max(1)
            })
            .collect()
    };
    let mut window: VecDeque<DmaBuf> = sizes[..WINDOW]
        .iter()
        .map(|&s| pool::alloc(s).expect("pool has room"))
        .collect();
    let mut i = WINDOW;
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mixed_sizes", |b| {
        b.iter(|| {
            window.pop_front();
            let buf = pool::alloc(sizes[i % sizes.len()]).expect("pool has room");
            window.push_back(buf);
            i += 1;
        })
    });
    g.finish();
}

fn foreign_free(c: &mut Criterion) {
    const QUEUE: usize = 1024;
    let queue: Arc<ArrayQueue<DmaBuf>> = Arc::new(ArrayQueue::new(QUEUE));
    let stop = Arc::new(AtomicBool::new(false));
    let freer = {
        let (queue, stop) = (queue.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match queue.pop() {
                    Some(b) => drop(b),
                    None => std::hint::spin_loop(),
                }
            }
            while let Some(b) = queue.pop() {
                drop(b);
            }
        })
    };
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("foreign_free", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for _ in 0..n {
                let mut buf = loop {
                    match pool::alloc(4096) {
                        Ok(buf) => break buf,
                        Err(PoolError::Exhausted) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                };
                while let Err(back) = queue.push(buf) {
                    buf = back;
                    std::thread::yield_now();
                }
            }
            let elapsed = start.elapsed();
            // Let the freer catch up before the next sample (not timed).
            while !queue.is_empty() {
                std::thread::yield_now();
            }
            elapsed
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    freer.join().expect("freer thread");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = alloc_free_4k, mixed_sizes, foreign_free }
criterion_main!(benches);
