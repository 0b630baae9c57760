//! RDMA devices and open device contexts.

use super::Error;
use crate::ffi::{cm as fcm, verbs as fv};
use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

/// The list of RDMA devices (`ibv_get_device_list`); freed on drop. Open the devices you need
/// ([`Device::open`]) before dropping it: opened contexts stay valid, device entries do not.
pub struct DeviceList {
    list: NonNull<*mut fv::ibv_device>,
    len: usize,
}

impl DeviceList {
    /// Lists the RDMA devices (loading rdma-core on first use). On a host without RDMA devices
    /// this is an empty list, or an error when the kernel has no RDMA support at all (ENOSYS);
    /// without rdma-core, the error says so ([`Error::rdma_core`]).
    pub fn new() -> Result<Self, Error> {
        Error::load_rdma_core()?;
        let mut n: libc::c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the call has no other preconditions.
        let list = unsafe { fv::ibv_get_device_list(&mut n) };
        let list = NonNull::new(list).ok_or_else(|| Error::last("ibv_get_device_list"))?;
        Ok(Self {
            list,
            len: usize::try_from(n).unwrap_or(0),
        })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no device.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The devices.
    pub fn iter(&self) -> impl Iterator<Item = Device<'_>> + '_ {
        (0..self.len).filter_map(move |i| {
            // SAFETY: the array holds `len` entries (then a null) while the list lives.
            let dev = unsafe { *self.list.as_ptr().add(i) };
            NonNull::new(dev).map(|dev| Device {
                dev,
                _list: PhantomData,
            })
        })
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed only here.
        unsafe { fv::ibv_free_device_list(self.list.as_ptr()) };
    }
}

/// One RDMA device of a [`DeviceList`].
#[derive(Clone, Copy)]
pub struct Device<'a> {
    dev: NonNull<fv::ibv_device>,
    _list: PhantomData<&'a DeviceList>,
}

impl Device<'_> {
    /// Lists the RDMA devices (see [`DeviceList::new`]).
    pub fn list() -> Result<DeviceList, Error> {
        DeviceList::new()
    }

    /// The kernel name of the device (e.g. `rxe0`).
    pub fn name(&self) -> String {
        // SAFETY: the device entry is valid while the list lives; the name is a C string
        // owned by libibverbs.
        let p = unsafe { fv::ibv_get_device_name(self.dev.as_ptr()) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, owned by libibverbs for the device's lifetime.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// The node GUID in host byte order.
    pub fn guid(&self) -> u64 {
        // SAFETY: the device entry is valid while the list lives.
        u64::from_be(unsafe { fv::ibv_get_device_guid(self.dev.as_ptr()) })
    }

    /// Opens the device.
    pub fn open(&self) -> Result<Arc<Context>, Error> {
        // SAFETY: the device entry is valid while the list lives.
        let ctx = unsafe { fv::ibv_open_device(self.dev.as_ptr()) };
        let ptr = NonNull::new(ctx).ok_or_else(|| Error::last("ibv_open_device"))?;
        log::info!("rdma: opened device {}", self.name());
        Ok(Arc::new(Context {
            ptr,
            owner: Owner::Opened,
        }))
    }
}

/// Who closes a [`Context`].
enum Owner {
    /// Opened with `ibv_open_device`: closed on drop.
    Opened,
    /// Owned by librdmacm, kept open by its device list (`rdma_get_devices`).
    Cm(#[allow(dead_code)] Arc<CmDeviceList>),
}

/// An open device (`struct ibv_context`). Everything created on it holds an `Arc<Context>`,
/// so the context is closed only after all of them.
pub struct Context {
    ptr: NonNull<fv::ibv_context>,
    owner: Owner,
}

// SAFETY: libibverbs calls on a context are thread-safe; the handle is only freed in Drop.
unsafe impl Send for Context {}
// SAFETY: as above; `&Context` only exposes thread-safe calls.
unsafe impl Sync for Context {}

impl Context {
    /// The raw handle.
    pub fn as_ptr(&self) -> *mut fv::ibv_context {
        self.ptr.as_ptr()
    }

    /// Queries the device's limits.
    pub fn query(&self) -> Result<DeviceAttr, Error> {
        let mut attr = DeviceAttr::zeroed();
        // SAFETY: the context is open; `attr` is a valid out-pointer of the right type.
        let rc = unsafe { fv::ibv_query_device(self.as_ptr(), &mut attr.0) };
        Error::check("ibv_query_device", rc)?;
        Ok(attr)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Owner::Opened = self.owner {
            // SAFETY: opened with ibv_open_device; every object on it holds an Arc<Context>,
            // so none is left; closed only here.
            let rc = unsafe { fv::ibv_close_device(self.ptr.as_ptr()) };
            if rc != 0 {
                log::error!("rdma: ibv_close_device failed: {rc}");
            }
        }
    }
}

/// Device limits (`struct ibv_device_attr`).
#[derive(Clone, Copy)]
pub struct DeviceAttr(pub fv::ibv_device_attr);

impl DeviceAttr {
    fn zeroed() -> Self {
        Self(fv::ibv_device_attr {
            fw_ver: [0; 64],
            node_guid: 0,
            sys_image_guid: 0,
            max_mr_size: 0,
            page_size_cap: 0,
            vendor_id: 0,
            vendor_part_id: 0,
            hw_ver: 0,
            max_qp: 0,
            max_qp_wr: 0,
            device_cap_flags: 0,
            max_sge: 0,
            max_sge_rd: 0,
            max_cq: 0,
            max_cqe: 0,
            max_mr: 0,
            max_pd: 0,
            max_qp_rd_atom: 0,
            max_ee_rd_atom: 0,
            max_res_rd_atom: 0,
            max_qp_init_rd_atom: 0,
            max_ee_init_rd_atom: 0,
            atomic_cap: 0,
            max_ee: 0,
            max_rdd: 0,
            max_mw: 0,
            max_raw_ipv6_qp: 0,
            max_raw_ethy_qp: 0,
            max_mcast_grp: 0,
            max_mcast_qp_attach: 0,
            max_total_mcast_qp_attach: 0,
            max_ah: 0,
            max_fmr: 0,
            max_map_per_fmr: 0,
            max_srq: 0,
            max_srq_wr: 0,
            max_srq_sge: 0,
            max_pkeys: 0,
            local_ca_ack_delay: 0,
            phys_port_cnt: 0,
        })
    }

    /// Firmware version string.
    pub fn fw_ver(&self) -> String {
        let bytes: Vec<u8> = self
            .0
            .fw_ver
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// librdmacm's device list (`rdma_get_devices`): keeps librdmacm's contexts open while held.
struct CmDeviceList(NonNull<*mut fv::ibv_context>);

// SAFETY: the list is immutable after creation and freed only in Drop.
unsafe impl Send for CmDeviceList {}
// SAFETY: as above.
unsafe impl Sync for CmDeviceList {}

impl Drop for CmDeviceList {
    fn drop(&mut self) {
        // SAFETY: came from rdma_get_devices; freed only here.
        unsafe { fcm::rdma_free_devices(self.0.as_ptr()) };
    }
}

/// The device contexts librdmacm uses for its ids (`rdma_get_devices`). Protection domains and
/// CQs for CM connections must be created on these (an id's device is one of them, see
/// [`super::CmId::device_context`]); they stay open while any returned `Arc` lives. Loads
/// rdma-core on first use.
pub fn cm_contexts() -> Result<Vec<Arc<Context>>, Error> {
    Error::load_rdma_core()?;
    let mut n: libc::c_int = 0;
    // SAFETY: `n` is a valid out-pointer.
    let list = unsafe { fcm::rdma_get_devices(&mut n) };
    let list = NonNull::new(list).ok_or_else(|| Error::last("rdma_get_devices"))?;
    let owner = Arc::new(CmDeviceList(list));
    let n = usize::try_from(n).unwrap_or(0);
    Ok((0..n)
        .filter_map(|i| {
            // SAFETY: the array holds `n` entries while `owner` lives.
            let ctx = unsafe { *list.as_ptr().add(i) };
            NonNull::new(ctx).map(|ptr| {
                Arc::new(Context {
                    ptr,
                    owner: Owner::Cm(owner.clone()),
                })
            })
        })
        .collect())
}
