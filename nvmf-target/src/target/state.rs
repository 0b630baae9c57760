//! Global target state and the control operations on it (what the `nvmf_*` RPCs call; also
//! usable directly, e.g. by `keel-tgt`'s embedded default). Control path: mutexes are fine,
//! never held across an await or a call into a transport that could call back.

use super::ctrlr;
use super::nstable;
use super::subsystem::{next_instance, Namespace, SubsysKind, Subsystem};
use crate::transport::{ListenAddr, TrType, Transport, TransportError, TransportOpts};
use keel_bdev::{BdevError, BdevEvent, IoType, Uuid};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

/// The discovery subsystem's NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Default `max_namespaces` of a new subsystem (SPDK's).
pub const DEFAULT_MAX_NAMESPACES: u32 = 32;
/// Default serial number (SPDK's).
pub const DEFAULT_SERIAL: &str = "00000000000000000000";
/// Default model number.
pub const DEFAULT_MODEL: &str = "Keel bdev Controller";

/// Creates a transport from its options (`nvmf_create_transport`).
pub type TransportFactory = fn(TransportOpts) -> Result<Arc<dyn Transport>, TransportError>;

/// Control-path errors; [`NvmfError::errno`] gives the value SPDK answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvmfError {
    /// No such subsystem, transport, namespace, host, listener or bdev.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Exists(String),
    /// A parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A transport refused (listen failed, cannot run here).
    #[error("{0}")]
    Transport(String),
}

impl NvmfError {
    /// The negative errno SPDK answers.
    pub fn errno(&self) -> i32 {
        match self {
            NvmfError::NotFound(_) => -libc::ENODEV,
            NvmfError::Exists(_) => -libc::EEXIST,
            NvmfError::Invalid(_) | NvmfError::Transport(_) => -libc::EINVAL,
        }
    }
}

impl From<BdevError> for NvmfError {
    fn from(e: BdevError) -> Self {
        match e {
            BdevError::NotFound(n) => NvmfError::NotFound(format!("bdev {n} not found")),
            e => NvmfError::Invalid(e.to_string()),
        }
    }
}

/// One address some transport listens on, shared by the subsystems that use it.
struct Listener {
    addr: ListenAddr,
    refs: usize,
    portid: u16,
}

struct Target {
    transports: Vec<Arc<dyn Transport>>,
    listeners: Vec<Listener>,
    /// Creation order; the discovery subsystem first.
    subsystems: Vec<Arc<Subsystem>>,
    next_portid: u16,
}

static TARGET: LazyLock<Mutex<Target>> = LazyLock::new(|| {
    let discovery = Subsystem::new(
        DISCOVERY_NQN,
        SubsysKind::Discovery,
        String::new(),
        String::new(),
        0,
        true,
    );
    Mutex::new(Target {
        transports: Vec::new(),
        listeners: Vec::new(),
        subsystems: vec![Arc::new(discovery)],
        next_portid: 1,
    })
});

static FACTORIES: Mutex<Vec<(TrType, TransportFactory)>> = Mutex::new(Vec::new());

/// Discovery log generation counter.
static GENCTR: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn target() -> MutexGuard<'static, Target> {
    lock(&TARGET)
}

/// Register the factory for a transport type (TCP registers itself; RDMA from its crate).
/// A second registration for the same type replaces the first.
pub fn register_transport_factory(trtype: TrType, factory: TransportFactory) {
    let mut f = lock(&FACTORIES);
    f.retain(|(t, _)| *t != trtype);
    f.push((trtype, factory));
}

/// Create the transport of `opts.trtype` through its registered factory.
pub fn create_transport(opts: TransportOpts) -> Result<(), NvmfError> {
    let trtype = opts.trtype;
    if transport(trtype).is_some() {
        return Err(NvmfError::Exists(format!(
            "Transport type {} already exists",
            trtype.name()
        )));
    }
    let factory = lock(&FACTORIES)
        .iter()
        .find(|(t, _)| *t == trtype)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            NvmfError::Invalid(format!(
                "Transport type {} is not available in this build",
                trtype.name()
            ))
        })?;
    let t = factory(opts).map_err(|e| NvmfError::Transport(e.to_string()))?;
    let mut g = target();
    if g.transports.iter().any(|x| x.trtype() == trtype) {
        return Err(NvmfError::Exists(format!(
            "Transport type {} already exists",
            trtype.name()
        )));
    }
    g.transports.push(t);
    log::info!("nvmf: transport {} created", trtype.name());
    Ok(())
}

/// The transport of type `trtype`, if created.
pub(crate) fn transport(trtype: TrType) -> Option<Arc<dyn Transport>> {
    target()
        .transports
        .iter()
        .find(|t| t.trtype() == trtype)
        .cloned()
}

/// Every transport, in creation order.
pub(crate) fn transports() -> Vec<Arc<dyn Transport>> {
    target().transports.clone()
}

/// Options of the transport of type `trtype`, if created.
pub(crate) fn transport_opts(trtype: TrType) -> Option<TransportOpts> {
    transport(trtype).map(|t| t.opts().clone())
}

/// The subsystem `nqn`.
pub(crate) fn subsystem(nqn: &str) -> Option<Arc<Subsystem>> {
    target().subsystems.iter().find(|s| s.nqn == nqn).cloned()
}

/// Every subsystem, in creation order (discovery first).
pub(crate) fn subsystems() -> Vec<Arc<Subsystem>> {
    target().subsystems.clone()
}

/// The discovery subsystem.
pub(crate) fn discovery_subsystem() -> Arc<Subsystem> {
    Arc::clone(&target().subsystems[0])
}

/// The port id of listen address `addr` (0 when not listening).
pub(crate) fn portid(addr: &ListenAddr) -> u16 {
    target()
        .listeners
        .iter()
        .find(|l| &l.addr == addr)
        .map_or(0, |l| l.portid)
}

/// The discovery log generation counter.
pub(crate) fn genctr() -> u64 {
    GENCTR.load(Ordering::Acquire)
}

/// Something the discovery log shows changed: bump the counter, tell discovery controllers.
pub(crate) fn discovery_changed() {
    GENCTR.fetch_add(1, Ordering::AcqRel);
    let d = discovery_subsystem();
    for c in d.controllers() {
        ctrlr::notify_discovery_remote(c.core, d.id, c.cntlid);
    }
}

/// Check an NQN: "nqn." form (or the "nqn.2014-08.org.nvmexpress:uuid:" form), ≤ 223 bytes.
pub(crate) fn validate_nqn(nqn: &str) -> Result<(), NvmfError> {
    if nqn.len() > keel_nvme::fabrics::NQN_MAX_LEN {
        return Err(NvmfError::Invalid(format!(
            "Invalid NQN \"{nqn}\": length {} > max 223",
            nqn.len()
        )));
    }
    let Some(rest) = nqn.strip_prefix("nqn.") else {
        return Err(NvmfError::Invalid(format!(
            "Invalid NQN \"{nqn}\": does not start with \"nqn.\""
        )));
    };
    if let Some(uuid) = rest.strip_prefix("2014-08.org.nvmexpress:uuid:") {
        return match Uuid::parse(uuid) {
            Some(_) => Ok(()),
            None => Err(NvmfError::Invalid(format!(
                "Invalid NQN \"{nqn}\": invalid UUID"
            ))),
        };
    }
    // nqn.yyyy-mm.reverse-domain[:anything]
    let b = rest.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'.';
    if !date_ok {
        return Err(NvmfError::Invalid(format!(
            "Invalid NQN \"{nqn}\": date code must be of the form yyyy-mm"
        )));
    }
    let domain = rest[8..].split(':').next().unwrap_or("");
    let domain_ok = !domain.is_empty()
        && domain
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !domain_ok {
        return Err(NvmfError::Invalid(format!(
            "Invalid NQN \"{nqn}\": invalid domain name"
        )));
    }
    Ok(())
}

/// `nvmf_create_subsystem` options.
#[derive(Debug, Clone, Default)]
pub struct SubsystemOpts {
    /// Serial number (≤ 20 ASCII); SPDK's default when `None`.
    pub serial_number: Option<String>,
    /// Model number (≤ 40 ASCII); Keel's default when `None`.
    pub model_number: Option<String>,
    /// Highest namespace id (default 32; 0 means the default).
    pub max_namespaces: Option<u32>,
    /// Let any host connect.
    pub allow_any_host: bool,
    /// Accepted for SPDK compatibility.
    pub ana_reporting: bool,
    /// Lowest controller id to hand out (default 1).
    pub min_cntlid: Option<u16>,
    /// Highest controller id to hand out (default 0xFFEF).
    pub max_cntlid: Option<u16>,
}

fn check_ascii(what: &str, s: &str, max: usize) -> Result<(), NvmfError> {
    if s.len() > max || !s.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Err(NvmfError::Invalid(format!(
            "Invalid {what} \"{s}\": at most {max} printable ASCII characters"
        )));
    }
    Ok(())
}

/// Create an NVM subsystem.
pub fn create_subsystem(nqn: &str, opts: SubsystemOpts) -> Result<(), NvmfError> {
    validate_nqn(nqn)?;
    if nqn == DISCOVERY_NQN {
        return Err(NvmfError::Exists(format!("Subsystem {nqn} already exists")));
    }
    let serial = opts.serial_number.unwrap_or_else(|| DEFAULT_SERIAL.into());
    let model = opts.model_number.unwrap_or_else(|| DEFAULT_MODEL.into());
    check_ascii("serial number", &serial, 20)?;
    check_ascii("model number", &model, 40)?;
    let max_ns = match opts.max_namespaces {
        None | Some(0) => DEFAULT_MAX_NAMESPACES,
        Some(n) if n >= 0xFFFF_FFFE => {
            return Err(NvmfError::Invalid(format!(
                "max_namespaces {n} is too large"
            )))
        }
        Some(n) => n,
    };
    let max_id = super::subsystem::MAX_CNTLID;
    let range = (
        opts.min_cntlid.unwrap_or(1),
        opts.max_cntlid.unwrap_or(max_id),
    );
    if range.0 < 1 || range.0 > range.1 || range.1 > max_id {
        return Err(NvmfError::Invalid(format!(
            "Invalid cntlid range min_cntlid {} max_cntlid {}: need 1 <= min_cntlid <= \
             max_cntlid <= {max_id}",
            range.0, range.1
        )));
    }
    let s = Subsystem::new(
        nqn,
        SubsysKind::Nvm,
        serial,
        model,
        max_ns,
        opts.allow_any_host,
    );
    {
        let mut g = s.lock();
        g.ana_reporting = opts.ana_reporting;
        g.cntlid_range = range;
    }
    {
        let mut g = target();
        if g.subsystems.iter().any(|x| x.nqn == nqn) {
            return Err(NvmfError::Exists(format!("Subsystem {nqn} already exists")));
        }
        g.subsystems.push(Arc::new(s));
    }
    log::info!("nvmf: subsystem {nqn} created");
    discovery_changed();
    Ok(())
}

/// The subsystem `nqn`, or NotFound naming it (SPDK's message).
pub(crate) fn need_subsystem(nqn: &str) -> Result<Arc<Subsystem>, NvmfError> {
    subsystem(nqn)
        .ok_or_else(|| NvmfError::NotFound(format!("Unable to find subsystem with NQN {nqn}")))
}

fn need_nvm_subsystem(nqn: &str) -> Result<Arc<Subsystem>, NvmfError> {
    let s = need_subsystem(nqn)?;
    if s.is_discovery() {
        return Err(NvmfError::Invalid(format!(
            "The discovery subsystem {nqn} does not support this operation"
        )));
    }
    Ok(s)
}

/// Delete an NVM subsystem: its controllers are destroyed (their queues disconnected), its
/// listeners released, its namespaces closed once every core has dropped them.
pub async fn delete_subsystem(nqn: &str) -> Result<(), NvmfError> {
    let s = need_nvm_subsystem(nqn)?;
    let (listeners, namespaces) = {
        let mut g = s.lock();
        g.deleted = true;
        (
            std::mem::take(&mut g.listeners),
            std::mem::take(&mut g.namespaces),
        )
    };
    target().subsystems.retain(|x| !Arc::ptr_eq(x, &s));
    for c in s.controllers() {
        ctrlr::destroy_remote(c.core, s.id, c.cntlid, "subsystem deleted");
    }
    for addr in &listeners {
        release_listener(addr);
    }
    let id = s.id;
    let gone: Vec<(u32, u64)> = namespaces.values().map(|n| (n.nsid, n.instance)).collect();
    nstable::on_every_core(move || {
        for &(nsid, inst) in &gone {
            nstable::remove_local(id, nsid, inst);
        }
    })
    .await;
    release_when_drained(namespaces.into_values().collect(), nqn).await;
    log::info!("nvmf: subsystem {nqn} deleted");
    discovery_changed();
    Ok(())
}

/// Take a reference on listen address `addr`, asking its transport to listen on first use.
fn acquire_listener(addr: &ListenAddr) -> Result<(), NvmfError> {
    let t = transport(addr.trtype).ok_or_else(|| {
        NvmfError::Invalid(format!(
            "Unable to find {} transport. The transport must be created first",
            addr.trtype.name()
        ))
    })?;
    {
        let mut g = target();
        if let Some(l) = g.listeners.iter_mut().find(|l| &l.addr == addr) {
            l.refs += 1;
            return Ok(());
        }
    }
    t.listen(addr)
        .map_err(|e| NvmfError::Transport(format!("Unable to listen on address: {e}")))?;
    let mut g = target();
    let portid = g.next_portid;
    g.next_portid = g.next_portid.wrapping_add(1).max(1);
    g.listeners.push(Listener {
        addr: addr.clone(),
        refs: 1,
        portid,
    });
    log::info!(
        "nvmf: listening on {} {}:{}",
        addr.trtype.name(),
        addr.traddr,
        addr.trsvcid
    );
    Ok(())
}

/// Drop a reference on `addr`; the transport stops listening with the last one.
fn release_listener(addr: &ListenAddr) {
    let last = {
        let mut g = target();
        let Some(i) = g.listeners.iter().position(|l| &l.addr == addr) else {
            return;
        };
        g.listeners[i].refs -= 1;
        if g.listeners[i].refs == 0 {
            g.listeners.remove(i);
            true
        } else {
            false
        }
    };
    if last {
        if let Some(t) = transport(addr.trtype) {
            if let Err(e) = t.stop_listen(addr) {
                log::warn!(
                    "nvmf: stop listening on {}:{}: {e}",
                    addr.traddr,
                    addr.trsvcid
                );
            }
        }
    }
}

/// Let subsystem `nqn` be reached at `addr` (the transport must exist).
pub fn add_listener(nqn: &str, addr: ListenAddr) -> Result<(), NvmfError> {
    let s = need_subsystem(nqn)?;
    if s.lock().listeners.contains(&addr) {
        return Err(NvmfError::Exists(format!(
            "Listener {}:{} already exists on {nqn}",
            addr.traddr, addr.trsvcid
        )));
    }
    acquire_listener(&addr)?;
    let dup = {
        let mut g = s.lock();
        if g.listeners.contains(&addr) {
            true
        } else {
            g.listeners.push(addr.clone());
            false
        }
    };
    if dup {
        release_listener(&addr);
        return Err(NvmfError::Exists("Listener already exists".into()));
    }
    discovery_changed();
    Ok(())
}

/// Stop serving subsystem `nqn` at `addr` (existing connections stay).
pub fn remove_listener(nqn: &str, addr: &ListenAddr) -> Result<(), NvmfError> {
    let s = need_subsystem(nqn)?;
    let found = {
        let mut g = s.lock();
        let before = g.listeners.len();
        g.listeners.retain(|l| l != addr);
        before != g.listeners.len()
    };
    if !found {
        return Err(NvmfError::NotFound(format!(
            "Unable to find listener {}:{} on {nqn}",
            addr.traddr, addr.trsvcid
        )));
    }
    release_listener(addr);
    discovery_changed();
    Ok(())
}

/// Allow host `host` to connect to `nqn`.
pub fn add_host(nqn: &str, host: &str) -> Result<(), NvmfError> {
    validate_nqn(host)?;
    let s = need_nvm_subsystem(nqn)?;
    {
        let mut g = s.lock();
        if g.hosts.iter().any(|h| h == host) {
            return Err(NvmfError::Exists(format!(
                "Host {host} already allowed on {nqn}"
            )));
        }
        g.hosts.push(host.to_owned());
    }
    discovery_changed();
    Ok(())
}

/// Remove host `host` from `nqn`'s allowed list and disconnect its controllers (unless any
/// host is allowed).
pub fn remove_host(nqn: &str, host: &str) -> Result<(), NvmfError> {
    let s = need_nvm_subsystem(nqn)?;
    let any = {
        let mut g = s.lock();
        let before = g.hosts.len();
        g.hosts.retain(|h| h != host);
        if before == g.hosts.len() {
            return Err(NvmfError::NotFound(format!(
                "Host {host} not found on {nqn}"
            )));
        }
        g.allow_any_host
    };
    if !any {
        for c in s.controllers().into_iter().filter(|c| c.hostnqn == host) {
            ctrlr::destroy_remote(c.core, s.id, c.cntlid, "host removed from the subsystem");
        }
    }
    discovery_changed();
    Ok(())
}

/// Set `allow_any_host`.
pub fn allow_any_host(nqn: &str, allow: bool) -> Result<(), NvmfError> {
    let s = need_nvm_subsystem(nqn)?;
    s.lock().allow_any_host = allow;
    discovery_changed();
    Ok(())
}

/// `nvmf_subsystem_add_ns` options.
#[derive(Debug, Clone, Default)]
pub struct NamespaceOpts {
    /// The bdev to expose.
    pub bdev_name: String,
    /// Namespace id (lowest free when `None` or 0).
    pub nsid: Option<u32>,
    /// UUID (the bdev's when `None`).
    pub uuid: Option<Uuid>,
    /// NGUID (the UUID's bytes when `None`).
    pub nguid: Option<[u8; 16]>,
    /// EUI-64 (none when `None`).
    pub eui64: Option<[u8; 8]>,
}

/// Add a namespace backed by bdev `opts.bdev_name`; returns its nsid. Every core serving the
/// subsystem gets a channel first, then each controller gets a Namespace Attribute Changed
/// event. Call on a reactor (the main core): hot-remove events come back to that core.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): namespace add: every step and its undo, in order
pub async fn add_namespace(nqn: &str, opts: NamespaceOpts) -> Result<u32, NvmfError> {
    let s = need_nvm_subsystem(nqn)?;
    let bdev = keel_bdev::get_bdev(&opts.bdev_name)
        .ok_or_else(|| NvmfError::NotFound(format!("bdev {} not found", opts.bdev_name)))?;
    // NVMe LBA data sizes start at 512 bytes (Identify Namespace LBADS ≥ 9).
    let block_size = bdev.info().block_size;
    if block_size < 512 {
        return Err(NvmfError::Invalid(format!(
            "bdev {}: block size {block_size} is below NVMe's 512-byte minimum",
            opts.bdev_name
        )));
    }
    let nsid = {
        let g = s.lock();
        match opts.nsid {
            Some(n) if n != 0 => {
                if n > g.max_namespaces || n == u32::MAX {
                    return Err(NvmfError::Invalid(format!(
                        "Invalid NSID {n}: max_namespaces is {}",
                        g.max_namespaces
                    )));
                }
                if g.namespaces.contains_key(&n) {
                    return Err(NvmfError::Exists(format!(
                        "Requested NSID {n} already in use"
                    )));
                }
                n
            }
            _ => (1..=g.max_namespaces)
                .find(|n| !g.namespaces.contains_key(n))
                .ok_or_else(|| {
                    NvmfError::Invalid(format!(
                        "No free NSID in {nqn} (max_namespaces {})",
                        g.max_namespaces
                    ))
                })?,
        }
    };
    let instance = next_instance();
    let (sub, name) = (Arc::downgrade(&s), opts.bdev_name.clone());
    let desc = keel_bdev::open(&opts.bdev_name, true, move |ev| {
        let Some(s) = sub.upgrade() else { return };
        match ev {
            BdevEvent::Remove => {}
            BdevEvent::Resize => {
                // Identify Namespace reads the live size; tell every controller.
                namespace_resized(&s, nsid, instance, &name);
                return;
            }
        }
        log::info!(
            "nvmf: bdev {name} is being removed: removing namespace {nsid} of {}",
            s.nqn
        );
        if keel_reactor::current_core().is_some() {
            keel_reactor::spawn_local(async move {
                remove_namespace_instance(&s, nsid, Some(instance)).await;
            });
        }
    })
    .map_err(|e| claim_refusal(&opts.bdev_name, nqn, e))?;
    // As SPDK does (an exclusive-write claim by the NVMe-oF target): nothing else may write
    // the host's data — no second namespace (here or in another subsystem), no raid, no
    // lvstore, no stacked bdev. Readers may still open it. Released when the descriptor
    // closes (namespace removed, subsystem deleted, target shut down).
    desc.claim(&namespace_claim(nsid, nqn))
        .map_err(|e| claim_refusal(&opts.bdev_name, nqn, e))?;
    let info = bdev.info().clone();
    let uuid = opts.uuid.unwrap_or(info.uuid);
    let ns = Arc::new(Namespace {
        instance,
        nsid,
        bdev_name: opts.bdev_name.clone(),
        uuid,
        nguid: opts.nguid.unwrap_or(uuid.0),
        eui64: opts.eui64.unwrap_or([0; 8]),
        block_size: info.block_size,
        reads_zeroes_after_unmap: bdev.unmap_reads_zeroes(),
        supports_unmap: bdev.io_type_supported(IoType::Unmap),
        desc,
    });
    {
        let mut g = s.lock();
        if g.deleted {
            return Err(NvmfError::NotFound(format!(
                "Subsystem {nqn} is being deleted"
            )));
        }
        if g.namespaces.contains_key(&nsid) {
            return Err(NvmfError::Exists(format!(
                "Requested NSID {nsid} already in use"
            )));
        }
        g.namespaces.insert(nsid, Arc::clone(&ns));
    }
    let (id, n) = (s.id, Arc::clone(&ns));
    nstable::on_every_core(move || nstable::add_local(id, &n)).await;
    for c in s.controllers() {
        ctrlr::notify_ns_changed_remote(c.core, s.id, c.cntlid, nsid);
    }
    log::info!(
        "nvmf: namespace {nsid} of {nqn} added (bdev {})",
        opts.bdev_name
    );
    Ok(nsid)
}

/// The bdev of namespace `nsid` (if still `instance`) changed size: a Namespace Attribute
/// Changed event (and changed-namespace log entry) to each controller, as for hot add/remove.
fn namespace_resized(s: &Subsystem, nsid: u32, instance: u64, bdev: &str) {
    let ns = s.lock().namespaces.get(&nsid).cloned();
    let Some(ns) = ns.filter(|n| n.instance == instance) else {
        return;
    };
    log::info!(
        "nvmf: bdev {bdev} resized: namespace {nsid} of {} now has {} blocks",
        s.nqn,
        ns.num_blocks()
    );
    for c in s.controllers() {
        ctrlr::notify_ns_changed_remote(c.core, s.id, c.cntlid, nsid);
    }
}

/// Remove namespace `nsid` of `nqn`.
pub async fn remove_namespace(nqn: &str, nsid: u32) -> Result<(), NvmfError> {
    let s = need_nvm_subsystem(nqn)?;
    if remove_namespace_instance(&s, nsid, None).await {
        Ok(())
    } else {
        Err(NvmfError::NotFound(format!(
            "Namespace {nsid} not found in {nqn}"
        )))
    }
}

/// Remove namespace `nsid` (only if it is still `instance`, when given): off every core's
/// table, then a Namespace Attribute Changed event to each controller. Whether it was there.
pub(crate) async fn remove_namespace_instance(
    s: &Arc<Subsystem>,
    nsid: u32,
    instance: Option<u64>,
) -> bool {
    let ns = {
        let mut g = s.lock();
        match g.namespaces.get(&nsid) {
            Some(n) if instance.is_none_or(|i| i == n.instance) => g.namespaces.remove(&nsid),
            _ => None,
        }
    };
    let Some(ns) = ns else { return false };
    let (id, inst) = (s.id, ns.instance);
    nstable::on_every_core(move || nstable::remove_local(id, nsid, inst)).await;
    for c in s.controllers() {
        ctrlr::notify_ns_changed_remote(c.core, s.id, c.cntlid, nsid);
    }
    release_when_drained(vec![ns], &s.nqn).await;
    log::info!("nvmf: namespace {nsid} of {} removed", s.nqn);
    true
}

/// Longest wait for a removed namespace's in-flight I/O before its bdev is released anyway.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether removed namespaces are no longer used anywhere: only `gone` holds them, and no core
/// has a channel on their bdevs (a channel lives until its last I/O completes; the claim keeps
/// every other writer away, so a channel is this namespace's).
fn drained(gone: &[Arc<Namespace>]) -> bool {
    gone.iter()
        .all(|ns| Arc::strong_count(ns) == 1 && !ns.desc.bdev().has_io_channels())
}

/// Close the descriptors of the removed namespaces `gone` (releasing their bdevs' claims) once
/// their in-flight I/O has completed, as SPDK releases a namespace's bdev only after pausing
/// the subsystem: when the removal answers, the bdev is free and no late host write can land
/// on it under its next user. Waits at most [`RELEASE_WAIT`] (then releases anyway and says
/// so). A 1 ms timed poller checks: no busy wait.
async fn release_when_drained(gone: Vec<Arc<Namespace>>, nqn: &str) {
    if gone.is_empty() {
        return;
    }
    if drained(&gone) || keel_reactor::current_core().is_none() {
        drop(gone);
        return;
    }
    // The poller hands the namespaces back once drained: they are dropped (descriptors
    // closed, claims released) here, outside the poller.
    let (tx, rx) = keel_reactor::oneshot::<Vec<Arc<Namespace>>>();
    let (mut tx, mut held) = (Some(tx), Some(gone));
    let me: std::rc::Rc<std::cell::Cell<Option<keel_reactor::PollerId>>> = Default::default();
    let me_in = std::rc::Rc::clone(&me);
    let (start, nqn) = (std::time::Instant::now(), nqn.to_owned());
    let id = keel_reactor::register_poller(
        "nvmf_ns_release",
        Some(std::time::Duration::from_millis(1)),
        move || {
            let Some(g) = held.as_ref() else {
                return keel_reactor::PollStatus::Idle;
            };
            let done = drained(g);
            if !done && start.elapsed() < RELEASE_WAIT {
                return keel_reactor::PollStatus::Idle;
            }
            if !done {
                for ns in g {
                    log::warn!(
                        "nvmf: namespace {} of {nqn} removed, but I/O to bdev {} has not \
                         finished after {} s: releasing the bdev anyway",
                        ns.nsid,
                        ns.bdev_name,
                        RELEASE_WAIT.as_secs()
                    );
                }
            }
            if let (Some(t), Some(g)) = (tx.take(), held.take()) {
                t.send(g);
            }
            if let Some(id) = me_in.take() {
                keel_reactor::unregister_poller(id);
            }
            keel_reactor::PollStatus::Busy
        },
    );
    me.set(Some(id));
    // Dropping them closes the descriptors: the claims go.
    drop(rx.await);
}

/// The claim a namespace holds on its bdev: it names the namespace, so that whoever is refused
/// the bdev (another namespace, raid, lvstore, ...) learns who holds it: "bdev Malloc0 is
/// already claimed by NVMe-oF namespace 1 of nqn.2016-06.io.keel:disk1".
pub(crate) fn namespace_claim(nsid: u32, nqn: &str) -> String {
    format!("NVMe-oF namespace {nsid} of {nqn}")
}

/// The error for a bdev that cannot become a namespace of `nqn` (claimed by someone else).
fn claim_refusal(bdev: &str, nqn: &str, e: BdevError) -> NvmfError {
    match e {
        BdevError::Claimed { .. } => {
            NvmfError::Invalid(format!("cannot export bdev {bdev} from {nqn}: {e}"))
        }
        e => e.into(),
    }
}

/// Parse a hex string of exactly `N` bytes (dashes allowed, as rpc.py users write them).
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Upper-case hex of `b` (SPDK's nguid/eui64 spelling).
pub(crate) fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Stop the whole target (keel-tgt shutdown): delete every NVM subsystem (controllers
/// disconnected, namespaces and their bdev descriptors released), then shut every transport
/// down (listeners closed, connections closed on their cores). Runs on the main core.
pub async fn shutdown() {
    let nqns: Vec<String> = subsystems()
        .iter()
        .filter(|s| s.nqn != DISCOVERY_NQN)
        .map(|s| s.nqn.clone())
        .collect();
    for nqn in nqns.iter().rev() {
        if let Err(e) = delete_subsystem(nqn).await {
            log::warn!("nvmf shutdown: deleting {nqn}: {e}");
        }
    }
    let transports = std::mem::take(&mut target().transports);
    for t in transports {
        let (tx, rx) = keel_reactor::oneshot();
        t.shutdown(Box::new(move || tx.send(())));
        let _ = rx.await;
        log::info!("nvmf: {} transport stopped", t.trtype().name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nqn_validation() {
        for ok in [
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555",
            "nqn.2016-06.io.keel",
        ] {
            assert_eq!(validate_nqn(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "iqn.2016-06.io.spdk:x",
            "nqn.16-06.io.spdk:x",
            "nqn.2016-6.io.spdk:x",
            "nqn.2016-06.:x",
            "nqn.2016-06.-bad:x",
            "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
        ] {
            assert!(
                matches!(validate_nqn(bad), Err(NvmfError::Invalid(_))),
                "{bad}"
            );
        }
        let long = format!("nqn.2016-06.io.keel:{}", "x".repeat(210));
        assert!(long.len() > 223);
        assert!(validate_nqn(&long).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let b: [u8; 8] = parse_hex("0011223344AABBcc").unwrap();
        assert_eq!(b, [0x00, 0x11, 0x22, 0x33, 0x44, 0xaa, 0xbb, 0xcc]);
        assert_eq!(hex_upper(&b), "0011223344AABBCC");
        assert!(parse_hex::<8>("0011").is_none());
        assert!(parse_hex::<2>("zz00").is_none());
        let g: [u8; 16] = parse_hex("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(g[15], 0xff);
    }

    #[test]
    fn errors_carry_spdk_errnos() {
        assert_eq!(NvmfError::Exists("x".into()).errno(), -17);
        assert_eq!(NvmfError::NotFound("x".into()).errno(), -19);
        assert_eq!(NvmfError::Invalid("x".into()).errno(), -22);
    }
}
