//! The NVMe/TCP [`Target`]: one initiator I/O queue pair per core (keel-nvmf's
//! [`keel_nvmf_host`]), against a controller whose admin queue lives on the main core.
//! `-r 'trtype:tcp traddr:… trsvcid:… subnqn:…'`, `-H`/`-D` for digests.

use super::target::{Completion, Direction, SubmitError, Target, TargetError, TargetFactory};
use keel_bdev::IoVec;
use keel_nvmf_host::{ConnectOpts, Controller, CtrlrInfo, IoQpair};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// The controllers (admin queues) connected on this core.
    static CONTROLLERS: RefCell<Vec<Controller>> = const { RefCell::new(Vec::new()) };
}

/// Connect the controller on the calling reactor and keep its admin queue there (until
/// [`disconnect_controller`] on the same core). Returns what the I/O queues need (and what
/// names the controller to [`disconnect_controller`]).
pub async fn connect_controller(opts: ConnectOpts) -> Result<Arc<CtrlrInfo>, String> {
    let ctrlr = Controller::connect(&opts)
        .await
        .map_err(|e| format!("cannot connect to {} at {}: {e}", opts.subnqn, opts.addr))?;
    let info = Arc::clone(ctrlr.info());
    CONTROLLERS.with(|c| c.borrow_mut().push(ctrlr));
    Ok(info)
}

/// Shut down (CC.SHN) and drop the controller of `info` that [`connect_controller`] kept on
/// this core. Returns whether it was there.
pub async fn disconnect_controller(info: &Arc<CtrlrInfo>) -> bool {
    let ctrlr = CONTROLLERS.with(|c| {
        let mut v = c.borrow_mut();
        let i = v.iter().position(|ctrlr| Arc::ptr_eq(ctrlr.info(), info))?;
        Some(v.swap_remove(i))
    });
    let Some(ctrlr) = ctrlr else {
        return false;
    };
    if let Err(e) = ctrlr.shutdown().await {
        log::warn!("nvme/tcp {}: shutdown not acknowledged: {e}", info.addr);
    }
    true
}

/// Makes one I/O queue pair per core for namespace `nsid` of a connected controller.
#[derive(Debug, Clone)]
pub struct NvmfTcpTargetFactory {
    /// The controller (from [`connect_controller`]).
    pub info: Arc<CtrlrInfo>,
    /// The namespace to drive.
    pub nsid: u32,
}

/// One core's queue pair.
pub struct NvmfTcpTarget {
    qp: IoQpair,
}

impl TargetFactory for NvmfTcpTargetFactory {
    type Target = NvmfTcpTarget;

    async fn connect(&self, _write: bool) -> Result<NvmfTcpTarget, TargetError> {
        let qp = IoQpair::connect(&self.info, self.nsid)
            .await
            .map_err(|e| TargetError(format!("cannot connect an I/O queue: {e}")))?;
        Ok(NvmfTcpTarget { qp })
    }
}

impl Target for NvmfTcpTarget {
    fn describe(&self) -> String {
        let i = self.qp.info();
        format!(
            "nvme/tcp {} {} ns {} (digests: header {}, data {})",
            i.addr,
            i.subnqn,
            self.qp.namespace().nsid,
            if i.hdgst { "on" } else { "off" },
            if i.ddgst { "on" } else { "off" }
        )
    }
    fn block_size(&self) -> u32 {
        self.qp.namespace().block_size
    }
    fn num_blocks(&self) -> u64 {
        self.qp.namespace().num_blocks
    }
    fn stores_data(&self) -> bool {
        // A remote namespace cannot tell; a null bdev behind it shows up as verify errors.
        true
    }
    #[inline]
    fn submit(
        &self,
        dir: Direction,
        iov: IoVec,
        offset_blocks: u64,
        num_blocks: u64,
        cb: Completion,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        let blocks = u32::try_from(num_blocks)
            .map_err(|_| SubmitError::Rejected("too many blocks for one command".into()))?;
        let iovs = [iov];
        let r = match dir {
            Direction::Read => self.qp.read(&iovs, offset_blocks, blocks, cb, ctx),
            Direction::Write => self.qp.write(&iovs, offset_blocks, blocks, cb, ctx),
        };
        r.map_err(|e| match e {
            keel_nvmf_host::SubmitError::Busy => SubmitError::Busy,
            other => SubmitError::Rejected(other.to_string()),
        })
    }
}

impl Drop for NvmfTcpTarget {
    fn drop(&mut self) {
        let s = self.qp.stats();
        log::info!(
            "nvme/tcp qid {}: {} commands, {} errors, {} sendmsg, {} recvmsg, C2H payload {} B \
             received in place, {} B copied from staging",
            self.qp.qid(),
            s.completed,
            s.errors,
            s.sends,
            s.recvs,
            s.rx_direct_bytes,
            s.rx_staged_bytes
        );
    }
}
