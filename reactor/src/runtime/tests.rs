//! Tests of the whole runtime: start/stop, messages, tasks, pollers, stats, interrupt mode.
//!
//! The runtime is process-global, so every test here holds [`serial`] while a runtime runs.

use crate::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "soon"; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests that start a runtime.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn options(mask: &str, interrupt_mode: bool) -> RuntimeOptions {
    RuntimeOptions {
        cpumask: CpuMask::parse(mask).unwrap(),
        interrupt_mode,
        pin_threads: false,
    }
}

/// Start a runtime, waiting while another one (e.g. another module's test) still runs.
fn start_with(opts: RuntimeOptions, init: impl FnOnce() + Send + 'static) -> Runtime {
    let init = Arc::new(Mutex::new(Some(init)));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let init = init.clone();
        let run_init = move || {
            if let Some(f) = init.lock().unwrap().take() {
                f();
            }
        };
        match Runtime::start(opts.clone(), run_init) {
            Ok(rt) => return rt,
            Err(RuntimeError::AlreadyRunning) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("cannot start runtime: {err}"),
        }
    }
}

fn start(mask: &str, interrupt_mode: bool) -> Runtime {
    start_with(options(mask, interrupt_mode), || {})
}

fn recv<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(PATIENCE)
        .expect("timed out waiting for the reactor")
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Shut down and join, failing (instead of hanging) if the reactors do not stop.
fn shutdown_and_join(rt: Runtime) {
    request_shutdown();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        rt.join();
        let _ = tx.send(());
    });
    rx.recv_timeout(PATIENCE)
        .expect("reactors did not stop after request_shutdown");
}

/// Run `f` on `core` and return its result (from a non-reactor thread).
fn on<R: Send + 'static>(core: u32, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    send_to(core, move || tx.send(f()).unwrap()).unwrap();
    recv(&rx)
}

fn sleeps(core: u32) -> u64 {
    super::with_runtime(|rt| rt.reactor(core).map(|r| r.sleeps()))
        .flatten()
        .expect("no such reactor")
}

/// Wait until reactor `core` has gone to sleep again since `before` sleeps.
fn wait_asleep(core: u32, before: u64) -> u64 {
    wait_until("the reactor sleeps", || sleeps(core) > before);
    // It went to sleep at least once more; now let it settle into the sleep.
    std::thread::sleep(Duration::from_millis(20));
    sleeps(core)
}

#[test]
fn one_core_runs_init_first_on_main_core_then_stops() {
    let _s = serial();
    let (tx, rx) = mpsc::channel();
    let rt = start_with(options("0x1", false), move || {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send((current_core(), name, cores(), main_core()))
            .unwrap();
    });
    let (core, name, all, main) = recv(&rx);
    assert_eq!(core, Some(0));
    assert_eq!(name.as_deref(), Some("reactor_0"));
    assert_eq!(all, [0]);
    assert_eq!(main, Some(0));
    assert_eq!(current_core(), None, "the test thread is no reactor");
    assert_eq!(cores(), [0]);
    assert_eq!(main_core(), Some(0));
    assert!(matches!(
        Runtime::start(options("0x1", false), || {}),
        Err(RuntimeError::AlreadyRunning)
    ));
    shutdown_and_join(rt);
    assert_eq!(cores(), Vec::<u32>::new());
    assert_eq!(main_core(), None);
    assert_eq!(send_to(0, || {}), Err(SendError::NotRunning));
    assert!(reactor_stats().is_empty());
    request_shutdown(); // harmless without a runtime
}

#[test]
fn start_again_after_join_and_drop_stops() {
    let _s = serial();
    for round in 0..3 {
        let rt = start("[0-1]", round % 2 == 1);
        assert_eq!(on(1, current_core), Some(1));
        if round == 2 {
            drop(rt); // requests shutdown and joins
        } else {
            shutdown_and_join(rt);
        }
        assert!(cores().is_empty());
    }
}

#[test]
fn pinned_threads_run_only_on_their_core() {
    let _s = serial();
    let Ok(mask) = CpuMask::parse_and_validate("[0]") else {
        return;
    };
    let rt = start_with(
        RuntimeOptions {
            cpumask: mask,
            interrupt_mode: false,
            pin_threads: true,
        },
        || {},
    );
    let allowed = on(0, || {
        // SAFETY: zeroed cpu_set_t is valid; the buffer is as large as we claim.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above: `set` is a valid, writable cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        // SAFETY: the set is initialised and the index is below its capacity.
        (0..64)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect::<Vec<_>>()
    });
    assert_eq!(allowed, [0]);
    shutdown_and_join(rt);
}

#[test]
fn unknown_core_is_refused() {
    let _s = serial();
    let rt = start("0x1", false);
    assert_eq!(send_to(5, || {}), Err(SendError::NoSuchCore(5)));
    assert_eq!(spawn_on(3, || async {}), Err(SendError::NoSuchCore(3)));
    shutdown_and_join(rt);
}

#[test]
fn messages_cross_cores_in_order_per_sender() {
    let _s = serial();
    let rt = start("[0,1]", false);
    const N: usize = 5000;
    let seen: Arc<Mutex<Vec<(u32, usize)>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    // Sender 0: reactor 0. Sender 1: this thread. Both to reactor 1.
    let (seen0, tx0) = (seen.clone(), tx.clone());
    send_to(0, move || {
        for i in 0..N {
            let seen = seen0.clone();
            send_to(1, move || {
                assert_eq!(current_core(), Some(1));
                seen.lock().unwrap().push((0, i));
            })
            .unwrap();
        }
        tx0.send(()).unwrap();
    })
    .unwrap();
    for i in 0..N {
        let seen = seen.clone();
        send_to(1, move || seen.lock().unwrap().push((1, i))).unwrap();
    }
    recv(&rx);
    // Everything sent before this marker (by both senders) runs before it.
    let seen_at_end = seen.clone();
    let count = on(1, move || seen_at_end.lock().unwrap().len());
    assert_eq!(count, 2 * N);
    let seen = seen.lock().unwrap();
    for sender in [0, 1] {
        let order: Vec<usize> = seen
            .iter()
            .filter(|(s, _)| *s == sender)
            .map(|p| p.1)
            .collect();
        assert_eq!(
            order,
            (0..N).collect::<Vec<_>>(),
            "sender {sender} out of order"
        );
    }
    drop(tx);
    shutdown_and_join(rt);
}

#[test]
fn call_on_and_spawn_on_return_values_across_cores() {
    let _s = serial();
    let rt = start("[0,1]", false);
    let (tx, rx) = mpsc::channel();
    spawn_on(0, move || async move {
        let here = current_core();
        let there = call_on(1, || current_core().map(|c| c * 10)).await;
        let missing = call_on(9, || 1).await;
        tx.send((here, there, missing)).unwrap();
    })
    .unwrap();
    assert_eq!(
        recv(&rx),
        (Some(0), Ok(Some(10)), Err(SendError::NoSuchCore(9)))
    );
    shutdown_and_join(rt);
}

#[test]
fn local_task_woken_from_another_thread() {
    let _s = serial();
    let rt = start("0x1", false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    send_to(0, move || {
        let (tx, rx) = oneshot::<u32>();
        let (tx2, rx2) = oneshot::<u32>();
        // `Rc` makes the future !Send: it can only be a local task.
        let local = std::rc::Rc::new(7);
        spawn_local(async move {
            let a = rx.await;
            let b = rx2.await;
            done_tx.send((a, b, *local, current_core())).unwrap();
        });
        ready_tx.send((tx, tx2)).unwrap();
    })
    .unwrap();
    let (tx, tx2) = recv(&ready_rx);
    std::thread::spawn(move || tx.send(42)).join().unwrap();
    drop(tx2); // resolves the second await to Err
    assert_eq!(recv(&done_rx), (Ok(42), Err(()), 7, Some(0)));
    shutdown_and_join(rt);
}

/// A future that yields `n` times (waking itself) before completing.
struct YieldN(usize);
impl Future for YieldN {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            return Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn tasks_spawn_tasks_and_yield_without_starving_pollers() {
    let _s = serial();
    let rt = start("0x1", false);
    let (tx, rx) = mpsc::channel();
    let polls = Arc::new(AtomicUsize::new(0));
    let polls2 = polls.clone();
    send_to(0, move || {
        register_poller("count", None, move || {
            polls2.fetch_add(1, Ordering::Relaxed);
            PollStatus::Idle
        });
        spawn_local(async move {
            // Each yield costs one loop iteration, so the poller runs meanwhile.
            YieldN(100).await;
            let tx2 = tx.clone();
            spawn_local(async move { tx2.send("inner").unwrap() });
            tx.send("outer").unwrap();
        });
    })
    .unwrap();
    assert_eq!(recv(&rx), "outer");
    assert_eq!(recv(&rx), "inner");
    assert!(polls.load(Ordering::Relaxed) >= 100);
    shutdown_and_join(rt);
}

#[test]
fn for_each_core_visits_all_then_done_once_on_origin() {
    let _s = serial();
    let rt = start("[0-1]", false);
    let visited: Arc<Mutex<Vec<Option<u32>>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    // From a non-reactor thread: done runs on the main core.
    let (v, tx1) = (visited.clone(), tx.clone());
    for_each_core(
        move || v.lock().unwrap().push(current_core()),
        move || tx1.send(current_core()).unwrap(),
    )
    .unwrap();
    assert_eq!(recv(&rx), Some(0));
    assert_eq!(*visited.lock().unwrap(), [Some(0), Some(1)]);
    // From reactor 1: done runs on core 1.
    let (v, tx2) = (visited.clone(), tx.clone());
    send_to(1, move || {
        let tx3 = tx2.clone();
        for_each_core(
            move || v.lock().unwrap().push(current_core()),
            move || tx3.send(current_core()).unwrap(),
        )
        .unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx), Some(1));
    assert_eq!(visited.lock().unwrap().len(), 4);
    drop(tx);
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "done ran more than once"
    );
    shutdown_and_join(rt);
    assert_eq!(for_each_core(|| {}, || {}), Err(SendError::NotRunning));
}

#[test]
fn pollers_untimed_timed_and_self_unregistering() {
    let _s = serial();
    let rt = start("0x1", false);
    let untimed = Arc::new(AtomicUsize::new(0));
    let timed = Arc::new(AtomicUsize::new(0));
    let once = Arc::new(AtomicUsize::new(0));
    let (u, t, o) = (untimed.clone(), timed.clone(), once.clone());
    let (ids, pollers) = on(0, move || {
        let u_id = register_poller("untimed", None, move || {
            u.fetch_add(1, Ordering::Relaxed);
            PollStatus::Idle
        });
        let t_id = register_poller("timed", Some(Duration::from_millis(2)), move || {
            t.fetch_add(1, Ordering::Relaxed);
            PollStatus::Busy
        });
        // Unregisters itself on its third run.
        let my_id = Arc::new(Mutex::new(None::<PollerId>));
        let my_id2 = my_id.clone();
        let id = register_poller("thrice", None, move || {
            if o.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                unregister_poller(my_id2.lock().unwrap().unwrap());
            }
            PollStatus::Busy
        });
        *my_id.lock().unwrap() = Some(id);
        ((u_id, t_id), reactor_stats()[0].pollers)
    });
    assert_eq!(pollers, 3);
    wait_until("timed poller ran 5 times", || {
        timed.load(Ordering::Relaxed) >= 5
    });
    wait_until("untimed poller ran 1000 times", || {
        untimed.load(Ordering::Relaxed) >= 1000
    });
    wait_until("self-unregistered", || reactor_stats()[0].pollers == 2);
    assert_eq!(
        reactor_stats()[0].timed_pollers,
        1,
        "one of the two is timed"
    );
    // One more iteration cannot run it again.
    on(0, || ());
    assert_eq!(once.load(Ordering::Relaxed), 3);
    on(0, move || {
        unregister_poller(ids.0);
        unregister_poller(ids.1);
        unregister_poller(ids.1); // already gone: harmless
    });
    assert_eq!(reactor_stats()[0].pollers, 0);
    assert_eq!(reactor_stats()[0].timed_pollers, 0);
    let (u_now, t_now) = (
        untimed.load(Ordering::Relaxed),
        timed.load(Ordering::Relaxed),
    );
    on(0, || ());
    on(0, || ());
    assert_eq!(untimed.load(Ordering::Relaxed), u_now);
    assert_eq!(timed.load(Ordering::Relaxed), t_now);
    shutdown_and_join(rt);
}

#[test]
fn poller_closures_are_dropped_on_their_core_at_shutdown() {
    let _s = serial();
    let rt = start("0x1", false);
    struct OnDrop(mpsc::Sender<Option<u32>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(current_core());
        }
    }
    let (tx, rx) = mpsc::channel();
    on(0, move || {
        let guard = OnDrop(tx);
        register_poller("guarded", None, move || {
            let _ = &guard;
            PollStatus::Idle
        });
    });
    shutdown_and_join(rt);
    assert_eq!(recv(&rx), Some(0));
}

#[test]
fn shutdown_runs_messages_already_queued() {
    let _s = serial();
    let rt = start("[0-1]", false);
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..1000u32 {
        let ran = ran.clone();
        send_to(i % 2, move || {
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    shutdown_and_join(rt);
    assert_eq!(ran.load(Ordering::Relaxed), 1000);
}

#[test]
fn busy_polling_stats_move() {
    let _s = serial();
    let rt = start("[0-1]", false);
    let stats = reactor_stats();
    assert_eq!(stats.iter().map(|s| s.lcore).collect::<Vec<_>>(), [0, 1]);
    assert!(stats.iter().all(|s| !s.interrupt_mode && s.pollers == 0));
    wait_until("idle ticks grow", || {
        reactor_stats()[1].idle_ticks > stats[1].idle_ticks
    });
    let busy_before = reactor_stats()[1].busy_ticks;
    on(1, || {
        register_poller("busy", None, || PollStatus::Busy);
    });
    assert_eq!(reactor_stats()[1].pollers, 1);
    wait_until("busy ticks grow", || {
        reactor_stats()[1].busy_ticks > busy_before
    });
    shutdown_and_join(rt);
}

#[test]
fn interrupt_mode_sleeps_and_wakes_for_messages() {
    let _s = serial();
    let rt = start("[0-1]", true);
    assert!(reactor_stats().iter().all(|s| s.interrupt_mode));
    for core in [0, 1] {
        let asleep = wait_asleep(core, 0);
        let idle = reactor_stats()[core as usize].idle_ticks;
        // Sleeps are long (no timer): without a working wake-up this would time out.
        assert_eq!(on(core, current_core), Some(core));
        assert!(
            reactor_stats()[core as usize].idle_ticks > idle,
            "sleep counts as idle"
        );
        wait_asleep(core, asleep);
    }
    // A reactor wakes another one (both sleep now).
    let (tx, rx) = mpsc::channel();
    spawn_on(0, move || async move {
        tx.send(call_on(1, current_core).await.unwrap()).unwrap();
    })
    .unwrap();
    assert_eq!(recv(&rx), Some(1));
    shutdown_and_join(rt); // must wake both sleeping reactors
}

#[test]
fn interrupt_mode_timers_wake_the_reactor() {
    let _s = serial();
    let rt = start("0x1", true);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    on(0, move || {
        register_poller("tick", Some(Duration::from_millis(5)), move || {
            r.fetch_add(1, Ordering::Relaxed);
            PollStatus::Idle
        });
    });
    wait_until("timer ran 5 times", || runs.load(Ordering::Relaxed) >= 5);
    assert!(sleeps(0) >= 5, "the reactor slept between timer runs");
    shutdown_and_join(rt);
}

#[test]
fn interrupt_mode_registered_fd_wakes_the_reactor() {
    let _s = serial();
    let rt = start("0x1", true);
    let efd = crate::interrupt::EventFd::new().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&efd);
    let (tx, rx) = mpsc::channel();
    let before = sleeps(0);
    on(0, move || {
        register_interrupt_fd(fd);
        register_interrupt_fd(fd); // twice is harmless
        register_poller("fd", None, move || {
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
            let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
            if n == 8 {
                tx.send(value).unwrap();
                PollStatus::Busy
            } else {
                PollStatus::Idle
            }
        });
    });
    let asleep = wait_asleep(0, before);
    efd.notify();
    assert_eq!(recv(&rx), 1);
    wait_asleep(0, asleep);
    on(0, move || unregister_interrupt_fd(fd));
    shutdown_and_join(rt);
    drop(efd);
}

/// An fd-driven poller: it touches its fd only when the reactor saw the fd readable, while
/// the reactor sleeps (the fd wakes it) and while it is kept busy (checked every ms), and the
/// reactor does not wake for it when nothing happens.
#[test]
fn interrupt_mode_fd_readiness_drives_a_poller() {
    let _s = serial();
    let rt = start("0x1", true);
    let efd = crate::interrupt::EventFd::new().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&efd);
    let reads = Arc::new(AtomicUsize::new(0));
    let spin = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (r, sp) = (reads.clone(), spin.clone());
    let before = sleeps(0);
    on(0, move || {
        register_interrupt_fd(fd);
        register_poller("fd-driven", None, move || {
            let busy = if sp.load(Ordering::Relaxed) {
                PollStatus::Busy
            } else {
                PollStatus::Idle
            };
            if !take_interrupt_fd_ready(fd) {
                return busy;
            }
            r.fetch_add(1, Ordering::Relaxed);
            let mut value = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
            if unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) } == 8 {
                tx.send(value).unwrap();
            }
            busy
        });
    });
    // Registered fds count as ready once (what arrived before the registration).
    let asleep = wait_asleep(0, before);
    assert_eq!(reads.load(Ordering::Relaxed), 1, "one look at registration");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        reads.load(Ordering::Relaxed),
        1,
        "no look without readiness"
    );
    assert_eq!(sleeps(0), asleep, "no wake-up without readiness");
    efd.notify();
    assert_eq!(recv(&rx), 1);
    assert_eq!(reads.load(Ordering::Relaxed), 2);
    // Busy: the reactor never sleeps, yet the fd is still looked at when it gets readable.
    spin.store(true, Ordering::Relaxed);
    send_to(0, || {}).unwrap();
    let iterations = reactor_stats()[0].iterations;
    wait_until("spinning", || {
        reactor_stats()[0].iterations > iterations + 1000
    });
    let asleep = sleeps(0);
    assert_eq!(
        reads.load(Ordering::Relaxed),
        2,
        "no look while nothing is ready"
    );
    efd.notify();
    assert_eq!(recv(&rx), 1);
    assert_eq!(sleeps(0), asleep, "seen without sleeping");
    spin.store(false, Ordering::Relaxed);
    on(0, move || unregister_interrupt_fd(fd));
    assert!(
        on(0, move || take_interrupt_fd_ready(fd)),
        "unregistered: always"
    );
    shutdown_and_join(rt);
    drop(efd);
}

#[test]
fn panic_on_a_reactor_stops_the_runtime_and_resumes_in_join() {
    let _s = serial();
    let rt = start("[0-1]", false);
    send_to(1, || panic!("boom (expected by the test)")).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.join()));
        tx.send(joined.is_err()).unwrap();
    });
    assert!(recv(&rx), "join must resume the reactor's panic");
    assert!(cores().is_empty());
}

#[test]
fn shutdown_is_not_held_by_a_message_that_resends_itself() {
    let _s = serial();
    let rt = start("0x1", false);
    fn again(count: Arc<AtomicUsize>) {
        count.fetch_add(1, Ordering::Relaxed);
        let _ = send_to(0, move || again(count));
    }
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    send_to(0, move || again(c)).unwrap();
    wait_until("the message loops", || count.load(Ordering::Relaxed) > 10);
    shutdown_and_join(rt);
    let after = count.load(Ordering::Relaxed);
    assert_eq!(send_to(0, || {}), Err(SendError::NotRunning));
    assert_eq!(count.load(Ordering::Relaxed), after);
}

#[test]
fn failed_start_cleans_up_and_allows_a_new_start() {
    let _s = serial();
    let missing = 63; // not a core of this machine (the test is skipped if it is)
    if CpuMask::parse_and_validate(&format!("[{missing}]")).is_ok() {
        return;
    }
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse(&format!("[0,{missing}]")).unwrap(),
        interrupt_mode: true,
        pin_threads: true,
    };
    let init_ran = Arc::new(AtomicUsize::new(0));
    let flag = init_ran.clone();
    let err = loop {
        let flag = flag.clone();
        match Runtime::start(opts.clone(), move || {
            flag.fetch_add(1, Ordering::SeqCst);
        }) {
            Err(RuntimeError::AlreadyRunning) => std::thread::sleep(Duration::from_millis(10)),
            other => break other.err().expect("pinning to a missing core must fail"),
        }
    };
    assert!(
        matches!(err, RuntimeError::Os { core, .. } if core == missing),
        "{err}"
    );
    assert_eq!(
        init_ran.load(Ordering::SeqCst),
        0,
        "init must not run when start fails"
    );
    assert!(cores().is_empty());
    let rt = start("0x1", false);
    shutdown_and_join(rt);
}
