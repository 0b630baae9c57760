//! The `malloc` bdev module: a RAM disk.
//!
//! The memory is one anonymous mapping made at creation (zero-filled by the kernel, populated
//! on first touch), shared by the channels of every core, and unmapped when the bdev and its
//! last channel are gone. It does not come from the per-core I/O buffer pools.
//!
//! Data races: like a disk, the device makes no promise about concurrent overlapping I/O. Two
//! cores writing (or one writing, one reading) the same blocks at the same time get
//! unspecified bytes. The mapping is only ever reached through raw pointers with
//! `ptr::copy_nonoverlapping` / `ptr::write_bytes` (never through a `&`/`&mut` slice that could
//! let the compiler assume exclusive or immutable access), exactly as memory shared with a
//! device or another process is; consumers that need ordering (a filesystem, RAID) order their
//! own I/O as they must for any disk.

use crate::rpc::{bdev_error_to_rpc, delete_of_module, parse_uuid};
use crate::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevInfo, ConfigCall, IoRef, IoStatus, IoType,
    IoVec, Uuid,
};
use keel_rpc::{HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::ptr;
use std::sync::Arc;

/// SPDK's product name for this module.
pub const PRODUCT_NAME: &str = "Malloc disk";

/// The bdev's memory: an anonymous private mapping.
struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is reached only through raw
// pointers under the data-race rule in the module doc, and unmapped once, in Drop.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> Result<Region, BdevError> {
        // SAFETY: anonymous private mapping of `len` (> 0) bytes; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            return Err(BdevError::NoMem(format!(
                "cannot map {len} bytes for a malloc bdev: {err}"
            )));
        }
        // Transparent huge pages where the system offers them on request (THP "madvise"
        // mode, Debian's default): fewer TLB misses for the copies every I/O makes (a 4 KiB
        // memcpy stream measured ~14 GB/s into 4 KiB pages vs ~21 GB/s into huge pages here).
        // SAFETY: advice on the mapping just made; it changes no contents.
        if unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } != 0 {
            log::debug!(
                "malloc bdev: no transparent huge pages: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Region {
            base: p.cast(),
            len,
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is the mapping made in `new`, unmapped only here.
        if unsafe { libc::munmap(self.base.cast(), self.len) } != 0 {
            log::warn!(
                "malloc bdev: munmap failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

struct MallocBackend {
    region: Arc<Region>,
}

impl BdevBackend for MallocBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }
    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read
                | IoType::Write
                | IoType::WriteZeroes
                | IoType::Unmap
                | IoType::Flush
                | IoType::Reset
        )
    }
    fn unmap_reads_zeroes(&self) -> bool {
        // Unmap and WriteZeroes both zero the memory.
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            region: Arc::clone(&self.region),
        }))
    }
    fn driver_specific(&self) -> Value {
        json!({})
    }
    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_malloc_create".into(),
            params: json!({
                "name": info.name,
                "num_blocks": info.num_blocks,
                "block_size": info.block_size,
                "uuid": info.uuid.to_string(),
            }),
        })
    }
}

struct MallocChannel {
    region: Arc<Region>,
}

impl MallocChannel {
    /// Copy between the region at byte `off` and the iovecs (`to_iovs`: a read).
    ///
    /// # Safety
    /// `off + total iovec length ≤ region.len`, and the iovecs are valid buffers (the layer
    /// guarantees both: range checked, iovecs trimmed to the I/O's length, validity promised
    /// by whoever built the iovecs).
    #[inline]
    unsafe fn copy(&self, mut off: usize, iovs: &[IoVec], to_iovs: bool) {
        for iov in iovs {
            // SAFETY: per the contract, `off..off+iov.len` lies inside the mapping and the iovec
            // is valid; the two never overlap (pool/user buffers vs our private mapping).
            unsafe {
                let dev = self.region.base.add(off);
                if to_iovs {
                    ptr::copy_nonoverlapping(dev, iov.base, iov.len);
                } else {
                    ptr::copy_nonoverlapping(iov.base, dev, iov.len);
                }
            }
            off += iov.len;
        }
    }
}

impl BackendChannel for MallocChannel {
    fn submit(&mut self, io: IoRef) {
        let bs = io.block_size() as usize;
        // Cannot overflow: the layer checked offset + num ≤ num_blocks, whose size is `len`.
        let off = io.offset_blocks() as usize * bs;
        let len = io.num_blocks() as usize * bs;
        debug_assert!(
            off.checked_add(len).is_some_and(|e| e <= self.region.len)
                || io.io_type() == IoType::Flush
        );
        match io.io_type() {
            // SAFETY: range and iovecs checked by the layer (see `copy`).
            IoType::Read => unsafe { self.copy(off, io.iovs(), true) },
            // SAFETY: as above.
            IoType::Write => unsafe { self.copy(off, io.iovs(), false) },
            IoType::WriteZeroes | IoType::Unmap => {
                // SAFETY: `off..off+len` lies inside the mapping (range checked by the layer).
                unsafe { ptr::write_bytes(self.region.base.add(off), 0, len) }
            }
            IoType::Flush | IoType::Reset => {}
        }
        io.complete(IoStatus::Success);
    }
}

/// Create and register a malloc bdev of `num_blocks` × `block_size` bytes (a multiple of 512,
/// power of two). A random UUID is made when `uuid` is `None`.
pub fn create(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
) -> Result<Bdev, BdevError> {
    if block_size < 512 || !block_size.is_multiple_of(512) {
        return Err(BdevError::Invalid(format!(
            "Data block size {block_size} is not a multiple of 512"
        )));
    }
    if num_blocks == 0 {
        return Err(BdevError::Invalid(
            "Disk num_blocks must be greater than 0".into(),
        ));
    }
    let len = num_blocks
        .checked_mul(u64::from(block_size))
        .and_then(|l| usize::try_from(l).ok())
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or_else(|| {
            BdevError::Invalid(format!(
                "{num_blocks} blocks of {block_size} bytes is too large"
            ))
        })?;
    if crate::get_bdev(name).is_some() {
        return Err(BdevError::Exists(name.to_owned()));
    }
    let region = Arc::new(Region::new(len)?);
    let info = BdevInfo {
        name: name.to_owned(),
        aliases: Vec::new(),
        uuid: uuid.unwrap_or_else(Uuid::new_random),
        block_size,
        num_blocks,
    };
    crate::register(info, Arc::new(MallocBackend { region }))
}

/// The first free name of the form `MallocN`.
pub fn next_free_name() -> String {
    (0u64..)
        .map(|i| format!("Malloc{i}"))
        .find(|n| crate::get_bdev(n).is_none())
        .unwrap_or_default()
}

/// Unregister a malloc bdev (fails with [`BdevError::NotFound`] for bdevs of other modules).
pub async fn delete(name: &str) -> Result<(), BdevError> {
    delete_of_module(name, PRODUCT_NAME).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    #[serde(default)]
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    #[serde(default)]
    uuid: Option<String>,
    /// SPDK options accepted for config compatibility when they ask for nothing special.
    #[serde(default)]
    physical_block_size: Option<u32>,
    #[serde(default)]
    optimal_io_boundary: u32,
    #[serde(default)]
    md_size: u32,
    #[serde(default)]
    md_interleave: bool,
    #[serde(default)]
    dif_type: u32,
    #[serde(default)]
    dif_is_head_of_md: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// rpc.py: `bdev_malloc_create [-b NAME] [-u UUID] total_size block_size` (size in MiB).
static CREATE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_malloc_create",
    help: "Create a RAM-backed bdev; prints its name (Malloc0, Malloc1, ... when not given)",
    params: &[
        ParamSpec::positional(
            "total_size",
            ParamKind::Float,
            false,
            "Size of the bdev in MiB (the client sends num_blocks)",
        ),
        ParamSpec::positional(
            "block_size",
            ParamKind::Int,
            true,
            "Block size in bytes (a multiple of 512)",
        ),
        ParamSpec::option(
            "name",
            ParamKind::Str,
            false,
            Some("name"),
            Some('b'),
            "Name of the bdev (default: the first free MallocN)",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            Some("uuid"),
            Some('u'),
            "UUID of the bdev (random when absent)",
        ),
        ParamSpec::option(
            "num_blocks",
            ParamKind::Int,
            false,
            Some("num-blocks"),
            None,
            "Number of blocks (instead of total_size)",
        ),
    ],
    cli_rewrite: Some(crate::rpc::total_size_to_num_blocks),
};

/// rpc.py: `bdev_malloc_delete NAME`.
static DELETE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_malloc_delete",
    help: "Delete a malloc bdev",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "Name of the malloc bdev",
    )],
    cli_rewrite: None,
};

fn rpc_create(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateParams = keel_rpc::params::parse(params)?;
        if p.md_size != 0 || p.md_interleave || p.dif_type != 0 || p.dif_is_head_of_md {
            return Err(RpcError::errno(
                libc::EINVAL,
                "metadata and DIF are not supported by Keel's malloc bdev",
            ));
        }
        if p.physical_block_size
            .is_some_and(|pbs| pbs != 0 && pbs % p.block_size.max(1) != 0)
        {
            return Err(RpcError::invalid_params(
                "physical_block_size must be a multiple of block_size",
            ));
        }
        if p.optimal_io_boundary != 0 {
            log::info!(
                "bdev_malloc_create: optimal_io_boundary {} ignored",
                p.optimal_io_boundary
            );
        }
        let uuid = parse_uuid(p.uuid.as_deref())?;
        let name = p
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(next_free_name);
        let bdev = create(&name, p.num_blocks, p.block_size, uuid).map_err(bdev_error_to_rpc)?;
        Ok(Value::String(bdev.name().to_owned()))
    })
}

fn rpc_delete(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = keel_rpc::params::parse(params)?;
        delete(&p.name).await.map_err(bdev_error_to_rpc)?;
        Ok(Value::Bool(true))
    })
}

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    keel_rpc::register_method(&CREATE_SPEC, rpc_create);
    keel_rpc::register_method(&DELETE_SPEC, rpc_delete);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_validates_geometry() {
        assert!(matches!(
            create("malloc_t_geo", 8, 1000, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("malloc_t_geo", 0, 512, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("malloc_t_geo", u64::MAX / 2, 4096, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(crate::get_bdev("malloc_t_geo").is_none());
    }

    #[test]
    fn unmapped_blocks_read_as_zeroes() {
        let backend = MallocBackend {
            region: Arc::new(Region::new(4096).unwrap()),
        };
        assert!(backend.unmap_reads_zeroes());
    }

    #[test]
    fn region_is_zeroed_and_writable() {
        let r = Region::new(8192).unwrap();
        // SAFETY: in-bounds reads/writes of the fresh private mapping, no other user.
        unsafe {
            assert_eq!(*r.base.add(8191), 0);
            r.base.add(100).write(7);
            assert_eq!(*r.base.add(100), 7);
        }
    }
}
