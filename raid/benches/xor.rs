//! Parity XOR throughput against memory bandwidth: `xor_gen` of 2, 3 and 4 sources of 32 KiB
//! (a strip), 128 KiB and 1 MiB with every kernel this CPU runs, and a `copy_from_slice`
//! (memcpy) of the same sizes as the bandwidth reference.
//!
//! Throughput is in source bytes: for `xor_gen` the bytes of all sources (the data the parity
//! covers), for memcpy the bytes copied. Memory traffic per reported byte is therefore
//! `(n + 1) / n` for XOR of `n` sources and 2 for memcpy.
//! Run: `cargo bench -p keel-raid --bench xor [FILTER]`.
#![expect(missing_docs)] // criterion_group! makes an undocumented `pub fn`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keel_raid::xor::{implementation, kernels, xor_gen_using};
use std::time::Duration;

const SIZES: [(usize, &str); 3] = [
    (32 << 10, "32KiB"),
    (128 << 10, "128KiB"),
    (1 << 20, "1MiB"),
];

/// Deterministic, non-trivial buffer contents.
fn filled(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn xor_bench(c: &mut Criterion) {
    eprintln!("xor kernel in use: {}", implementation());
    let mut g = c.benchmark_group("xor_gen");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    for (len, label) in SIZES {
        let backing: Vec<Vec<u8>> = (0..4).map(|i| filled(len, i + 1)).collect();
        let mut dst = vec![0u8; len];
        for n in 2..=4 {
            let srcs: Vec<&[u8]> = backing[..n].iter().map(|v| &v[..]).collect();
            g.throughput(Throughput::Bytes((n * len) as u64));
            for k in kernels().into_iter().filter(|&k| k != "portable") {
                g.bench_function(format!("{k}/{n}src/{label}"), |b| {
                    b.iter(|| xor_gen_using(k, black_box(&mut dst), black_box(&srcs)))
                });
            }
        }
    }
    g.finish();

    let mut g = c.benchmark_group("memcpy");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    for (len, label) in SIZES {
        let src = filled(len, 9);
        let mut dst = vec![0u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(label, |b| {
            b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
}

criterion_group!(benches, xor_bench);
criterion_main!(benches);
