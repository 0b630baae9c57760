//! Opening the backing file or block device of a uring/aio bdev: access mode, the O_DIRECT
//! probe, direct-I/O alignment, geometry and fallocate support (control path).

use crate::BdevError;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};

/// `_IOR(0x12, 114, size_t)`: size of a block device in bytes (not exported by `libc`).
const BLKGETSIZE64: u32 = 0x8008_1272;
/// Largest block size accepted.
pub(crate) const MAX_BLOCK_SIZE: u32 = 64 * 1024;
/// Block size of regular files when none is given.
pub(crate) const DEFAULT_FILE_BLOCK_SIZE: u32 = 512;

/// What the backing path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A regular file.
    Regular,
    /// A block device node.
    BlockDevice,
}

/// Alignment direct I/O needs on this file: buffer addresses to `mem`, file offsets and
/// segment lengths to `offset` (both powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DioAlign {
    /// Buffer address alignment, bytes.
    pub(crate) mem: u32,
    /// File offset and length alignment, bytes.
    pub(crate) offset: u32,
}

/// An opened backing file with its geometry.
#[derive(Debug)]
pub(crate) struct BackingFile {
    /// Path as given.
    pub(crate) path: String,
    /// Regular file or block device.
    pub(crate) kind: FileKind,
    /// Buffered (page-cache) descriptor: serves unaligned I/O, flush and fallocate.
    pub(crate) buffered: File,
    /// `O_DIRECT` descriptor when the filesystem accepts direct I/O; used for aligned I/O.
    pub(crate) direct: Option<File>,
    /// Alignment required on `direct`.
    pub(crate) dio: DioAlign,
    /// Logical block size of the bdev.
    pub(crate) block_size: u32,
    /// Whether the block size was given (not detected).
    pub(crate) block_size_given: bool,
    /// Number of blocks (size / block_size, any tail ignored).
    pub(crate) num_blocks: u64,
    /// Opened read-only.
    pub(crate) readonly: bool,
    /// `fallocate(PUNCH_HOLE)` works (regular files; block devices are assumed to).
    pub(crate) punch_hole: bool,
}

impl BackingFile {
    /// Raw descriptor of the buffered file.
    pub(crate) fn buffered_fd(&self) -> RawFd {
        self.buffered.as_raw_fd()
    }

    /// Raw descriptor of the `O_DIRECT` file, if any.
    pub(crate) fn direct_fd(&self) -> Option<RawFd> {
        self.direct.as_ref().map(|f| f.as_raw_fd())
    }
}

/// Check a block size: a power of two from 512 to [`MAX_BLOCK_SIZE`].
pub(crate) fn validate_block_size(bs: u32) -> Result<(), BdevError> {
    if !(512..=MAX_BLOCK_SIZE).contains(&bs) || !bs.is_power_of_two() {
        return Err(BdevError::Invalid(format!(
            "block_size {bs} is invalid: it must be a power of two between 512 and {MAX_BLOCK_SIZE}"
        )));
    }
    Ok(())
}

/// Pick the block size: the given one (not below the device's logical block size) or the
/// detected one.
pub(crate) fn choose_block_size(
    given: Option<u32>,
    detected: u32,
    path: &str,
) -> Result<u32, BdevError> {
    match given {
        None => {
            validate_block_size(detected)?;
            Ok(detected)
        }
        Some(bs) => {
            validate_block_size(bs)?;
            if bs < detected {
                return Err(BdevError::Invalid(format!(
                    "block_size {bs} is smaller than the logical block size {detected} of {path}"
                )));
            }
            Ok(bs)
        }
    }
}

/// Number of whole blocks in `size` bytes; a file smaller than one block is refused.
pub(crate) fn num_blocks(size: u64, block_size: u32, path: &str) -> Result<u64, BdevError> {
    let n = size / u64::from(block_size);
    if n == 0 {
        return Err(BdevError::Invalid(format!(
            "{path} is too small: {size} bytes is less than one block of {block_size} bytes"
        )));
    }
    Ok(n)
}

fn os_error(context: String, e: &std::io::Error) -> BdevError {
    BdevError::Os {
        context,
        message: e.to_string(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn open_file(path: &str, readonly: bool, direct: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(!readonly);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Logical block size and byte size of a block device.
fn block_device_geometry(f: &File, path: &str) -> Result<(u32, u64), BdevError> {
    let mut lbs: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::BLKSSZGET, &mut lbs) } != 0 {
        return Err(os_error(
            format!("BLKSSZGET on {path}"),
            &std::io::Error::last_os_error(),
        ));
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the valid pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as libc::Ioctl, &mut size) } != 0 {
        return Err(os_error(
            format!("BLKGETSIZE64 on {path}"),
            &std::io::Error::last_os_error(),
        ));
    }
    let lbs = u32::try_from(lbs).unwrap_or(0);
    Ok((lbs, size))
}

/// Direct-I/O alignment from `statx(STATX_DIOALIGN)`, or `fallback` when the kernel does not
/// report it.
fn dio_alignment(f: &File, fallback: u32) -> DioAlign {
    // SAFETY: all-zero is a valid `statx` value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid empty C string, used with AT_EMPTY_PATH on an open fd, and
    // `stx` is a valid, writable statx buffer.
    let rc = unsafe {
        libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let ok = |v: u32| v != 0 && v.is_power_of_two();
    if rc == 0
        && stx.stx_mask & libc::STATX_DIOALIGN != 0
        && ok(stx.stx_dio_mem_align)
        && ok(stx.stx_dio_offset_align)
    {
        DioAlign {
            mem: stx.stx_dio_mem_align,
            offset: stx.stx_dio_offset_align,
        }
    } else {
        DioAlign {
            mem: fallback,
            offset: fallback,
        }
    }
}

/// Whether a direct read of one aligned unit at offset 0 works (some filesystems accept
/// `O_DIRECT` at open and refuse it at I/O time).
fn direct_read_works(f: &File, align: DioAlign) -> bool {
    let unit = align.offset.max(align.mem) as usize;
    let mut buf = vec![0u8; 2 * unit];
    let start = buf.as_ptr().align_offset(align.mem as usize);
    match f.read_at(&mut buf[start..start + unit], 0) {
        Ok(_) => true,
        Err(e) => {
            log::debug!("direct read probe failed: {e}");
            false
        }
    }
}

/// Whether `fallocate(PUNCH_HOLE | KEEP_SIZE)` is supported, probed past the end of the data
/// (where it changes nothing).
fn punch_hole_works(f: &File, at: u64, len: u32) -> bool {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let Ok(at) = libc::off_t::try_from(at) else {
        return false;
    };
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, at, libc::off_t::from(len)) };
    if rc != 0 {
        log::debug!(
            "fallocate punch-hole probe: {}",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// Open `path` (a regular file or a block device) for a uring/aio bdev.
pub(crate) fn open(
    path: &str,
    block_size: Option<u32>,
    readonly: bool,
) -> Result<BackingFile, BdevError> {
    if path.is_empty() {
        return Err(BdevError::Invalid("filename must not be empty".into()));
    }
    if let Some(bs) = block_size {
        validate_block_size(bs)?;
    }
    let buffered = open_file(path, readonly, false)
        .map_err(|e| os_error(format!("cannot open {path}"), &e))?;
    let meta = buffered
        .metadata()
        .map_err(|e| os_error(format!("cannot stat {path}"), &e))?;
    let ft = meta.file_type();
    let (kind, detected, size) = if ft.is_block_device() {
        let (lbs, size) = block_device_geometry(&buffered, path)?;
        (FileKind::BlockDevice, lbs, size)
    } else if ft.is_file() {
        (FileKind::Regular, DEFAULT_FILE_BLOCK_SIZE, meta.len())
    } else {
        return Err(BdevError::Invalid(format!(
            "{path} is not a regular file or a block device"
        )));
    };
    let bs = choose_block_size(block_size, detected, path)?;
    let num_blocks = num_blocks(size, bs, path)?;
    if size % u64::from(bs) != 0 {
        log::warn!(
            "{path}: last {} byte(s) do not fill a block and are unused",
            size % u64::from(bs)
        );
    }

    let fallback_align = match kind {
        FileKind::BlockDevice => detected,
        FileKind::Regular => (meta_blksize(&meta)).max(512),
    };
    let (direct, dio) = match open_file(path, readonly, true) {
        Ok(f) => {
            let dio = dio_alignment(&f, fallback_align);
            if direct_read_works(&f, dio) {
                log::info!(
                    "{path}: O_DIRECT for aligned I/O (memory {} B, offset {} B), buffered otherwise",
                    dio.mem,
                    dio.offset
                );
                (Some(f), dio)
            } else {
                log::info!("{path}: direct reads refused by the filesystem, using buffered I/O");
                (None, dio)
            }
        }
        Err(e) => {
            log::info!("{path}: O_DIRECT not supported ({e}), using buffered I/O");
            (
                None,
                DioAlign {
                    mem: fallback_align,
                    offset: fallback_align,
                },
            )
        }
    };
    let punch_hole = match (kind, readonly) {
        (_, true) => false,
        (FileKind::BlockDevice, false) => true,
        (FileKind::Regular, false) => punch_hole_works(&buffered, size, bs),
    };
    Ok(BackingFile {
        path: path.to_string(),
        kind,
        buffered,
        direct,
        dio,
        block_size: bs,
        block_size_given: block_size.is_some(),
        num_blocks,
        readonly,
        punch_hole,
    })
}

fn meta_blksize(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    u32::try_from(meta.blksize())
        .ok()
        .filter(|b| b.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in /tmp removed on drop.
    struct TempFile(String);
    impl TempFile {
        fn new(tag: &str, len: u64) -> TempFile {
            let path = format!("/tmp/keel-uring-file-{tag}-{}", std::process::id());
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn block_sizes_are_validated() {
        for ok in [512, 1024, 4096, 65536] {
            assert!(validate_block_size(ok).is_ok(), "{ok}");
        }
        for bad in [0, 256, 511, 513, 3000, 131072] {
            let e = validate_block_size(bad).unwrap_err();
            assert!(e.to_string().contains("power of two"), "{bad}: {e}");
            assert_eq!(e.errno(), -libc::EINVAL);
        }
    }

    #[test]
    fn block_size_defaults_and_floor() {
        assert_eq!(choose_block_size(None, 512, "f").unwrap(), 512);
        assert_eq!(choose_block_size(Some(4096), 512, "f").unwrap(), 4096);
        let e = choose_block_size(Some(512), 4096, "/dev/x").unwrap_err();
        assert!(
            e.to_string()
                .contains("smaller than the logical block size 4096"),
            "{e}"
        );
    }

    #[test]
    fn sizing() {
        assert_eq!(num_blocks(1 << 20, 512, "f").unwrap(), 2048);
        assert_eq!(
            num_blocks(4096 + 100, 4096, "f").unwrap(),
            1,
            "tail ignored"
        );
        let e = num_blocks(4095, 4096, "small").unwrap_err();
        assert!(e.to_string().contains("less than one block"), "{e}");
        assert!(num_blocks(0, 512, "empty").is_err());
    }

    #[test]
    fn opens_a_regular_file() {
        let t = TempFile::new("open", 1 << 20);
        let f = open(&t.0, None, false).unwrap();
        assert_eq!(f.kind, FileKind::Regular);
        assert_eq!((f.block_size, f.num_blocks), (512, 2048));
        assert!(!f.block_size_given && !f.readonly);
        assert!(f.dio.mem.is_power_of_two() && f.dio.offset.is_power_of_two());
        let f = open(&t.0, Some(4096), true).unwrap();
        assert_eq!((f.block_size, f.num_blocks), (4096, 256));
        assert!(f.readonly && !f.punch_hole);
    }

    #[test]
    fn refuses_short_files_missing_paths_and_directories() {
        let t = TempFile::new("short", 511);
        assert!(open(&t.0, None, false)
            .unwrap_err()
            .to_string()
            .contains("too small"));
        let e = open("/tmp/keel-no-such-file-xyz", None, false).unwrap_err();
        assert_eq!(e.errno(), -libc::ENOENT);
        let e = open("/tmp", None, true).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(open("", None, false).is_err());
        let t = TempFile::new("bs", 8192);
        assert!(open(&t.0, Some(1000), false).is_err());
    }
}
