//! Admin commands (and Fabrics commands on the admin queue), on the controller's core.

use super::ctrlr::{self, Controller, Features};
use super::fabrics;
use super::identify::{self, CtrlrIdentity};
use super::logpage::{self, DiscEntry, GetLogPage, SmartCounters};
use super::qpair::Qpair;
use super::{iov, state};
use crate::request::ReqPtr;
use crate::spec::cmd::{DataXfer, NvmeCmd, OPC_FABRICS};
use crate::spec::opcode::admin as opc;
use crate::spec::status::Status;
use crate::transport::AdrFam;
use std::rc::Rc;

/// Feature identifiers served.
const FID_ARBITRATION: u8 = 0x01;
const FID_POWER_MGMT: u8 = 0x02;
const FID_TEMP_THRESHOLD: u8 = 0x04;
const FID_ERROR_RECOVERY: u8 = 0x05;
const FID_VOLATILE_WRITE_CACHE: u8 = 0x06;
const FID_NUM_QUEUES: u8 = 0x07;
const FID_INT_COALESCING: u8 = 0x08;
const FID_INT_VECTOR_CONFIG: u8 = 0x09;
const FID_WRITE_ATOMICITY: u8 = 0x0A;
const FID_ASYNC_EVENT_CONFIG: u8 = 0x0B;
const FID_KEEP_ALIVE_TIMER: u8 = 0x0F;
const FID_HOST_IDENTIFIER: u8 = 0x81;

/// How an admin command ended (or that it completes later).
enum Outcome {
    Done(Status, u32),
    Pending,
}

use Outcome::{Done, Pending};

fn err(s: Status) -> Outcome {
    Done(s, 0)
}

/// Run one admin command on controller `c` (its admin queue is `qp`).
pub(crate) fn execute(qp: &Rc<Qpair>, c: &Rc<Controller>, req: ReqPtr) {
    // SAFETY: the request is ours until completed (request.rs contract).
    let r = unsafe { &mut *req.as_ptr() };
    if c.is_destroyed() {
        return qp.finish(req, Status::ABORTED_SQ_DELETION, 0);
    }
    c.touch();
    let cmd = r.cmd;
    let out = if cmd.opc == OPC_FABRICS {
        fabrics_cmd(c, req)
    } else if !c.is_enabled() {
        log::debug!(
            "nvmf: controller {}: admin opcode {:#x} while not enabled",
            c.cntlid(),
            cmd.opc
        );
        err(Status::COMMAND_SEQUENCE_ERROR)
    } else if cmd.flags & 0x3 != 0 {
        err(Status::INVALID_FIELD)
    } else {
        match cmd.opc {
            opc::IDENTIFY => identify_cmd(c, req),
            opc::GET_LOG_PAGE => get_log_page(qp, c, req),
            opc::GET_FEATURES => get_features(c, req),
            opc::SET_FEATURES => set_features(c, &cmd),
            opc::KEEP_ALIVE => Done(Status::SUCCESS, 0),
            opc::ASYNC_EVENT_REQUEST => match c.submit_aer(req) {
                Ok(()) => Pending,
                Err(s) => err(s),
            },
            opc::ABORT => abort(c, &cmd),
            other => {
                log::debug!("nvmf: unsupported admin opcode {other:#x}");
                err(Status::INVALID_OPCODE)
            }
        }
    };
    if let Done(status, cdw0) = out {
        qp.finish(req, status, cdw0);
    }
}

/// Fabrics commands on the admin queue.
fn fabrics_cmd(c: &Controller, req: ReqPtr) -> Outcome {
    // SAFETY: see `execute`.
    let r = unsafe { &mut *req.as_ptr() };
    match fabrics::fctype(&r.cmd) {
        fabrics::FCTYPE_PROPERTY_GET => match fabrics::property_get(c, &r.cmd) {
            Ok(v) => {
                r.rsp.cdw1 = (v >> 32) as u32;
                Done(Status::SUCCESS, v as u32)
            }
            Err(s) => err(s),
        },
        fabrics::FCTYPE_PROPERTY_SET => match fabrics::property_set(c, &r.cmd) {
            Ok(()) => Done(Status::SUCCESS, 0),
            Err(s) => err(s),
        },
        fabrics::FCTYPE_CONNECT => err(Status::COMMAND_SEQUENCE_ERROR),
        fabrics::FCTYPE_DISCONNECT => err(Status::CONNECT_INVALID_QUEUE_TYPE),
        other => {
            log::debug!("nvmf: unsupported fabrics command type {other:#x}");
            err(Status::INVALID_OPCODE)
        }
    }
}

/// Copy `data` to the host (at most the request's length).
fn send_data(req: ReqPtr, data: &[u8]) -> Outcome {
    // SAFETY: see `execute`.
    let r = unsafe { &*req.as_ptr() };
    if r.xfer != DataXfer::ControllerToHost {
        return err(Status::INVALID_FIELD);
    }
    let n = data.len().min(r.length as usize);
    iov::copy_to(r.data_iovs(), 0, &data[..n]);
    Done(Status::SUCCESS, 0)
}

fn identify_cmd(c: &Controller, req: ReqPtr) -> Outcome {
    // SAFETY: see `execute`.
    let cmd = unsafe { req.as_ref() }.cmd;
    let cns = (cmd.cdw10 & 0xff) as u8;
    let csi = (cmd.cdw11 >> 24) as u8;
    let subsys = c.subsys();
    if subsys.is_discovery() && cns != identify::CNS_CONTROLLER {
        return err(Status::INVALID_FIELD);
    }
    let max_ns = subsys.lock().max_namespaces;
    let nsid = cmd.nsid;
    match cns {
        identify::CNS_CONTROLLER => {
            let g = subsys.lock();
            let id = CtrlrIdentity {
                cntlid: c.cntlid(),
                discovery: subsys.is_discovery(),
                subnqn: &subsys.nqn,
                serial: &g.serial,
                model: &g.model,
                max_namespaces: g.max_namespaces,
                max_io_size: c.topts.max_io_size,
                in_capsule_data_size: c.topts.in_capsule_data_size,
                max_queue_depth: c.topts.max_queue_depth,
                max_aers: ctrlr::MAX_AERS as u8,
                kas: ctrlr::KAS_100MS,
            };
            let data = identify::controller(&id);
            drop(g);
            send_data(req, &data)
        }
        identify::CNS_NAMESPACE => {
            if nsid == 0 || (nsid > max_ns && nsid != u32::MAX) {
                return err(Status::INVALID_NAMESPACE_OR_FORMAT);
            }
            match subsys.namespace(nsid) {
                Some(ns) => send_data(req, &identify::namespace(&ns)),
                // Inactive (or the broadcast nsid): zeroed data.
                None => send_data(req, &[0u8; identify::IDENTIFY_LEN]),
            }
        }
        identify::CNS_ACTIVE_NS_LIST => {
            if nsid >= 0xFFFF_FFFE {
                return err(Status::INVALID_NAMESPACE_OR_FORMAT);
            }
            let ids: Vec<u32> = subsys.namespaces().iter().map(|n| n.nsid).collect();
            send_data(req, &identify::active_ns_list(ids, nsid))
        }
        identify::CNS_NS_ID_DESCRIPTORS => match subsys.namespace(nsid) {
            Some(ns) => send_data(req, &identify::ns_id_descriptors(&ns)),
            None => err(Status::INVALID_NAMESPACE_OR_FORMAT),
        },
        identify::CNS_CS_CONTROLLER if csi == 0 => send_data(req, &identify::nvm_cs_controller()),
        other => {
            log::debug!("nvmf: Identify CNS {other:#x} (CSI {csi}) not supported");
            err(Status::INVALID_FIELD)
        }
    }
}

fn get_log_page(qp: &Rc<Qpair>, c: &Rc<Controller>, req: ReqPtr) -> Outcome {
    // SAFETY: see `execute`.
    let r = unsafe { &*req.as_ptr() };
    let cmd = r.cmd;
    let g = GetLogPage::parse(cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13);
    if g.offset & 3 != 0 {
        return err(Status::INVALID_FIELD);
    }
    if g.len > u64::from(r.length) {
        log::debug!(
            "nvmf: Get Log Page {:#x}: {} bytes asked, buffer of {}",
            g.lid,
            g.len,
            r.length
        );
        return err(Status::INVALID_FIELD);
    }
    let len = g.len as usize;
    let discovery = c.subsys().is_discovery();
    let page = match (g.lid, discovery) {
        (logpage::LID_DISCOVERY, true) => {
            c.discovery_log_read(g.rae);
            discovery_log(&c.shared.hostnqn)
        }
        (logpage::LID_ERROR, _) => Vec::new(),
        (logpage::LID_SMART, false) => {
            if cmd.nsid != 0 && cmd.nsid != u32::MAX {
                return err(Status::INVALID_FIELD);
            }
            return smart_log(qp, c, req, g);
        }
        (logpage::LID_FW_SLOT, false) => logpage::firmware_slot(),
        (logpage::LID_CHANGED_NS, false) => c.changed_ns_log(g.rae),
        (logpage::LID_CMD_EFFECTS, false) => logpage::command_effects(),
        (lid, _) => {
            log::debug!("nvmf: Get Log Page {lid:#x} not supported");
            return err(Status::INVALID_FIELD);
        }
    };
    send_data(req, &logpage::window(&page, g.offset, len))
}

/// The SMART page, with counters summed from the namespaces' bdevs (asked of every core).
fn smart_log(qp: &Rc<Qpair>, c: &Controller, req: ReqPtr, g: GetLogPage) -> Outcome {
    let nss = c.subsys().namespaces();
    if keel_reactor::current_core().is_none() {
        return send_data(
            req,
            &logpage::window(
                &logpage::smart(&SmartCounters::default()),
                g.offset,
                g.len as usize,
            ),
        );
    }
    let qp = Rc::clone(qp);
    keel_reactor::spawn_local(async move {
        let mut cnt = SmartCounters::default();
        for ns in nss {
            let s = ns.desc.bdev().io_stats().await;
            cnt.bytes_read = cnt.bytes_read.wrapping_add(s.bytes_read);
            cnt.bytes_written = cnt.bytes_written.wrapping_add(s.bytes_written);
            cnt.read_ops = cnt.read_ops.wrapping_add(s.num_read_ops);
            cnt.write_ops = cnt.write_ops.wrapping_add(s.num_write_ops);
        }
        let page = logpage::window(&logpage::smart(&cnt), g.offset, g.len as usize);
        if let Done(status, cdw0) = send_data(req, &page) {
            qp.finish(req, status, cdw0);
        }
    });
    Pending
}

/// The discovery log as host `hostnqn` sees it: one entry per (allowed subsystem, listener).
pub(crate) fn discovery_log(hostnqn: &str) -> Vec<u8> {
    let genctr = state::genctr();
    let mut entries = Vec::new();
    for s in state::subsystems() {
        if s.is_discovery() || !s.host_allowed(hostnqn) {
            continue;
        }
        let listeners = s.lock().listeners.clone();
        for l in listeners {
            let asqsz = state::transport_opts(l.trtype).map_or(128, |o| o.max_aq_depth);
            entries.push(DiscEntry {
                trtype: l.trtype.wire_value(),
                adrfam: match l.adrfam {
                    AdrFam::Ipv4 => 1,
                    AdrFam::Ipv6 => 2,
                },
                portid: state::portid(&l),
                asqsz,
                trsvcid: l.trsvcid.clone(),
                subnqn: s.nqn.clone(),
                traddr: l.traddr.clone(),
            });
        }
    }
    logpage::discovery(genctr, &entries)
}

/// Value of feature `fid` in `f`, or `None` when the feature is not supported.
fn feature_value(f: &Features, fid: u8, cdw11: u32) -> Option<u32> {
    Some(match fid {
        FID_ARBITRATION => f.arbitration,
        FID_POWER_MGMT => f.power_mgmt,
        FID_TEMP_THRESHOLD => f.temp_threshold,
        FID_ERROR_RECOVERY => f.error_recovery,
        FID_VOLATILE_WRITE_CACHE => u32::from(f.volatile_write_cache),
        FID_NUM_QUEUES => f.num_queues,
        FID_INT_COALESCING => f.int_coalescing,
        // Interrupt vector configuration: the vector asked about, coalescing disabled.
        FID_INT_VECTOR_CONFIG => (cdw11 & 0xffff) | (1 << 16),
        FID_WRITE_ATOMICITY => f.write_atomicity,
        FID_ASYNC_EVENT_CONFIG => f.async_event_config,
        FID_KEEP_ALIVE_TIMER => f.kato_ms,
        _ => return None,
    })
}

fn discovery_feature(fid: u8) -> bool {
    matches!(fid, FID_ASYNC_EVENT_CONFIG | FID_KEEP_ALIVE_TIMER)
}

fn get_features(c: &Controller, req: ReqPtr) -> Outcome {
    // SAFETY: see `execute`.
    let cmd = unsafe { req.as_ref() }.cmd;
    let fid = (cmd.cdw10 & 0xff) as u8;
    let sel = (cmd.cdw10 >> 8) & 0x7;
    if c.subsys().is_discovery() && !discovery_feature(fid) {
        return err(Status::INVALID_FIELD);
    }
    if fid == FID_HOST_IDENTIFIER {
        // Only the 128-bit form (EXHID) exists over fabrics.
        if cmd.cdw11 & 1 == 0 {
            return err(Status::INVALID_FIELD);
        }
        return send_data(req, &c.shared.hostid);
    }
    let defaults = Features::defaults(c.topts.max_io_qpairs_per_ctrlr, 0);
    match sel {
        // Current; saved (not saveable: the current value stands in).
        0 | 2 => match feature_value(&c.feat.borrow(), fid, cmd.cdw11) {
            Some(v) => Done(Status::SUCCESS, v),
            None => err(Status::INVALID_FIELD),
        },
        1 => match feature_value(&defaults, fid, cmd.cdw11) {
            Some(v) => Done(Status::SUCCESS, v),
            None => err(Status::INVALID_FIELD),
        },
        // Supported capabilities: changeable, not saveable, not namespace specific.
        3 => match feature_value(&defaults, fid, cmd.cdw11) {
            Some(_) => Done(Status::SUCCESS, 1 << 2),
            None => err(Status::INVALID_FIELD),
        },
        _ => err(Status::INVALID_FIELD),
    }
}

fn set_features(c: &Rc<Controller>, cmd: &NvmeCmd) -> Outcome {
    let fid = (cmd.cdw10 & 0xff) as u8;
    let save = cmd.cdw10 & (1 << 31) != 0;
    let v = cmd.cdw11;
    if c.subsys().is_discovery() && !discovery_feature(fid) && fid != FID_HOST_IDENTIFIER {
        return err(Status::INVALID_FIELD);
    }
    if save {
        return err(Status::FEATURE_ID_NOT_SAVEABLE);
    }
    match fid {
        FID_KEEP_ALIVE_TIMER => {
            let kato = match (v, c.subsys().is_discovery()) {
                (0, true) => ctrlr::DISCOVERY_KATO_MS,
                (k, _) => ctrlr::round_kato(k),
            };
            c.set_kato(kato);
            return Done(Status::SUCCESS, 0);
        }
        FID_HOST_IDENTIFIER => return err(Status::COMMAND_SEQUENCE_ERROR),
        FID_NUM_QUEUES => return set_num_queues(c, v),
        _ => {}
    }
    let mut f = c.feat.borrow_mut();
    match fid {
        FID_ARBITRATION => f.arbitration = v,
        FID_POWER_MGMT => {
            if v & 0x1f != 0 {
                return err(Status::INVALID_FIELD);
            }
            f.power_mgmt = v;
        }
        FID_TEMP_THRESHOLD => f.temp_threshold = v & 0xffff,
        FID_ERROR_RECOVERY => f.error_recovery = v,
        FID_VOLATILE_WRITE_CACHE => f.volatile_write_cache = v & 1 != 0,
        FID_INT_COALESCING => f.int_coalescing = v & 0xffff,
        FID_INT_VECTOR_CONFIG => {}
        FID_WRITE_ATOMICITY => f.write_atomicity = v & 1,
        FID_ASYNC_EVENT_CONFIG => f.async_event_config = v,
        other => {
            log::debug!("nvmf: Set Features {other:#x} not supported");
            return err(Status::INVALID_FIELD);
        }
    }
    Done(Status::SUCCESS, 0)
}

/// Number of Queues: granted min(requested, allowed) per direction (0-based values).
fn set_num_queues(c: &Controller, v: u32) -> Outcome {
    if c.io_qpair_count() > 0 {
        return err(Status::COMMAND_SEQUENCE_ERROR);
    }
    let (nsqr, ncqr) = (v & 0xffff, v >> 16);
    if nsqr == 0xffff || ncqr == 0xffff {
        return err(Status::INVALID_FIELD);
    }
    let max = u32::from(c.topts.max_io_qpairs_per_ctrlr.max(1) - 1);
    let granted = nsqr.min(max) | (ncqr.min(max) << 16);
    let mut f = c.feat.borrow_mut();
    f.num_queues = granted;
    f.num_queues_set = true;
    log::debug!(
        "nvmf: controller {}: {} I/O queues granted",
        c.cntlid(),
        (granted & 0xffff) + 1
    );
    Done(Status::SUCCESS, granted)
}

/// Abort: an outstanding AER can be aborted; anything else is reported "not aborted".
fn abort(c: &Controller, cmd: &NvmeCmd) -> Outcome {
    let sqid = cmd.cdw10 & 0xffff;
    let cid = (cmd.cdw10 >> 16) as u16;
    if sqid == 0 && c.abort_aer(cid) {
        return Done(Status::SUCCESS, 0);
    }
    Done(Status::SUCCESS, 1)
}
