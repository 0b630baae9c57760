//! Tests of the pool through its public API, each on a fresh thread with its own domain.

use super::slice::{SliceState, OBJ_BITS, SLICES_PER_PAGE};
use super::*;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

const K128: usize = 128 * 1024;

fn cfg(pages: usize) -> PoolConfig {
    PoolConfig {
        max_pages_per_core: pages,
        use_hugepages: false,
    }
}

/// Run `f` on a new thread whose pool is configured by `cfg`; propagate its panics.
fn on_thread<R: Send + 'static>(cfg: PoolConfig, f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        thread::install_for_test(cfg);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn with_domain<R>(f: impl FnOnce(&Domain) -> R) -> R {
    let d = thread::current().expect("thread alive");
    // SAFETY: the calling thread's domain is alive while the thread runs.
    f(unsafe { d.as_ref() })
}

fn states() -> Vec<(SliceState, usize, usize)> {
    with_domain(|d| d.slice_states())
}

fn slice_of(b: &DmaBuf) -> usize {
    (b.slot >> OBJ_BITS) as usize
}

fn class_idx(size: usize) -> usize {
    class_of(size).expect("valid size")
}

/// A waker counting its wakes and unparking the thread that made it.
struct CountWaker {
    wakes: AtomicUsize,
    thread: std::thread::Thread,
}

impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn count_waker() -> (Arc<CountWaker>, Waker) {
    let cw = Arc::new(CountWaker {
        wakes: AtomicUsize::new(0),
        thread: std::thread::current(),
    });
    (cw.clone(), Waker::from(cw))
}

/// Park until `cw` was woken `n` times; fail after a generous bound instead of hanging.
fn wait_wakes(cw: &CountWaker, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cw.wakes.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "waker never woken");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let (cw, waker) = count_waker();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    let mut seen = 0;
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        seen += 1;
        wait_wakes(&cw, seen);
    }
}

#[test]
fn bad_sizes_are_refused() {
    for size in [0, MAX_CLASS + 1, usize::MAX] {
        assert_eq!(alloc(size).unwrap_err(), PoolError::BadSize(size));
        assert_eq!(
            block_on(alloc_wait(size)).unwrap_err(),
            PoolError::BadSize(size)
        );
    }
}

#[test]
fn class_geometry() {
    assert_eq!(NUM_CLASSES, 9);
    assert_eq!(class_size(NUM_CLASSES - 1), MAX_CLASS);
}

#[test]
fn every_class_size_and_alignment() {
    on_thread(cfg(4), || {
        let table = [
            (1, 512),
            (511, 512),
            (512, 512),
            (513, 1024),
            (2000, 2048),
            (4095, 4096),
            (4096, 4096),
            (4097, 8192),
            (16 * 1024, 16 * 1024),
            (40_000, 64 * 1024),
            (65_537, K128),
            (K128, K128),
        ];
        let mut held = Vec::new();
        for (size, cap) in table {
            // Twice per size, so the second object is not at a slice start.
            for _ in 0..2 {
                let mut b = alloc(size).expect("alloc");
                assert_eq!((b.len(), b.capacity(), b.is_empty()), (size, cap, false));
                let addr = b.as_ptr() as usize;
                assert_eq!(
                    addr % cap,
                    0,
                    "{size} B buffer at {addr:#x} not aligned to its class"
                );
                if cap >= 4096 {
                    assert_eq!(addr % 4096, 0);
                }
                assert_eq!(b.as_mut_ptr() as usize, addr);
                assert_eq!(b.as_slice().len(), size);
                b.as_mut_slice().fill(0xa5);
                held.push(b);
            }
        }
        assert_eq!(stats().objects_in_use, held.len());
        drop(held);
        assert_eq!(stats().objects_in_use, 0);
    });
}

#[test]
fn non_reactor_threads_get_distinct_homes_above_core_ids() {
    let a = on_thread(cfg(1), || alloc(512).unwrap().home());
    let b = on_thread(cfg(1), || alloc(512).unwrap().home());
    assert!(a >= thread::FOREIGN_HOME_BASE && b >= thread::FOREIGN_HOME_BASE);
    assert_ne!(a, b);
}

#[test]
fn slice_state_transitions() {
    on_thread(cfg(1), || {
        let c = class_idx(K128);
        assert_eq!(stats().pages, 0);
        let a = alloc(K128).unwrap();
        let st = states();
        assert_eq!(st.len(), SLICES_PER_PAGE);
        assert_eq!(st[0], (SliceState::Partial, c, 1), "clean -> partial");
        assert!(st[1..].iter().all(|s| s.0 == SliceState::Clean));
        let b = alloc(K128).unwrap();
        assert_eq!(states()[0], (SliceState::Full, c, 0), "partial -> full");
        drop(a);
        assert_eq!(states()[0], (SliceState::Partial, c, 1), "full -> partial");
        drop(b);
        assert_eq!(states()[0], (SliceState::Dirty, c, 2), "partial -> dirty");
        let a = alloc(K128).unwrap();
        assert_eq!(slice_of(&a), 0);
        assert_eq!(states()[0], (SliceState::Partial, c, 1), "dirty -> partial");
        assert!(states()[1..].iter().all(|s| s.0 == SliceState::Clean));
    });
}

#[test]
fn cheapest_slice_first() {
    on_thread(cfg(1), || {
        let (big, small) = (class_idx(K128), class_idx(1024));
        // Slice 0: a partial 512 B slice (keeps it out of the way).
        let _keep = alloc(512).unwrap();
        // Slice 1: filled with 128 KiB objects, then emptied: dirty.
        let (x, y) = (alloc(K128).unwrap(), alloc(K128).unwrap());
        assert_eq!((slice_of(&x), slice_of(&y)), (1, 1));
        drop((x, y));
        assert_eq!(states()[1].0, SliceState::Dirty);
        // Dirty of the right class before clean.
        let c1 = alloc(K128).unwrap();
        let c2 = alloc(K128).unwrap();
        assert_eq!((slice_of(&c1), slice_of(&c2)), (1, 1));
        // No partial or dirty left: a clean slice.
        let c3 = alloc(K128).unwrap();
        assert_eq!(slice_of(&c3), 2);
        // Slice 1 partial, slice 2 dirty: partial first.
        drop(c2);
        drop(c3);
        assert_eq!(states()[1].0, SliceState::Partial);
        assert_eq!(states()[2], (SliceState::Dirty, big, 2));
        let c4 = alloc(K128).unwrap();
        assert_eq!(slice_of(&c4), 1);
        // A class with nothing of its own re-purposes the dirty slice before carving a clean one.
        let k = alloc(1024).unwrap();
        assert_eq!(slice_of(&k), 2);
        assert_eq!(
            states()[2],
            (SliceState::Partial, small, K128 * 2 / 1024 - 1)
        );
        assert!(states()[3..].iter().all(|s| s.0 == SliceState::Clean));
    });
}

#[test]
fn exhaustion_is_reported_counted_and_recovers() {
    on_thread(cfg(1), || {
        let per_page = PAGE_SIZE / K128;
        let mut held: Vec<DmaBuf> = (0..per_page).map(|_| alloc(K128).unwrap()).collect();
        assert_eq!(alloc(K128).unwrap_err(), PoolError::Exhausted);
        assert_eq!(
            alloc(512).unwrap_err(),
            PoolError::Exhausted,
            "no slice left for any class"
        );
        let s = stats();
        assert_eq!(
            (s.pages, s.objects_in_use, s.exhausted_events),
            (1, per_page, 2)
        );
        held.pop();
        let again = alloc(K128).expect("a free makes room");
        assert_eq!(stats().exhausted_events, 2);
        drop(again);
    });
}

#[test]
fn zero_page_limit_refuses_everything() {
    on_thread(cfg(0), || {
        assert_eq!(alloc(512).unwrap_err(), PoolError::Exhausted);
        let s = stats();
        assert_eq!((s.pages, s.exhausted_events), (0, 1));
    });
}

#[test]
fn grows_page_by_page_and_reports_pages_to_hooks() {
    on_thread(cfg(3), || {
        use std::cell::RefCell;
        use std::rc::Rc;
        let seen = Rc::new(RefCell::new(Vec::new()));
        let per_page = PAGE_SIZE / K128;
        let mut held: Vec<DmaBuf> = (0..per_page).map(|_| alloc(K128).unwrap()).collect();
        assert_eq!(stats().pages, 1);
        let s2 = seen.clone();
        on_page_mapped(move |addr, len| s2.borrow_mut().push((addr as usize, len)));
        assert_eq!(
            seen.borrow().len(),
            1,
            "existing page reported at registration"
        );
        held.push(alloc(K128).unwrap());
        assert_eq!(stats().pages, 2);
        assert_eq!(seen.borrow().len(), 2, "new page reported on growth");
        let pages = seen.borrow().clone();
        assert!(pages
            .iter()
            .all(|&(a, l)| l == PAGE_SIZE && a % PAGE_SIZE == 0));
        assert_ne!(pages[0].0, pages[1].0);
        // Every buffer lies in a reported page.
        for b in &held {
            let a = b.as_ptr() as usize;
            assert!(pages.iter().any(|&(p, l)| (p..p + l).contains(&a)));
        }
        assert!(!stats().hugepages, "hugepages were not asked for");
    });
}

#[test]
fn hook_may_allocate_and_grow() {
    on_thread(cfg(4), || {
        use std::cell::RefCell;
        use std::rc::Rc;
        let seen = Rc::new(RefCell::new(0usize));
        let held = Rc::new(RefCell::new(Vec::new()));
        let (s2, h2) = (seen.clone(), held.clone());
        on_page_mapped(move |_, _| {
            *s2.borrow_mut() += 1;
            // Grab a whole page worth on the first report: forces nested growth.
            if *s2.borrow() == 1 {
                for _ in 0..PAGE_SIZE / K128 {
                    h2.borrow_mut().push(alloc(K128).unwrap());
                }
            }
        });
        let _b = alloc(512).unwrap();
        assert_eq!(stats().pages, 2);
        assert_eq!(*seen.borrow(), 2, "both pages reported, once each");
    });
}

#[test]
fn hugepage_request_never_fails() {
    on_thread(
        PoolConfig {
            max_pages_per_core: 1,
            use_hugepages: true,
        },
        || {
            let b = alloc(4096).expect("falls back to ordinary pages");
            let s = stats();
            assert_eq!(s.pages, 1);
            let reserved = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if reserved == Some(0) {
                assert!(
                    !s.hugepages,
                    "no hugepages reserved, so none can back the pool"
                );
            }
            drop(b);
        },
    );
}

#[test]
fn foreign_free_returns_home() {
    on_thread(cfg(4), || {
        let bufs: Vec<DmaBuf> = (0..100)
            .map(|i| alloc(512 << (i % NUM_CLASSES)).unwrap())
            .collect();
        assert_eq!(stats().objects_in_use, 100);
        std::thread::spawn(move || drop(bufs)).join().unwrap();
        assert_eq!(stats().objects_in_use, 0, "remote frees drained by stats");
        assert!(states()
            .iter()
            .all(|s| matches!(s.0, SliceState::Dirty | SliceState::Clean)));
        // The objects are reusable.
        let again: Vec<DmaBuf> = (0..100).map(|_| alloc(4096).unwrap()).collect();
        assert_eq!(stats().objects_in_use, 100);
        drop(again);
    });
}

#[test]
fn foreign_frees_concurrent_with_home_allocs() {
    on_thread(cfg(8), || {
        let (tx, rx) = std::sync::mpsc::channel::<DmaBuf>();
        let freer = std::thread::spawn(move || rx.into_iter().for_each(drop));
        let mut kept = Vec::new();
        for i in 0..20_000usize {
            // The freer may lag: wait for its frees rather than fail.
            let b = block_on(alloc_wait(512 << (i % 4))).expect("valid size");
            if i % 7 == 0 {
                kept.push(b);
            } else {
                tx.send(b).unwrap();
            }
        }
        drop(tx);
        freer.join().unwrap();
        assert_eq!(stats().objects_in_use, kept.len());
        drop(kept);
        assert_eq!(stats().objects_in_use, 0);
    });
}

#[test]
fn buffer_outlives_its_home_thread() {
    let (mut bufs, weak) = std::thread::spawn(|| {
        thread::install_for_test(cfg(2));
        let bufs: Vec<DmaBuf> = (0..4u8)
            .map(|i| {
                let mut b = alloc(8192).unwrap();
                b.as_mut_slice().fill(i);
                b
            })
            .collect();
        (bufs, thread::current_weak())
    })
    .join()
    .unwrap();
    assert!(
        weak.upgrade().is_some(),
        "pages stay mapped while buffers are out"
    );
    for (i, b) in bufs.iter_mut().enumerate() {
        assert!(b.as_slice().iter().all(|&x| x == i as u8));
        b.as_mut_slice().fill(0xff);
    }
    // Free from two threads at once, plus this one.
    let last = bufs.pop().unwrap();
    let half = bufs.split_off(1);
    let t = std::thread::spawn(move || drop(half));
    drop(bufs);
    t.join().unwrap();
    assert!(weak.upgrade().is_some(), "one buffer still out");
    drop(last);
    assert!(
        weak.upgrade().is_none(),
        "domain freed with its last buffer"
    );
}

#[test]
fn idle_domain_freed_when_its_thread_exits() {
    let weak = on_thread(cfg(1), || {
        drop(alloc(512).unwrap());
        thread::current_weak()
    });
    assert!(weak.upgrade().is_none());
}

#[test]
fn alloc_wait_wakes_after_local_free() {
    on_thread(cfg(1), || {
        let mut held: Vec<DmaBuf> = (0..PAGE_SIZE / K128)
            .map(|_| alloc(K128).unwrap())
            .collect();
        let (cw, waker) = count_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(alloc_wait(K128));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(with_domain(|d| d.waiter_count()), 1);
        assert_eq!(cw.wakes.load(Ordering::SeqCst), 0);
        held.pop();
        assert_eq!(cw.wakes.load(Ordering::SeqCst), 1, "free woke the waiter");
        let Poll::Ready(Ok(b)) = fut.as_mut().poll(&mut cx) else {
            panic!("not ready")
        };
        assert_eq!(b.capacity(), K128);
        assert_eq!(with_domain(|d| d.waiter_count()), 0);
    });
}

#[test]
fn alloc_wait_wakes_after_remote_free() {
    on_thread(cfg(1), || {
        let mut held: Vec<DmaBuf> = (0..PAGE_SIZE / K128)
            .map(|_| alloc(K128).unwrap())
            .collect();
        let (cw, waker) = count_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(alloc_wait(K128));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let one = held.pop().unwrap();
        std::thread::spawn(move || drop(one)).join().unwrap();
        wait_wakes(&cw, 1);
        let Poll::Ready(Ok(b)) = fut.as_mut().poll(&mut cx) else {
            panic!("not ready")
        };
        assert_eq!(b.capacity(), K128);
        // A smaller class needs a whole free slice: one freed 128 KiB object is not enough.
        let mut small = pin!(alloc_wait(4096));
        assert!(small.as_mut().poll(&mut cx).is_pending());
        let two = held.pop().unwrap();
        std::thread::spawn(move || drop(two)).join().unwrap();
        wait_wakes(&cw, 2);
        assert!(
            small.as_mut().poll(&mut cx).is_pending(),
            "its slice still holds `b`"
        );
        std::thread::spawn(move || drop(b)).join().unwrap();
        wait_wakes(&cw, 3);
        let Poll::Ready(Ok(s)) = small.as_mut().poll(&mut cx) else {
            panic!("not ready")
        };
        assert_eq!(s.capacity(), 4096);
    });
}

#[test]
fn alloc_wait_with_executor_and_remote_freer() {
    on_thread(cfg(1), || {
        let held: Vec<DmaBuf> = (0..PAGE_SIZE / K128)
            .map(|_| alloc(K128).unwrap())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel::<DmaBuf>();
        let freer = std::thread::spawn(move || rx.into_iter().for_each(drop));
        let mut got = Vec::new();
        // Each wait is satisfied by a buffer freed on the other thread.
        for b in held {
            tx.send(b).unwrap();
            got.push(block_on(alloc_wait(K128)).expect("woken by the remote free"));
        }
        drop(tx);
        freer.join().unwrap();
        assert_eq!(stats().objects_in_use, got.len());
    });
}

#[test]
fn distinct_buffers_never_overlap() {
    on_thread(cfg(8), || {
        let sizes = [512, 700, 1024, 3000, 4096, 8192, 20_000, 65_536, K128];
        let mut bufs: Vec<DmaBuf> = Vec::new();
        let fill = |bufs: &mut Vec<DmaBuf>, n: usize| {
            for i in 0..n {
                bufs.push(alloc(sizes[i % sizes.len()]).unwrap());
            }
        };
        let check = |bufs: &mut Vec<DmaBuf>| {
            for (i, b) in bufs.iter_mut().enumerate() {
                let tag = (i as u32).to_le_bytes();
                for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
                    *x = tag[j % 4] ^ j as u8;
                }
            }
            for (i, b) in bufs.iter().enumerate() {
                let tag = (i as u32).to_le_bytes();
                assert!(b
                    .as_slice()
                    .iter()
                    .enumerate()
                    .all(|(j, &x)| x == tag[j % 4] ^ j as u8));
            }
            let mut ranges: Vec<(usize, usize)> = bufs
                .iter()
                .map(|b| (b.as_ptr() as usize, b.capacity()))
                .collect();
            ranges.sort_unstable();
            assert!(ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
        };
        fill(&mut bufs, 90);
        check(&mut bufs);
        // Free every other one (slices go partial/dirty), refill: reuse and re-purposing.
        let mut i = 0;
        bufs.retain(|_| {
            i += 1;
            i % 2 == 0
        });
        bufs.reverse();
        fill(&mut bufs, 90);
        check(&mut bufs);
    });
}

#[test]
fn configure_applies_to_new_threads_and_clamps() {
    configure(PoolConfig {
        max_pages_per_core: usize::MAX,
        use_hugepages: false,
    });
    assert_eq!(config().max_pages_per_core, MAX_PAGES_LIMIT);
    configure(PoolConfig {
        max_pages_per_core: 1,
        use_hugepages: false,
    });
    let (exhausted, pages) = std::thread::spawn(|| {
        let held: Vec<DmaBuf> = (0..PAGE_SIZE / K128)
            .map(|_| alloc(K128).unwrap())
            .collect();
        let r = alloc(K128).unwrap_err();
        drop(held);
        (r, stats().pages)
    })
    .join()
    .unwrap();
    configure(PoolConfig::default());
    assert_eq!((exhausted, pages), (PoolError::Exhausted, 1));
}
