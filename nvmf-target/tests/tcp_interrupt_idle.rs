//! Interrupt mode: an idle target wakes only for its timers. With a TCP listener and no host it
//! makes no wake-up of its own (the listening socket is in the reactor's epoll set: no accept
//! poll); with a connected host (admin and I/O queue idle, a keep-alive timeout set) it wakes
//! for the keep-alive deadline only. A new connection is still accepted at once (the socket
//! wakes the reactor), and the keep-alive timeout still tears an idle controller down on time.
//!
//! Wake-ups are the reactor's sleeps (`ReactorStats::sleeps`): each sleep ends in one wake-up.
//! The reactor's own safety-net timeout (1 s without any timer) adds about one per second.

mod common;

use common::{bring_up_addr, opc, subsystem, Host};
use keel_nvme::cmd::NvmeCmd;
use keel_nvmf::transport::TransportOpts;
use keel_reactor::Runtime;
use std::io::Read;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The reactor's longest sleep without a timer (its safety net).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Time a new connection has to connect its queue (checked at half of it while some
/// connection has not connected yet).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);

static ENV: OnceLock<Runtime> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// A one-core runtime in interrupt mode with the TCP transport (once); serialises the tests.
fn env() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    ENV.get_or_init(|| {
        // Short, so that a connect-timeout check left running would show (every 200 ms).
        keel_nvmf::tcp::set_connect_timeout(CONNECT_TIMEOUT);
        common::start_tcp_runtime("0x1", true, TransportOpts::tcp_defaults())
    });
    guard
}

/// Core 0's sleeps so far.
fn sleeps() -> u64 {
    let s = keel_reactor::reactor_stats()
        .into_iter()
        .find(|s| s.lcore == 0)
        .expect("core 0 runs");
    assert!(s.interrupt_mode, "the runtime runs in interrupt mode");
    s.sleeps
}

/// Wake-ups of core 0 over `window`, the test touching nothing meanwhile.
fn wakeups_over(window: Duration) -> u64 {
    // Let what the test just did settle (replies, flushes).
    std::thread::sleep(Duration::from_millis(50));
    let before = sleeps();
    std::thread::sleep(window);
    let n = sleeps() - before;
    eprintln!("{n} wake-ups in {window:?}");
    n
}

/// At most this many wake-ups of the safety net over `window` (plus one for rounding).
fn safety_net_wakeups(window: Duration) -> u64 {
    (window.as_millis() / MAX_SLEEP.as_millis()) as u64 + 1
}

fn keep_alive(h: &mut Host) {
    let sqe = NvmeCmd {
        opc: opc::KEEP_ALIVE,
        ..Default::default()
    };
    h.admin.ok(sqe, &[], 0);
}

#[test]
fn idle_target_wakes_only_for_its_timers() {
    let _g = env();
    let sub = subsystem();
    let addr = format!("127.0.0.1:{}", sub.port);

    // Listening, no host: no accept poll wakes the reactor (it used to, every 0.5 ms:
    // ~4,000 wake-ups in this window).
    let window = Duration::from_secs(2);
    let n = wakeups_over(window);
    assert!(
        n <= safety_net_wakeups(window),
        "{n} wake-ups in {window:?} with only a listener: something polls"
    );

    // A new connection still gets in at once: the listening socket wakes the reactor.
    let t = Instant::now();
    let mut h = bring_up_addr(&addr, &sub.nqn, false, false, 30_000);
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "bring-up of two queues on a sleeping target took {took:?}"
    );
    keep_alive(&mut h);

    // Connected and idle (KATO 30 s): no accept poll, no connect-timeout check (every queue
    // is connected; it used to run every 200 ms here), no frequent keep-alive check (its timer
    // waits for the deadline).
    let window = Duration::from_secs(3);
    let n = wakeups_over(window);
    assert!(
        n <= safety_net_wakeups(window),
        "{n} wake-ups in {window:?} with an idle connected host: a timer runs too often"
    );

    // Still connected and serving.
    keep_alive(&mut h);
    let (cpl, _) = h.io.read(0, 8).expect("read");
    assert!(cpl.is_success(), "read: {:?}", cpl.get_status());
    drop(h);
}

/// Wait for the target to close the admin queue of `h`; how long after `last` it did.
fn closed_after(mut h: Host, last: Instant, kato: Duration) -> Duration {
    h.admin
        .sock
        .set_read_timeout(Some(kato * 2))
        .expect("read timeout");
    let mut b = [0u8; 64];
    let closed = match h.admin.sock.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    let after = last.elapsed();
    assert!(
        closed,
        "the admin queue is closed after the keep-alive timeout"
    );
    eprintln!("closed {after:?} after the last command");
    after
}

#[test]
fn keep_alive_deadline_moves_with_traffic_and_expires_on_time() {
    let _g = env();
    let sub = subsystem();
    let addr = format!("127.0.0.1:{}", sub.port);
    let kato = Duration::from_millis(4000);
    // Two controllers connected half a second apart: a timer checking on a period (it used
    // to, every KATO/4 but at most every second, from the connect on) sees the silence of
    // at least one of them late by 350 ms or more, whatever the phase.
    let mut a = bring_up_addr(&addr, &sub.nqn, false, false, kato.as_millis() as u32);
    std::thread::sleep(Duration::from_millis(500));
    let mut b = bring_up_addr(&addr, &sub.nqn, false, false, kato.as_millis() as u32);
    // Keep Alive every second for 3 s: the controllers stay (their timers follow the deadline
    // the last command sets).
    for _ in 0..3 {
        keep_alive(&mut a);
        keep_alive(&mut b);
        std::thread::sleep(Duration::from_secs(1));
    }
    keep_alive(&mut a);
    let last_a = Instant::now();
    keep_alive(&mut b);
    let last_b = Instant::now();
    // Silence: each controller goes, closing its queues, at its deadline.
    let other = std::thread::spawn(move || closed_after(b, last_b, kato));
    let after_a = closed_after(a, last_a, kato);
    let after_b = other.join().expect("reader thread");
    for after in [after_a, after_b] {
        assert!(
            after >= kato,
            "closed {after:?} after the last command, before the {kato:?} timeout"
        );
        assert!(
            after < kato + Duration::from_millis(250),
            "closed only {after:?} after the last command ({kato:?} timeout)"
        );
    }
}
