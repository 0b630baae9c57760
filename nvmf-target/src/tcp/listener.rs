//! The TCP transport object and its listeners (control path).
//!
//! `listen` binds a non-blocking listening socket (SO_REUSEADDR) and hands it to the main core,
//! where one poller accepts on every listener and gives each new connection to a core,
//! round-robin, for its whole life (`keel_reactor::send_to`).
//!
//! When it accepts: in interrupt mode the listening sockets are in the reactor's epoll set and
//! the poller calls `accept` only on a listener the reactor saw readable
//! (`keel_reactor::take_interrupt_fd_ready`), so an idle target makes no accept call and no
//! wake-up for its listeners. In busy-polling mode nothing watches the sockets: the poller
//! tries every [`ACCEPT_PERIOD`].

use super::conn::ConnConfig;
use super::group;
use crate::transport::{ListenAddr, TrType, Transport, TransportError, TransportOpts};
use keel_reactor::{PollStatus, PollerId};
use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// MAXH2CDATA we announce: the largest H2CData PDU we take.
pub const MAXH2CDATA: u32 = 128 * 1024;
/// In-capsule data the Linux host may send on the admin queue (NVME_TCP_ADMIN_CCSZ).
const ADMIN_ICD: u32 = 8192;
/// Busy-polling mode: how often the accept poller tries the listeners. An empty `accept`
/// costs ~1.3 µs here (a C loop of accept4 on an idle non-blocking socket); every 10 ms (as
/// SPDK's default acceptor poll rate) that is 0.013% of the main core instead of 0.26% at the
/// former 0.5 ms, for at most 10 ms more before a new connection's ICReq is read (once per
/// queue, at connect time). Interrupt mode does not use it: the sockets wake the reactor.
const ACCEPT_PERIOD: Duration = Duration::from_millis(10);
/// Connections accepted per listener per accept poll.
const ACCEPT_BATCH: usize = 16;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The NVMe/TCP transport (one per `nvmf_create_transport`).
pub struct TcpTransport {
    id: u64,
    opts: TransportOpts,
    cfg: ConnConfig,
    /// Addresses listened on (control path bookkeeping; the sockets live on the main core).
    listening: Mutex<Vec<(ListenAddr, SocketAddr)>>,
}

impl TcpTransport {
    /// A transport with `opts` (validated).
    pub fn new(opts: TransportOpts) -> Result<TcpTransport, TransportError> {
        let bad = |m: &str| Err(TransportError::Unavailable(format!("TCP transport: {m}")));
        if opts.max_queue_depth < 2 || opts.max_aq_depth < 2 {
            return bad("queue depths must be at least 2");
        }
        let max_io = (keel_bdev::MAX_IOVS * keel_reactor::pool::MAX_CLASS) as u32;
        if opts.max_io_size == 0 || opts.max_io_size > max_io {
            return bad(&format!("max_io_size must be in 1..={max_io}"));
        }
        if opts.in_capsule_data_size > 128 * 1024 {
            return bad("in_capsule_data_size above 128 KiB");
        }
        let chunk = (opts.io_unit_size as usize).clamp(4096, keel_reactor::pool::MAX_CLASS);
        if (opts.max_io_size as usize).div_ceil(chunk) > keel_bdev::MAX_IOVS {
            return bad("io_unit_size too small for max_io_size");
        }
        let cfg = ConnConfig {
            slots: opts.max_queue_depth.max(opts.max_aq_depth) as usize,
            icd_io: opts.in_capsule_data_size,
            icd_admin: opts.in_capsule_data_size.max(ADMIN_ICD),
            maxh2cdata: MAXH2CDATA,
            max_io_size: opts.max_io_size.max(opts.in_capsule_data_size),
            buf_chunk: chunk,
            c2h_success: opts.c2h_success,
            aq_depth: opts.max_aq_depth,
        };
        Ok(TcpTransport {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            opts,
            cfg,
            listening: Mutex::new(Vec::new()),
        })
    }

    fn listening(&self) -> std::sync::MutexGuard<'_, Vec<(ListenAddr, SocketAddr)>> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One listening socket on the main core.
struct Listener {
    transport_id: u64,
    addr: SocketAddr,
    sock: TcpListener,
    listen: ListenAddr,
    cfg: ConnConfig,
    /// The last poll stopped at [`ACCEPT_BATCH`]: more connections may wait (try again even
    /// if the reactor does not report the socket readable again).
    more: std::cell::Cell<bool>,
}

/// The main core's listeners and accept poller.
struct Acceptor {
    listeners: Vec<Listener>,
    poller: Option<PollerId>,
    next: usize,
}

thread_local! {
    static ACCEPTOR: RefCell<Acceptor> = const { RefCell::new(Acceptor {
        listeners: Vec::new(),
        poller: None,
        next: 0,
    }) };
}

fn accept_poll() -> PollStatus {
    let mut accepted = Vec::new();
    ACCEPTOR.with(|a| {
        let a = a.borrow();
        for l in &a.listeners {
            let ready = keel_reactor::take_interrupt_fd_ready(l.sock.as_raw_fd());
            if !ready && !l.more.get() {
                continue;
            }
            let mut more = true;
            for _ in 0..ACCEPT_BATCH {
                match l.sock.accept() {
                    Ok((s, peer)) => {
                        accepted.push((s, peer, l.listen.clone(), l.cfg, l.transport_id))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        more = false;
                        break;
                    }
                    Err(e) => {
                        // E.g. EMFILE: the connection stays queued; the level-triggered
                        // socket reports it again at the next sleep (or the next period).
                        log::warn!("nvmf/tcp: accept on {} failed: {e}", l.addr);
                        more = false;
                        break;
                    }
                }
            }
            l.more.set(more);
        }
    });
    if accepted.is_empty() {
        return PollStatus::Idle;
    }
    let cores = keel_reactor::cores();
    for (sock, peer, listen, cfg, tid) in accepted {
        if let Err(e) = sock
            .set_nonblocking(true)
            .and_then(|_| sock.set_nodelay(true))
        {
            log::warn!("nvmf/tcp: cannot set up the connection from {peer}: {e}");
            continue;
        }
        let core = ACCEPTOR.with(|a| {
            let mut a = a.borrow_mut();
            let c = cores[a.next % cores.len().max(1)];
            a.next = a.next.wrapping_add(1);
            c
        });
        log::info!(
            "nvmf/tcp: connection from {peer} on {}:{} → core {core}",
            listen.traddr,
            listen.trsvcid
        );
        if let Err(e) =
            keel_reactor::send_to(core, move || group::add_connection(sock, listen, cfg, tid))
        {
            log::warn!("nvmf/tcp: cannot hand the connection from {peer} to core {core}: {e}");
        }
    }
    PollStatus::Busy
}

fn add_listener(l: Listener) {
    keel_reactor::register_interrupt_fd(l.sock.as_raw_fd());
    ACCEPTOR.with(|a| {
        let mut a = a.borrow_mut();
        a.listeners.push(l);
        if a.poller.is_none() {
            // Interrupt mode: on every iteration, but `accept_poll` only calls `accept` on a
            // socket the reactor saw readable.
            let period = (!interrupt_mode()).then_some(ACCEPT_PERIOD);
            a.poller = Some(keel_reactor::register_poller(
                "nvmf_tcp_accept",
                period,
                accept_poll,
            ));
        }
    });
}

/// Whether the calling core's reactor runs in interrupt mode.
fn interrupt_mode() -> bool {
    let core = keel_reactor::current_core();
    keel_reactor::reactor_stats()
        .iter()
        .any(|s| Some(s.lcore) == core && s.interrupt_mode)
}

fn remove_listeners(transport_id: u64, addr: Option<SocketAddr>) {
    ACCEPTOR.with(|a| {
        let mut a = a.borrow_mut();
        let (gone, kept): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut a.listeners)
            .into_iter()
            .partition(|l| l.transport_id == transport_id && addr.is_none_or(|x| x == l.addr));
        a.listeners = kept;
        for l in gone {
            keel_reactor::unregister_interrupt_fd(l.sock.as_raw_fd());
            log::info!("nvmf/tcp: stopped listening on {}", l.addr);
        }
        if a.listeners.is_empty() {
            if let Some(p) = a.poller.take() {
                keel_reactor::unregister_poller(p);
            }
        }
    });
}

/// Run `f` on the main core (directly when already there).
fn on_main(f: impl FnOnce() + Send + 'static) -> Result<(), TransportError> {
    let main = keel_reactor::main_core()
        .ok_or_else(|| TransportError::Unavailable("the reactor runtime is not running".into()))?;
    if keel_reactor::current_core() == Some(main) {
        f();
        return Ok(());
    }
    keel_reactor::send_to(main, f).map_err(|e| TransportError::Unavailable(e.to_string()))
}

impl Transport for TcpTransport {
    fn trtype(&self) -> TrType {
        TrType::Tcp
    }

    fn opts(&self) -> &TransportOpts {
        &self.opts
    }

    fn listen(&self, addr: &ListenAddr) -> Result<(), TransportError> {
        let sa = addr.socket_addr(TrType::Tcp)?;
        let mut listening = self.listening();
        if listening.iter().any(|(_, a)| *a == sa) {
            return Err(TransportError::AddrInUse(sa.to_string()));
        }
        // std sets SO_REUSEADDR on listening sockets on Unix.
        let sock = TcpListener::bind(sa).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => TransportError::AddrInUse(sa.to_string()),
            _ => TransportError::BadAddress(sa.to_string(), e.to_string()),
        })?;
        sock.set_nonblocking(true)
            .map_err(|e| TransportError::BadAddress(sa.to_string(), e.to_string()))?;
        let bound = sock.local_addr().unwrap_or(sa);
        let l = Listener {
            transport_id: self.id,
            addr: sa,
            sock,
            listen: addr.clone(),
            cfg: self.cfg,
            more: std::cell::Cell::new(false),
        };
        on_main(move || add_listener(l))?;
        listening.push((addr.clone(), sa));
        log::info!("nvmf/tcp: listening on {bound}");
        Ok(())
    }

    fn stop_listen(&self, addr: &ListenAddr) -> Result<(), TransportError> {
        let sa = addr.socket_addr(TrType::Tcp)?;
        let mut listening = self.listening();
        let Some(pos) = listening.iter().position(|(_, a)| *a == sa) else {
            return Err(TransportError::NotListening(sa.to_string()));
        };
        listening.remove(pos);
        let id = self.id;
        on_main(move || remove_listeners(id, Some(sa)))
    }

    /// Stop listening, close every connection, and call `done` once each core has freed its
    /// connections of this transport (requests still running in the core come back first).
    fn shutdown(&self, done: Box<dyn FnOnce() + Send>) {
        self.listening().clear();
        let id = self.id;
        let closed = on_main(move || remove_listeners(id, None));
        if closed.is_err() {
            done();
            return;
        }
        let wait = crate::transport::ShutdownWait::new(keel_reactor::cores().len(), done);
        let w = wait.clone();
        if let Err(e) = keel_reactor::for_each_core(move || group::close_all(id, w.clone()), || {})
        {
            log::warn!("nvmf/tcp: shutdown could not reach every core: {e}");
            wait.finish();
        }
    }
}
