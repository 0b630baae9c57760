//! XOR kernels for raid5 parity (HOT PATH): `dst ^= src` and `dst = src0 ^ src1 ^ …`.
//!
//! Pure functions over byte slices of any length and alignment. On x86_64 the kernels use AVX2
//! when the CPU has it and SSE2 (always present on x86_64) otherwise; the choice is made once, on
//! first use, and cached. Other architectures use a portable 64-bit-word kernel. Every kernel
//! makes a single pass over memory whatever the number of sources: for each 4-vector block it
//! loads the first source, XORs in the same block of every other source, and stores the result.
//!
//! Bytes before the first vector-aligned destination address and after the last whole vector are
//! done by the portable kernel, so stores in the vector loop never split a cache line.

#![deny(unsafe_op_in_unsafe_fn)]

use std::sync::atomic::{AtomicU8, Ordering};

/// `dst ^= src`, byte for byte.
///
/// # Panics
/// If `dst.len() != src.len()` (callers guarantee equal lengths; this is a bug check).
#[inline]
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "xor_into: destination and source lengths differ"
    );
    let len = dst.len();
    let d = dst.as_mut_ptr();
    // SAFETY: `d` is valid for reads and writes of `len` bytes (it comes from `dst`) and `src` has
    // `len` bytes (checked above). The kernel reads each byte of `d` before writing it.
    unsafe { run(selected(), d, d, &[src], len) }
}

/// `dst = srcs[0] ^ srcs[1] ^ …`, in one pass over memory. With one source this is a copy.
///
/// # Panics
/// If `srcs` is empty or a source's length differs from `dst.len()` (callers guarantee both; this
/// is a bug check).
#[inline]
pub fn xor_gen(dst: &mut [u8], srcs: &[&[u8]]) {
    xor_gen_with(selected(), dst, srcs)
}

/// The name of the kernel [`xor_into`] and [`xor_gen`] use on this machine: `"avx2"`, `"sse2"` or
/// `"portable"` (for logs and benchmark reports).
pub fn implementation() -> &'static str {
    selected().name()
}

/// The names of the kernels this CPU runs, from the simplest to the one [`implementation`]
/// picks (benches compare them with [`xor_gen_using`]).
pub fn kernels() -> Vec<&'static str> {
    supported().into_iter().map(Kernel::name).collect()
}

/// [`xor_gen`] with the kernel named `kernel` (one of [`kernels`]).
///
/// # Panics
/// If this CPU does not run that kernel, and as [`xor_gen`].
pub fn xor_gen_using(kernel: &str, dst: &mut [u8], srcs: &[&[u8]]) {
    let k = supported()
        .into_iter()
        .find(|k| k.name() == kernel)
        .expect("xor_gen_using: a kernel this CPU runs");
    xor_gen_with(k, dst, srcs)
}

/// Every kernel this CPU runs, the best last.
fn supported() -> Vec<Kernel> {
    #[allow(unused_mut)]
    let mut v = vec![Kernel::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        v.push(Kernel::Sse2);
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push(Kernel::Avx2);
        }
    }
    v
}

/// One XOR kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// 64-bit words, any architecture.
    Portable,
    /// 128-bit SSE2 vectors (x86_64 baseline).
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// 256-bit AVX2 vectors (detected at run time).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => "sse2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
        }
    }

    fn code(self) -> u8 {
        match self {
            Kernel::Portable => 1,
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => 2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Kernel> {
        match code {
            1 => Some(Kernel::Portable),
            #[cfg(target_arch = "x86_64")]
            2 => Some(Kernel::Sse2),
            #[cfg(target_arch = "x86_64")]
            3 => Some(Kernel::Avx2),
            _ => None,
        }
    }

    /// The best kernel this CPU runs.
    fn detect() -> Kernel {
        supported().pop().unwrap_or(Kernel::Portable)
    }
}

/// The selected kernel's code; 0 until the first call detects it.
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// The kernel to use: detected on first use, then one relaxed load.
#[inline]
fn selected() -> Kernel {
    if let Some(k) = Kernel::from_code(SELECTED.load(Ordering::Relaxed)) {
        return k;
    }
    let k = Kernel::detect();
    SELECTED.store(k.code(), Ordering::Relaxed);
    k
}

/// [`xor_gen`] with an explicit kernel (tests run every kernel the CPU supports).
#[inline]
fn xor_gen_with(kernel: Kernel, dst: &mut [u8], srcs: &[&[u8]]) {
    let (first, rest) = srcs
        .split_first()
        .expect("xor_gen: at least one source is required");
    let len = dst.len();
    assert!(
        srcs.iter().all(|s| s.len() == len),
        "xor_gen: a source's length differs from the destination's"
    );
    // SAFETY: `dst` is valid for writes of `len` bytes, `first` and every slice of `rest` for
    // reads of `len` bytes (checked above). A `&mut` destination cannot overlap shared sources.
    unsafe { run(kernel, dst.as_mut_ptr(), first.as_ptr(), rest, len) }
}

/// `dst[i] = first[i] ^ rest[0][i] ^ rest[1][i] ^ …` for `i < len`.
///
/// # Safety
/// `dst` must be valid for writes and `first` for reads of `len` bytes; every slice of `rest`
/// must hold at least `len` bytes. `first` may equal `dst` (each byte is read before it is
/// written); no other overlap with `dst` is allowed. `kernel` must be supported by the CPU.
#[inline]
unsafe fn run(kernel: Kernel, dst: *mut u8, first: *const u8, rest: &[&[u8]], len: usize) {
    let done = match kernel {
        Kernel::Portable => 0,
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => {
            let head = head_len(dst, 16, len);
            // SAFETY: forwarded from this function's contract (`head <= len`); SSE2 is part of
            // x86_64; `dst + head` is 16-byte aligned and the kernel covers `len - head` bytes.
            unsafe {
                portable(dst, first, rest, 0, head);
                head + sse2::xor_blocks(dst.add(head), first.add(head), rest, head, len - head)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            let head = head_len(dst, 32, len);
            // SAFETY: as above, with 32-byte alignment; `selected()` only picks AVX2 when the CPU
            // reports it and the tests only run it after the same check.
            unsafe {
                portable(dst, first, rest, 0, head);
                head + avx2::xor_blocks(dst.add(head), first.add(head), rest, head, len - head)
            }
        }
    };
    // SAFETY: `done <= len`; the tail lies inside the ranges the caller vouched for.
    unsafe { portable(dst, first, rest, done, len) };
}

/// Bytes from `dst` to the next `align`-aligned address, at most `len`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn head_len(dst: *mut u8, align: usize, len: usize) -> usize {
    dst.align_offset(align).min(len)
}

/// The portable kernel over byte offsets `start..end`: 4 words at a time, then words, then bytes.
///
/// # Safety
/// As for [`run`], with `start <= end <= len`.
#[inline]
unsafe fn portable(dst: *mut u8, first: *const u8, rest: &[&[u8]], start: usize, end: usize) {
    const WORD: usize = std::mem::size_of::<u64>();
    let mut off = start;
    // SAFETY: (all three loops) every access is at `off + k < end <= len` bytes from a base that
    // is valid for `len` bytes; reads and writes are unaligned ones, so any alignment is fine;
    // each byte of `first` is read before the same byte of `dst` is written.
    unsafe {
        while off + 4 * WORD <= end {
            let mut acc = first.add(off).cast::<[u64; 4]>().read_unaligned();
            for s in rest {
                let v = s.as_ptr().add(off).cast::<[u64; 4]>().read_unaligned();
                for (a, b) in acc.iter_mut().zip(v) {
                    *a ^= b;
                }
            }
            dst.add(off).cast::<[u64; 4]>().write_unaligned(acc);
            off += 4 * WORD;
        }
        while off + WORD <= end {
            let mut acc = first.add(off).cast::<u64>().read_unaligned();
            for s in rest {
                acc ^= s.as_ptr().add(off).cast::<u64>().read_unaligned();
            }
            dst.add(off).cast::<u64>().write_unaligned(acc);
            off += WORD;
        }
        while off < end {
            let mut acc = *first.add(off);
            for s in rest {
                acc ^= *s.as_ptr().add(off);
            }
            *dst.add(off) = acc;
            off += 1;
        }
    }
}

/// Generates an x86_64 vector kernel module: `xor_blocks` does whole vectors, four per step while
/// it can, then one at a time, and returns how many bytes it did (a multiple of the vector width).
#[cfg(target_arch = "x86_64")]
macro_rules! vector_kernel {
    ($module:ident, $feature:literal, $vec:ty, $loadu:ident, $store:ident, $xor:ident) => {
        mod $module {
            use std::arch::x86_64::*;

            const W: usize = std::mem::size_of::<$vec>();

            /// XOR whole vectors from byte 0 of `dst`/`first` (which are at byte `skip` of the
            /// buffers) and byte `skip` of each slice of `rest`, for at most `len` bytes.
            ///
            /// # Safety
            /// The CPU supports the feature; `dst` is `W`-aligned and valid for writes, `first`
            /// valid for reads, of `len` bytes; every slice of `rest` holds `skip + len` bytes;
            /// `first` may equal `dst`, no other overlap.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn xor_blocks(
                dst: *mut u8,
                first: *const u8,
                rest: &[&[u8]],
                skip: usize,
                len: usize,
            ) -> usize {
                let mut off = 0;
                // SAFETY: (both loops) loads and stores stay below `len` bytes from bases valid
                // for `len` bytes (`rest` slices: `skip + len`); loads are unaligned ones and
                // stores go to `W`-aligned addresses (`dst` is aligned, `off` is a multiple of
                // `W`); all of `first`'s bytes at `off` are read before `dst` at `off` is written.
                unsafe {
                    while off + 4 * W <= len {
                        let f = first.add(off);
                        let mut a0 = $loadu(f.cast());
                        let mut a1 = $loadu(f.add(W).cast());
                        let mut a2 = $loadu(f.add(2 * W).cast());
                        let mut a3 = $loadu(f.add(3 * W).cast());
                        for s in rest {
                            let p = s.as_ptr().add(skip + off);
                            a0 = $xor(a0, $loadu(p.cast()));
                            a1 = $xor(a1, $loadu(p.add(W).cast()));
                            a2 = $xor(a2, $loadu(p.add(2 * W).cast()));
                            a3 = $xor(a3, $loadu(p.add(3 * W).cast()));
                        }
                        let d = dst.add(off);
                        $store(d.cast(), a0);
                        $store(d.add(W).cast(), a1);
                        $store(d.add(2 * W).cast(), a2);
                        $store(d.add(3 * W).cast(), a3);
                        off += 4 * W;
                    }
                    while off + W <= len {
                        let mut a = $loadu(first.add(off).cast());
                        for s in rest {
                            a = $xor(a, $loadu(s.as_ptr().add(skip + off).cast()));
                        }
                        $store(dst.add(off).cast(), a);
                        off += W;
                    }
                }
                off
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
vector_kernel!(
    sse2,
    "sse2",
    __m128i,
    _mm_loadu_si128,
    _mm_store_si128,
    _mm_xor_si128
);
#[cfg(target_arch = "x86_64")]
vector_kernel!(
    avx2,
    "avx2",
    __m256i,
    _mm256_loadu_si256,
    _mm256_store_si256,
    _mm256_xor_si256
);

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    fn reference(srcs: &[&[u8]]) -> Vec<u8> {
        let mut out = srcs[0].to_vec();
        for s in &srcs[1..] {
            for (o, b) in out.iter_mut().zip(s.iter()) {
                *o ^= b;
            }
        }
        out
    }

    /// Lengths around every block boundary the kernels have (8, 16, 32, 128 bytes) and a few
    /// strip-sized ones.
    fn lengths() -> Vec<usize> {
        let mut v: Vec<usize> = (0..=300).collect();
        v.extend([511, 512, 513, 1000, 4095, 4096, 4097, 65_536 + 77]);
        v
    }

    #[test]
    fn xor_gen_matches_the_bytewise_reference_for_every_kernel_length_offset_and_count() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        const MAX_SRCS: usize = 6;
        const SLACK: usize = 40;
        for kernel in supported() {
            for len in lengths() {
                // Sources and destination at independent misalignments.
                let backing: Vec<Vec<u8>> = (0..MAX_SRCS)
                    .map(|_| {
                        let mut b = vec![0u8; len + SLACK];
                        rng.fill(&mut b);
                        b
                    })
                    .collect();
                for count in 1..=MAX_SRCS {
                    let offs: Vec<usize> = (0..count)
                        .map(|_| (rng.next() % SLACK as u64) as usize)
                        .collect();
                    let srcs: Vec<&[u8]> = (0..count)
                        .map(|i| &backing[i][offs[i]..offs[i] + len])
                        .collect();
                    let want = reference(&srcs);
                    let doff = (rng.next() % SLACK as u64) as usize;
                    let mut dbuf = vec![0xa5u8; len + SLACK];
                    xor_gen_with(kernel, &mut dbuf[doff..doff + len], &srcs);
                    assert_eq!(
                        &dbuf[doff..doff + len],
                        &want[..],
                        "{kernel:?} len {len} count {count} offsets {offs:?} dst {doff}"
                    );
                    // Bytes around the destination are untouched.
                    assert!(dbuf[..doff].iter().all(|&b| b == 0xa5), "{kernel:?} head");
                    assert!(
                        dbuf[doff + len..].iter().all(|&b| b == 0xa5),
                        "{kernel:?} tail"
                    );
                }
            }
        }
    }

    #[test]
    fn xor_into_matches_the_reference_for_every_kernel_length_and_offset() {
        let mut rng = Rng(42);
        for kernel in supported() {
            for len in lengths() {
                for (doff, soff) in [(0, 0), (1, 0), (0, 3), (7, 13), (31, 1), (17, 32)] {
                    let mut d = vec![0u8; len + 40];
                    let mut s = vec![0u8; len + 40];
                    rng.fill(&mut d);
                    rng.fill(&mut s);
                    let want = reference(&[&d[doff..doff + len], &s[soff..soff + len]]);
                    let before = d.clone();
                    let dst = &mut d[doff..doff + len];
                    let src = &s[soff..soff + len];
                    // SAFETY: the same contract `xor_into` upholds, with an explicit kernel
                    // that `supported()` checked the CPU supports.
                    unsafe {
                        let p = dst.as_mut_ptr();
                        run(kernel, p, p, &[src], len)
                    };
                    assert_eq!(&d[doff..doff + len], &want[..], "{kernel:?} len {len}");
                    assert_eq!(&d[..doff], &before[..doff]);
                    assert_eq!(&d[doff + len..], &before[doff + len..]);
                }
            }
        }
    }

    #[test]
    fn public_functions_use_the_detected_kernel_and_agree_with_the_reference() {
        let mut rng = Rng(7);
        let mut a = vec![0u8; 4096 + 5];
        let mut b = vec![0u8; 4096 + 5];
        let mut c = vec![0u8; 4096 + 5];
        rng.fill(&mut a);
        rng.fill(&mut b);
        rng.fill(&mut c);
        let want = reference(&[&a, &b, &c]);
        let mut out = vec![0u8; a.len()];
        xor_gen(&mut out, &[&a, &b, &c]);
        assert_eq!(out, want);
        // Parity property: XORing the sources back in gives zero.
        xor_into(&mut out, &a);
        xor_into(&mut out, &b);
        xor_into(&mut out, &c);
        assert!(out.iter().all(|&x| x == 0));
        assert!(supported().iter().any(|k| k.name() == implementation()));
        assert_eq!(kernels().last().copied(), Some(implementation()));
        for k in kernels() {
            let mut out2 = vec![0u8; a.len()];
            xor_gen_using(k, &mut out2, &[&a, &b, &c]);
            assert_eq!(out2, want, "{k}");
        }
    }

    #[test]
    fn one_source_copies() {
        let src: Vec<u8> = (0..=255).collect();
        let mut dst = vec![0u8; 256];
        xor_gen(&mut dst, &[&src]);
        assert_eq!(dst, src);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn xor_into_length_mismatch_panics() {
        xor_into(&mut [0u8; 4], &[0u8; 5]);
    }

    #[test]
    #[should_panic(expected = "length differs")]
    fn xor_gen_length_mismatch_panics() {
        xor_gen(&mut [0u8; 4], &[&[0u8; 4], &[0u8; 3]]);
    }

    #[test]
    #[should_panic(expected = "at least one source")]
    fn xor_gen_without_sources_panics() {
        xor_gen(&mut [0u8; 4], &[]);
    }
}
