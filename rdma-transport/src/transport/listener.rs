//! The main core's RDMA CM event channel and listening ids (control path).
//!
//! A poller reads the channel (never blocking). A CONNECT_REQUEST's private data is checked
//! against the transport's limits and REJECTed with the NVMe-oF status on failure; a good
//! request's id is handed to a core, round-robin, which creates the QP and accepts
//! (`group::add_connection`). From then on the id reports to that core's own channel.

use super::{group, RdmaConfig};
use crate::nvmf_cm::{encode_reject, parse_request, CmLimits, RejectStatus};
use crate::verbs::{CmEvent, CmEventChannel, CmEventKind, CmId};
use keel_nvmf::transport::{ListenAddr, TransportError};
use keel_reactor::{PollStatus, PollerId};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Busy polling: how often the main core reads CM events. (Interrupt mode runs the poller on
/// every reactor iteration instead, and it reads the channel only when the reactor saw its fd
/// readable: the fd wakes the reactor, polling it on a period would wake it for nothing, and
/// a poll(2) on every iteration would cost a system call per iteration under load.)
const CM_POLL_PERIOD: Duration = Duration::from_micros(500);
/// Events handled per poll.
const CM_BATCH: usize = 32;

struct Listener {
    transport_id: u64,
    addr: SocketAddr,
    listen: ListenAddr,
    cfg: Arc<RdmaConfig>,
    id: CmId,
}

struct MainCm {
    channel: CmEventChannel,
    listeners: Vec<Listener>,
    poller: Option<PollerId>,
    next_core: usize,
    /// The last poll stopped at [`CM_BATCH`]: read again without waiting for the fd.
    more: bool,
}

thread_local! {
    static MAIN: RefCell<Option<MainCm>> = const { RefCell::new(None) };
}

/// Run `f` on the main core (directly when already there) and wait for its result.
fn on_main<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    let main = keel_reactor::main_core()
        .ok_or_else(|| TransportError::Unavailable("the reactor runtime is not running".into()))?;
    if keel_reactor::current_core() == Some(main) {
        return f();
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    keel_reactor::send_to(main, move || {
        let _ = tx.send(f());
    })
    .map_err(|e| TransportError::Unavailable(e.to_string()))?;
    rx.recv()
        .map_err(|_| TransportError::Unavailable("the main core did not answer".into()))?
}

/// Listen on `sa` for transport `transport_id` (on the main core).
pub(crate) fn listen(
    transport_id: u64,
    listen: ListenAddr,
    sa: SocketAddr,
    backlog: i32,
    cfg: Arc<RdmaConfig>,
) -> Result<(), TransportError> {
    on_main(move || {
        MAIN.with(|m| {
            let mut m = m.borrow_mut();
            if m.is_none() {
                let channel = CmEventChannel::new().map_err(|e| {
                    TransportError::Unavailable(format!("RDMA CM event channel: {e}"))
                })?;
                keel_reactor::register_interrupt_fd(channel.fd());
                *m = Some(MainCm {
                    channel,
                    listeners: Vec::new(),
                    poller: None,
                    next_core: 0,
                    more: false,
                });
            }
            let main = m.as_mut().expect("set above");
            if main.listeners.iter().any(|l| l.addr == sa) {
                return Err(TransportError::AddrInUse(sa.to_string()));
            }
            let bad = |e: crate::verbs::Error| {
                if e.errno() == libc::EADDRINUSE {
                    TransportError::AddrInUse(sa.to_string())
                } else {
                    TransportError::BadAddress(sa.to_string(), e.to_string())
                }
            };
            let mut id = main.channel.create_id(0).map_err(bad)?;
            id.bind(sa).map_err(bad)?;
            id.listen(backlog).map_err(bad)?;
            log::info!("nvmf/rdma: listening on {sa}");
            main.listeners.push(Listener {
                transport_id,
                addr: sa,
                listen,
                cfg,
                id,
            });
            if main.poller.is_none() {
                main.poller = Some(keel_reactor::register_poller(
                    "nvmf_rdma_cm",
                    (!group::interrupt_mode()).then_some(CM_POLL_PERIOD),
                    poll,
                ));
            }
            Ok(())
        })
    })
}

/// Stop listening on `addr` (every address of the transport with `None`).
pub(crate) fn stop(transport_id: u64, addr: Option<SocketAddr>) -> Result<(), TransportError> {
    on_main(move || {
        MAIN.with(|m| {
            let mut m = m.borrow_mut();
            let Some(main) = m.as_mut() else {
                return Ok(());
            };
            main.listeners.retain(|l| {
                let gone = l.transport_id == transport_id && addr.is_none_or(|a| a == l.addr);
                if gone {
                    log::info!("nvmf/rdma: stopped listening on {}", l.addr);
                }
                !gone
            });
            Ok(())
        })
    })
}

fn poll() -> PollStatus {
    let mut events: [Option<CmEvent>; CM_BATCH] = std::array::from_fn(|_| None);
    let n = MAIN.with(|m| {
        let mut m = m.borrow_mut();
        let Some(main) = m.as_mut() else { return 0 };
        // Always true in busy-polling mode (nothing watches the fd there).
        let ready = keel_reactor::take_interrupt_fd_ready(main.channel.fd());
        if !ready && !main.more {
            return 0;
        }
        let mut n = 0;
        while n < CM_BATCH {
            match main.channel.poll_event() {
                Ok(Some(ev)) => {
                    events[n] = Some(ev);
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("nvmf/rdma: reading CM events: {e}");
                    break;
                }
            }
        }
        main.more = n == CM_BATCH;
        n
    });
    for ev in events.iter_mut().take(n).filter_map(Option::take) {
        handle(ev);
    }
    if n == 0 {
        PollStatus::Idle
    } else {
        PollStatus::Busy
    }
}

fn handle(mut ev: CmEvent) {
    match ev.kind() {
        CmEventKind::ConnectRequest => connect_request(&mut ev),
        CmEventKind::DeviceRemoval => log::error!(
            "nvmf/rdma: the device under a listener was removed; re-add the listener once it \
             is back"
        ),
        CmEventKind::AddrChange => log::warn!("nvmf/rdma: a listener's address changed"),
        other => log::debug!("nvmf/rdma: CM event {other:?} on a listener"),
    }
}

fn connect_request(ev: &mut CmEvent) {
    let Some(mut id) = ev.take_id() else {
        return;
    };
    let found = MAIN.with(|m| {
        let m = m.borrow();
        let main = m.as_ref()?;
        let l = main
            .listeners
            .iter()
            .find(|l| Some(l.id.handle()) == ev.listen_id())?;
        Some((l.listen.clone(), l.cfg.clone(), l.transport_id))
    });
    let Some((listen, cfg, transport_id)) = found else {
        log::warn!("nvmf/rdma: connection request on an unknown listener; rejected");
        let _ = id.reject(&encode_reject(RejectStatus::NoResources));
        return;
    };
    let limits = CmLimits {
        max_qid: cfg.max_qid,
        max_queue_depth: cfg.max_queue_depth,
        max_aq_depth: cfg.max_aq_depth,
    };
    let req = match parse_request(ev.private_data(), &limits) {
        Ok(r) => r,
        Err(status) => {
            log::warn!(
                "nvmf/rdma: connection request on {}:{} rejected: {status} ({} bytes of \
                 private data)",
                listen.traddr,
                listen.trsvcid,
                ev.private_data().len()
            );
            if let Err(e) = id.reject(&encode_reject(status)) {
                log::warn!("nvmf/rdma: rdma_reject: {e}");
            }
            return;
        }
    };
    let peer_rd = group::PeerRdma {
        initiator_depth: ev.initiator_depth(),
        responder_resources: ev.responder_resources(),
    };
    let cores = keel_reactor::cores();
    let core = MAIN.with(|m| {
        let mut m = m.borrow_mut();
        let main = m.as_mut().expect("a listener exists");
        let c = cores[main.next_core % cores.len().max(1)];
        main.next_core = main.next_core.wrapping_add(1);
        c
    });
    log::info!(
        "nvmf/rdma: connection request for queue {} (depth {}) on {}:{} → core {core}",
        req.qid,
        req.sq_entries(),
        listen.traddr,
        listen.trsvcid
    );
    // If the message cannot be sent, the closure (and the id in it) is dropped, which the
    // host sees as a rejected connection.
    if let Err(e) = keel_reactor::send_to(core, move || {
        group::add_connection(id, req, peer_rd, listen, cfg, transport_id)
    }) {
        log::warn!("nvmf/rdma: cannot hand a connection to core {core}: {e}");
    }
}
