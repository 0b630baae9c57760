//! Admin commands (and Fabrics commands on the admin queue), on the controller's core.

use super::ctrlr::{self, Controller, Features};
use super::identify::{self, CtrlrIdentity};
use super::logpage::{self, SmartCounters};
use super::qpair::Qpair;
use super::state;
use crate::iov;
use crate::request::ReqPtr;
use crate::transport::AdrFam;
use keel_nvme::cmd::{DataXfer, NvmeCmd, OPC_FABRICS};
use keel_nvme::fabrics::{self, PropertyGet, PropertySet};
use keel_nvme::identify::{self as idf, IdentifyCmd, IdentifyNamespace, NsList};
use keel_nvme::log::{self as lp, DiscoveryEntry, GetLogPage};
use keel_nvme::opcode::admin as opc;
use keel_nvme::status::Status;
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
        fabrics::FCTYPE_PROPERTY_GET => {
            match PropertyGet::decode(&r.cmd).and_then(|p| c.property_get(p.ofst, p.size)) {
                Ok(v) => {
                    r.rsp.cdw1 = (v >> 32) as u32;
                    Done(Status::SUCCESS, v as u32)
                }
                Err(s) => {
                    log::debug!("nvmf: Property Get of offset {:#x} refused", r.cmd.cdw11);
                    err(s)
                }
            }
        }
        fabrics::FCTYPE_PROPERTY_SET => {
            match PropertySet::decode(&r.cmd).and_then(|p| c.property_set(p.ofst, p.size, p.value))
            {
                Ok(()) => Done(Status::SUCCESS, 0),
                Err(s) => {
                    log::debug!("nvmf: Property Set of offset {:#x} refused", r.cmd.cdw11);
                    err(s)
                }
            }
        }
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
    // SAFETY: a request's data buffers are valid, writable and ours while it runs
    // (request.rs), and do not overlap `data`.
    unsafe { iov::copy_to_iovs(r.data_iovs(), 0, &data[..n]) };
    Done(Status::SUCCESS, 0)
}

fn identify_cmd(c: &Controller, req: ReqPtr) -> Outcome {
    // SAFETY: see `execute`.
    let id = match IdentifyCmd::decode(&unsafe { req.as_ref() }.cmd) {
        Ok(id) => id,
        Err(s) => return err(s),
    };
    let (cns, csi, nsid) = (id.cns, id.csi, id.nsid);
    let subsys = c.subsys();
    if subsys.is_discovery() && cns != idf::CNS_CONTROLLER {
        return err(Status::INVALID_FIELD);
    }
    let max_ns = subsys.lock().max_namespaces;
    match cns {
        idf::CNS_CONTROLLER => {
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
                keyed_sgls: c.topts.trtype == crate::transport::TrType::Rdma,
            };
            let data = identify::controller(&id);
            drop(g);
            send_data(req, data.as_bytes())
        }
        idf::CNS_NAMESPACE => {
            // The broadcast NSID asks for the capabilities common to all namespaces, which
            // only a controller with Namespace Management reports: refused (as SPDK and
            // Linux do).
            if nsid == 0 || nsid > max_ns {
                return err(Status::INVALID_NAMESPACE_OR_FORMAT);
            }
            match subsys.namespace(nsid).map(|ns| identify::namespace(&ns)) {
                Some(Some(data)) => send_data(req, data.as_bytes()),
                Some(None) => {
                    log::error!("nvmf: namespace {nsid} has a block size NVMe cannot express");
                    err(Status::INTERNAL_DEVICE_ERROR)
                }
                // Inactive: zeroed data.
                None => send_data(req, IdentifyNamespace::new().as_bytes()),
            }
        }
        idf::CNS_ACTIVE_NS_LIST => {
            let ids = subsys
                .namespaces()
                .iter()
                .map(|n| n.nsid)
                .collect::<Vec<_>>();
            match NsList::active(ids, nsid) {
                Ok(l) => send_data(req, l.as_bytes()),
                Err(s) => err(s),
            }
        }
        idf::CNS_NS_ID_DESCRIPTORS => match subsys.namespace(nsid) {
            Some(ns) => send_data(req, identify::ns_id_descriptors(&ns).as_bytes()),
            None => err(Status::INVALID_NAMESPACE_OR_FORMAT),
        },
        idf::CNS_IOCS_CONTROLLER if csi == idf::CSI_NVM => {
            send_data(req, identify::nvm_cs_controller().as_bytes())
        }
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
    let g = match GetLogPage::decode(&cmd) {
        Ok(g) => g,
        Err(s) => return err(s),
    };
    if g.len > u64::from(r.length) {
        log::debug!(
            "nvmf: Get Log Page {:#x}: {} bytes asked, buffer of {}",
            g.lid,
            g.len,
            r.length
        );
        return err(Status::INVALID_FIELD);
    }
    let discovery = c.subsys().is_discovery();
    let page = match (g.lid, discovery) {
        (lp::LID_DISCOVERY, true) => {
            c.discovery_log_read(g.rae);
            discovery_log(&c.shared.hostnqn)
        }
        (lp::LID_ERROR, _) => logpage::error_log(),
        (lp::LID_SMART, false) => {
            if cmd.nsid != 0 && cmd.nsid != u32::MAX {
                return err(Status::INVALID_FIELD);
            }
            return smart_log(qp, c, req, g);
        }
        (lp::LID_FIRMWARE_SLOT, false) => logpage::firmware_slot().as_bytes().to_vec(),
        (lp::LID_CHANGED_NS, false) => c.changed_ns_log(g.rae),
        (lp::LID_CMD_EFFECTS, false) => logpage::command_effects().as_bytes().to_vec(),
        (lid, _) => {
            log::debug!("nvmf: Get Log Page {lid:#x} not supported");
            return err(Status::INVALID_FIELD);
        }
    };
    send_log(req, &page, &g)
}

/// Copy the window of `page` that `g` asks for to the host, zero-filled past the page's end.
fn send_log(req: ReqPtr, page: &[u8], g: &GetLogPage) -> Outcome {
    // SAFETY: see `execute`.
    let r = unsafe { &*req.as_ptr() };
    if r.xfer != DataXfer::ControllerToHost {
        return err(Status::INVALID_FIELD);
    }
    // SAFETY: a request's data buffers are valid, writable and ours while it runs
    // (request.rs), and do not overlap `page`.
    match unsafe { iov::copy_log_page(page, g, r.data_iovs()) } {
        Ok(_) => Done(Status::SUCCESS, 0),
        Err(s) => {
            log::debug!(
                "nvmf: Get Log Page {:#x}: offset {} past the page's {} bytes",
                g.lid,
                g.offset,
                page.len()
            );
            err(s)
        }
    }
}

/// The SMART page, with counters summed from the namespaces' bdevs (asked of every core).
fn smart_log(qp: &Rc<Qpair>, c: &Controller, req: ReqPtr, g: GetLogPage) -> Outcome {
    let nss = c.subsys().namespaces();
    if keel_reactor::current_core().is_none() {
        let page = logpage::smart(&SmartCounters::default());
        return send_log(req, page.as_bytes(), &g);
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
        let page = logpage::smart(&cnt);
        if let Done(status, cdw0) = send_log(req, page.as_bytes(), &g) {
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
            entries.push(DiscoveryEntry {
                trtype: l.trtype.wire_value(),
                adrfam: match l.adrfam {
                    AdrFam::Ipv4 => lp::ADRFAM_IPV4,
                    AdrFam::Ipv6 => lp::ADRFAM_IPV6,
                },
                portid: state::portid(&l),
                asqsz,
                trsvcid: l.trsvcid.clone(),
                subnqn: s.nqn.clone(),
                traddr: l.traddr.clone(),
                tsas: lp::tsas_for(l.trtype.wire_value()),
                ..logpage::discovery_entry_base()
            });
        }
    }
    lp::discovery_log_page(genctr, &entries)
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
