//! Interrupt mode: a connection that stalls (every request slot taken, more capsules waiting
//! unread in its socket) must not keep the reactor awake; every command completes once slots
//! free up, and a peer that resets the connection meanwhile is noticed at once.
//!
//! The reactor's busy/idle tick split tells spinning from sleeping: a reactor woken by the
//! stalled socket on every iteration counts each of them busy (close to 100% of the window),
//! one that sleeps until the stall retry timer counts nearly all of it idle.

mod common;

use common::{
    block_on_core, bring_up, opc, pattern, rw, subsystem_with_delay, wait_connections, Host, BLOCK,
};
use keel_nvme::pdu::{CapsuleRespHeader, DataHeader, Wire, PDU_C2H_DATA, PDU_CAPSULE_RESP};
use keel_nvmf::transport::TransportOpts;
use keel_reactor::Runtime;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Latency the delay bdev adds to every I/O: the first `slots` reads hold every slot this
/// long (the stall), far longer than the window measured inside it.
const DELAY: Duration = Duration::from_millis(400);
/// The measured window inside the stall.
const WINDOW: Duration = Duration::from_millis(150);
/// Blocks per read (4 KiB).
const NLB: u32 = 8;
/// Distinct 4 KiB blocks the reads cycle over.
const BLOCKS: usize = 32;
/// Reads beyond the slots: 72 bytes each, more than the 16 KiB staging buffer takes, so some
/// stay unread in the socket while the connection is stalled.
const EXCESS: usize = 300;

struct Env {
    _rt: Runtime,
    slots: usize,
}

static ENV: OnceLock<Env> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// A one-core runtime in interrupt mode with the TCP transport (once); serialises the tests.
fn env() -> (MutexGuard<'static, ()>, usize) {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let env = ENV.get_or_init(|| {
        let opts = TransportOpts::tcp_defaults();
        let slots = opts.max_queue_depth.max(opts.max_aq_depth) as usize;
        let rt = common::start_tcp_runtime("0x1", true, opts);
        Env { _rt: rt, slots }
    });
    (guard, env.slots)
}

/// Busy and idle ticks of core 0.
fn ticks() -> (u64, u64) {
    let s = keel_reactor::reactor_stats()
        .into_iter()
        .find(|s| s.lcore == 0)
        .expect("core 0 runs");
    assert!(s.interrupt_mode, "the runtime runs in interrupt mode");
    (s.busy_ticks, s.idle_ticks)
}

fn stalled_on_core0() -> usize {
    block_on_core(0, || async {
        keel_nvmf::tcp::stalled_connections_on_this_core()
    })
}

/// A controller on a delay-bdev namespace whose first BLOCKS blocks hold `seed`.
fn seeded_host(seed: &[u8]) -> Host {
    let sub = subsystem_with_delay(Some(DELAY.as_micros() as u64));
    let mut h = bring_up(&sub, false, false);
    // One write: every I/O takes DELAY.
    let cpl = h.io.write(0, seed).expect("seed write");
    assert!(cpl.is_success(), "seed write: {:?}", cpl.get_status());
    h
}

/// Send `n` 4 KiB reads in one go (command k reads block k % BLOCKS, cid k); returns when
/// the target reports the connection stalled, with the time the reads were sent.
fn stall(h: &mut Host, n: usize) -> Instant {
    let len = NLB * BLOCK;
    let mut all = Vec::with_capacity(n * 72);
    for k in 0..n {
        let mut sqe = rw(opc::READ, 1, (k % BLOCKS) as u64 * NLB as u64, NLB);
        sqe.cid = k as u16;
        sqe.flags = 0x40;
        sqe.dptr[8..12].copy_from_slice(&len.to_le_bytes());
        sqe.dptr[15] = 0x5A;
        all.extend(h.io.capsule_bytes(&sqe, &[]));
    }
    let sent_at = Instant::now();
    h.io.sock.write_all(&all).expect("send the capsules");
    let mut stalled = 0;
    for _ in 0..200 {
        stalled = stalled_on_core0();
        if stalled > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(stalled, 1, "the connection stalls with every slot taken");
    sent_at
}

/// The reactor's busy share over WINDOW, which must lie inside the stall (before DELAY).
fn busy_share_while_stalled(sent_at: Instant) -> f64 {
    let (b0, i0) = ticks();
    std::thread::sleep(WINDOW);
    let (b1, i1) = ticks();
    let elapsed = sent_at.elapsed();
    assert!(
        elapsed < DELAY,
        "the window must lie inside the stall (machine too slow? {elapsed:?} elapsed)"
    );
    let (busy, idle) = (b1 - b0, i1 - i0);
    let share = busy as f64 / (busy + idle).max(1) as f64;
    eprintln!("while stalled: {busy} busy ticks, {idle} idle ticks ({share:.3} busy)");
    share
}

#[test]
fn stalled_connection_does_not_spin_the_reactor() {
    let (_g, slots) = env();
    let len = (NLB * BLOCK) as usize;
    let seed = pattern(7, BLOCKS * len);
    let expect = |k: usize| &seed[(k % BLOCKS) * len..][..len];
    let mut h = seeded_host(&seed);
    let n = slots + EXCESS;
    let sent_at = stall(&mut h, n);
    assert_eq!(stalled_on_core0(), 1);
    // Spinning makes every iteration busy (share near 1); sleeping between stall retries
    // leaves nearly everything idle.
    let share = busy_share_while_stalled(sent_at);
    assert!(
        share < 0.5,
        "the reactor spins while the connection is stalled"
    );
    assert_eq!(stalled_on_core0(), 1, "still stalled after the window");

    // Every command completes, with the right data.
    let mut seen = vec![false; n];
    for _ in 0..n {
        let p = h.io.recv_pdu().expect("answer");
        match p.ch.pdu_type {
            PDU_C2H_DATA => {
                let d = DataHeader::read_from(&p.hdr).expect("C2HData header");
                let k = d.cccid as usize;
                assert!(k < n && !seen[k], "one answer for command {k}");
                assert!(p.data == expect(k), "data of command {k}");
                seen[k] = true;
            }
            PDU_CAPSULE_RESP => {
                let r = CapsuleRespHeader::read_from(&p.hdr).expect("response header");
                panic!(
                    "command {} answered without data: {:?}",
                    r.cqe.cid,
                    r.cqe.get_status()
                );
            }
            t => panic!("unexpected PDU type {t:#x}"),
        }
    }
    assert!(seen.iter().all(|&s| s), "every command answered");
    assert_eq!(stalled_on_core0(), 0, "no connection stalled afterwards");
    // The connection still works.
    let (_, d) = h.io.read(0, NLB).expect("read after the stall");
    assert!(d == expect(0), "data read after the stall");
}

#[test]
fn peer_reset_while_stalled_closes_without_spinning() {
    let (_g, slots) = env();
    let base = wait_connections(common::target_connections());
    let seed = pattern(8, BLOCKS * (NLB * BLOCK) as usize);
    let mut h = seeded_host(&seed);
    let sent_at = stall(&mut h, slots + EXCESS);
    // Reset the I/O queue's connection (linger 0: RST): its socket reports an error at once.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and option value.
    let rc = unsafe {
        libc::setsockopt(
            h.io.sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    let Host { admin, io, .. } = h;
    drop(io);
    // The error wakes the reactor, which closes the connection instead of spinning on it.
    let share = busy_share_while_stalled(sent_at);
    assert!(share < 0.5, "the reactor spins on the reset connection");
    drop(admin);
    // Freed once the reads held by the delay bdev are back.
    assert_eq!(wait_connections(base), base, "both connections freed");
}
