//! The tick counter behind [`ticks`]/[`tick_rate`]: the TSC on x86_64 when it is invariant
//! (constant rate, runs in every C-state), else nanoseconds of [`Instant`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the TSC is measured against [`Instant`] to find its rate.
const CALIBRATION: Duration = Duration::from_millis(20);

struct Clock {
    /// Ticks per second.
    rate: u64,
    /// Read the TSC (else nanoseconds since `epoch`).
    tsc: bool,
    epoch: Instant,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

fn clock() -> &'static Clock {
    CLOCK.get_or_init(Clock::calibrate)
}

impl Clock {
    fn calibrate() -> Clock {
        let epoch = Instant::now();
        let instant = Clock {
            rate: 1_000_000_000,
            tsc: false,
            epoch,
        };
        if !tsc::invariant() {
            log::info!("tick source: monotonic clock (ns); no invariant TSC");
            return instant;
        }
        let (t0, c0) = (Instant::now(), tsc::read());
        std::thread::sleep(CALIBRATION);
        let (c1, t1) = (tsc::read(), Instant::now());
        let ns = t1.duration_since(t0).as_nanos();
        let rate = u128::from(c1.wrapping_sub(c0)) * 1_000_000_000 / ns.max(1);
        match u64::try_from(rate) {
            Ok(rate) if rate >= 1_000_000 => {
                log::info!("tick source: TSC at {rate} Hz");
                Clock {
                    rate,
                    tsc: true,
                    epoch,
                }
            }
            _ => {
                log::warn!("TSC calibration gave {rate} Hz; using the monotonic clock");
                instant
            }
        }
    }
}

/// Ticks per second of [`ticks`]. The first call calibrates (about 20 ms); later calls are cheap.
pub fn tick_rate() -> u64 {
    clock().rate
}

/// A fast monotonic tick counter (the TSC, no syscall) for latency and busy/idle accounting.
/// Convert with [`tick_rate`].
#[inline]
pub fn ticks() -> u64 {
    let clock = clock();
    if clock.tsc {
        tsc::read()
    } else {
        u64::try_from(clock.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// `d` in ticks (saturating).
pub(crate) fn duration_to_ticks(d: Duration) -> u64 {
    let t = d.as_nanos() * u128::from(tick_rate()) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// `t` ticks as a duration.
pub(crate) fn ticks_to_duration(t: u64) -> Duration {
    let ns = u128::from(t) * 1_000_000_000 / u128::from(tick_rate());
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(target_arch = "x86_64")]
mod tsc {
    use core::arch::x86_64::{__cpuid, _rdtsc};

    /// CPUID leaf 80000007H, EDX bit 8: the TSC runs at a constant rate in every state.
    pub(super) fn invariant() -> bool {
        // SAFETY: CPUID is available on every x86_64 CPU; leaf 0x80000000 reports the highest
        // extended leaf, so 0x80000007 is only queried when it exists.
        #[allow(unused_unsafe)]
        unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
        }
    }

    #[inline]
    pub(super) fn read() -> u64 {
        // SAFETY: RDTSC exists on every x86_64 CPU and has no memory effects.
        #[allow(unused_unsafe)]
        unsafe {
            _rdtsc()
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tsc {
    pub(super) fn invariant() -> bool {
        false
    }
    pub(super) fn read() -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_monotonic_and_rate_matches_wall_clock() {
        let rate = tick_rate();
        assert!(rate >= 1_000_000, "rate {rate}");
        let (t0, i0) = (ticks(), Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        let (t1, i1) = (ticks(), Instant::now());
        assert!(t1 > t0);
        let measured = ticks_to_duration(t1 - t0);
        let wall = i1 - i0;
        // Loose bound: the rate is right within 25% (scheduling noise on a shared VM).
        assert!(
            measured > wall * 3 / 4 && measured < wall * 5 / 4,
            "ticks say {measured:?}, wall clock {wall:?}"
        );
    }

    #[test]
    fn duration_conversions_round_trip() {
        let d = Duration::from_millis(250);
        let back = ticks_to_duration(duration_to_ticks(d));
        let diff = back.abs_diff(d);
        assert!(diff < Duration::from_micros(1), "{d:?} -> {back:?}");
        assert_eq!(duration_to_ticks(Duration::ZERO), 0);
        assert_eq!(duration_to_ticks(Duration::MAX), u64::MAX);
    }
}
