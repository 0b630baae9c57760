//! Bounded probes for tests running outside the reactors: wait until a condition holds, checking
//! it again and again, and fail with what was awaited when it does not hold in time. A probe
//! replaces a sleep that stands in for a condition (which lets a test pass while checking less
//! when the sleep is too short for the machine, and wastes time when it is too long).

use std::time::{Duration, Instant};

/// Wait until `cond` holds, checking it every few milliseconds; panics after `limit` with
/// "timed out after `limit` waiting for `what`".
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    wait_for_value(what, limit, || cond().then_some(()));
}

/// Wait until `probe` returns a value and return it, checking every few milliseconds; panics
/// after `limit` as [`wait_for`] does.
pub fn wait_for_value<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut n = 0;
        wait_for("three checks", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        assert_eq!(
            wait_for_value("a value", Duration::from_secs(5), || Some(7)),
            7
        );
    }

    #[test]
    #[should_panic(expected = "timed out after 20ms waiting for the impossible")]
    fn fails_with_what_it_waited_for() {
        wait_for("the impossible", Duration::from_millis(20), || false);
    }
}
