//! Per core and RDMA device: the completion queue every QP of the core on that device uses,
//! the shared receive queue with its registered buffers, and the memory regions of the core's
//! buffer-pool pages. Created on the core when its first connection on the device arrives;
//! lives as long as the core.
//!
//! Pool pages are registered once each (`keel_reactor::pool::on_page_mapped` reports existing
//! pages at once and new ones as the pool grows), so the I/O path only looks a key up.

use super::devices::RdmaDevice;
use super::recv::RecvArena;
use super::wr_id::{Kind, WrId};
use super::RdmaConfig;
use crate::verbs::{Access, CompChannel, CompletionQueue, Error, MemoryRegion, SharedReceiveQueue};
use keel_reactor::pool::PAGE_SIZE;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Memory regions of this core's pool pages, by page number (address / [`PAGE_SIZE`]).
type PageMrs = HashMap<usize, MemoryRegion>;

/// One core's resources on one device.
pub(crate) struct CoreDev {
    /// The device.
    pub dev: Arc<RdmaDevice>,
    /// The core's completion queue on the device (sends and receives of every QP).
    pub cq: Arc<CompletionQueue>,
    /// Interrupt mode: the completion channel the CQ reports to (its fd wakes the reactor).
    pub comp: Option<Arc<CompChannel>>,
    /// The shared receive queue and its buffers (`None` with `no_srq`).
    pub srq: Option<(Arc<SharedReceiveQueue>, RecvArena)>,
    mrs: Rc<RefCell<PageMrs>>,
    /// CQ entries not yet promised to a QP.
    cqe_left: Cell<u32>,
}

impl CoreDev {
    /// Set up the calling core's resources on `dev`; with `interrupt`, the CQ gets a completion
    /// channel whose fd is registered with the reactor, and is armed.
    pub fn new(
        dev: Arc<RdmaDevice>,
        cfg: &RdmaConfig,
        interrupt: bool,
    ) -> Result<Rc<CoreDev>, Error> {
        let a = dev.attr.0;
        let max_cqe = u32::try_from(a.max_cqe).unwrap_or(0).max(1);
        let srq_depth = cfg.srq_depth.min(u32::try_from(a.max_srq_wr).unwrap_or(0));
        if cfg.srq_depth > 0 && srq_depth < 2 {
            return Err(Error::new(
                "ibv_create_srq (device has no SRQ)",
                libc::ENOTSUP,
            ));
        }
        let cqe = srq_depth.saturating_add(cfg.num_cqe).min(max_cqe);
        let comp = if interrupt {
            Some(CompChannel::new(&dev.ctx)?)
        } else {
            None
        };
        let cq = CompletionQueue::new(&dev.ctx, cqe, comp.as_ref(), 0)?;
        if let Some(c) = &comp {
            cq.req_notify(false)?;
            keel_reactor::register_interrupt_fd(c.fd());
        }
        let srq = if srq_depth > 0 {
            let srq = SharedReceiveQueue::new(&dev.pd, srq_depth, 1)?;
            let arena = RecvArena::new(&dev.pd, srq_depth, cfg.icd)?;
            for i in 0..arena.count() {
                let id = WrId {
                    kind: Kind::SrqRecv,
                    gen: 0,
                    token: 0,
                    index: i,
                }
                .encode();
                // SAFETY: each buffer is posted once here; the arena and the SRQ live together
                // in this CoreDev, on the same PD.
                unsafe { arena.post(i, id, |w| srq.post_recv(w)) }.map_err(|e| e.error)?;
            }
            Some((srq, arena))
        } else {
            None
        };
        let mrs = Rc::new(RefCell::new(PageMrs::new()));
        let d = Rc::new(CoreDev {
            cqe_left: Cell::new(cqe - srq_depth),
            dev,
            cq,
            comp,
            srq,
            mrs: mrs.clone(),
        });
        let pd = d.dev.pd.clone();
        keel_reactor::pool::on_page_mapped(move |addr, len| {
            // SAFETY: pool pages stay mapped for the life of the thread's pool, which outlives
            // this hook (hooks are dropped when the thread exits).
            match unsafe { MemoryRegion::register(&pd, addr, len, Access::LOCAL_WRITE) } {
                Ok(mr) => {
                    mrs.borrow_mut().insert(addr as usize / PAGE_SIZE, mr);
                }
                Err(e) => log::error!(
                    "nvmf/rdma: cannot register pool page {addr:p} ({len} B): {e}; I/O using \
                     it will fail (is RLIMIT_MEMLOCK too low?)"
                ),
            }
        });
        log::info!(
            "nvmf/rdma: core {:?}: CQ of {cqe} entries, {}",
            keel_reactor::current_core(),
            if srq_depth > 0 {
                format!("SRQ of {srq_depth} receives")
            } else {
                "no SRQ".to_string()
            }
        );
        Ok(d)
    }

    /// Interrupt mode, with the CQ found empty: consume the channel's events and re-arm the
    /// CQ. Returns true when completions may have slipped in before the re-arm (poll again).
    pub fn rearm(&self) -> bool {
        let Some(comp) = &self.comp else {
            return false;
        };
        loop {
            match comp.poll_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    log::error!("nvmf/rdma: reading completion events: {e}");
                    break;
                }
            }
        }
        if let Err(e) = self.cq.req_notify(false) {
            log::error!("nvmf/rdma: arming the completion queue: {e}");
        }
        true
    }

    /// HOT PATH: the local key covering `len` bytes at `addr` of a pool buffer.
    #[inline]
    pub fn lkey(&self, addr: *const u8, len: usize) -> Option<u32> {
        let page = addr as usize / PAGE_SIZE;
        let mrs = self.mrs.borrow();
        let mr = mrs.get(&page)?;
        mr.contains(addr as usize, len).then(|| mr.lkey())
    }

    /// HOT PATH: give SRQ buffer `idx` back to the shared receive queue.
    #[inline]
    pub fn repost_srq(&self, idx: u32) {
        let Some((srq, arena)) = &self.srq else {
            return;
        };
        if !arena.valid(idx) {
            return;
        }
        let id = WrId {
            kind: Kind::SrqRecv,
            gen: 0,
            token: 0,
            index: idx,
        }
        .encode();
        // SAFETY: the caller (the receive path) owned buffer `idx` since its completion and
        // is done with it.
        if let Err(e) = unsafe { arena.post(idx, id, |w| srq.post_recv(w)) } {
            log::error!(
                "nvmf/rdma: cannot repost a shared receive buffer: {}",
                e.error
            );
        }
    }

    /// Promise `n` CQ entries to a new QP; false when the CQ cannot take them.
    pub fn reserve_cqes(&self, n: u32) -> bool {
        let left = self.cqe_left.get();
        if left < n {
            return false;
        }
        self.cqe_left.set(left - n);
        true
    }

    /// A QP is gone: its CQ entries are free again.
    pub fn release_cqes(&self, n: u32) {
        self.cqe_left.set(self.cqe_left.get() + n);
    }
}
