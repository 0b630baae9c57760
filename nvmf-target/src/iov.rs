//! Copies between byte slices and a request's scatter-gather list ([`IoVec`]s), for the
//! admin-path data the target builds or reads (Identify data, log pages, Connect data,
//! Dataset Management ranges), and [`copy_log_page`], the window of a log page a Get Log Page
//! asks for. An `IoVec` is a raw pointer, so these are `unsafe fn`s: the
//! caller vouches for the buffers, as [`crate::request::NvmfRequest`] does for its `iovs`.

use keel_bdev::{IoVec, IovCursor};
use keel_nvme::log::GetLogPage;
use keel_nvme::status::Status;

/// Copy `src` into the buffers described by `iovs`, starting `offset` bytes into them.
/// Copies as much as fits and returns the number of bytes copied.
///
/// # Safety
/// Every `iovs[i]` must describe memory valid for writes of `iovs[i].len` bytes that nothing
/// else accesses during the call (true of a request's data buffers between `execute` and
/// `request_complete`). The buffers must not overlap `src`.
pub unsafe fn copy_to_iovs(iovs: &[IoVec], offset: usize, src: &[u8]) -> usize {
    // SAFETY: the caller's contract is the cursor's: valid for writes, unshared, no overlap.
    unsafe { IovCursor::at(iovs, offset).copy_from_slice(src) }
}

/// Fill `len` bytes of the buffers described by `iovs` with zeroes, starting `offset` bytes
/// into them. Returns the number of bytes zeroed (less than `len` if the buffers end first).
///
/// # Safety
/// As for [`copy_to_iovs`].
pub unsafe fn zero_iovs(iovs: &[IoVec], offset: usize, len: usize) -> usize {
    // SAFETY: as in `copy_to_iovs`.
    unsafe { IovCursor::at(iovs, offset).fill(0, len) }
}

/// Copy from the buffers described by `iovs`, starting `offset` bytes into them, into `dst`.
/// Returns the number of bytes copied (less than `dst.len()` if the buffers end first).
///
/// # Safety
/// Every `iovs[i]` must describe memory valid for reads of `iovs[i].len` bytes that nothing
/// writes during the call, not overlapping `dst`.
pub unsafe fn copy_from_iovs(iovs: &[IoVec], offset: usize, dst: &mut [u8]) -> usize {
    // SAFETY: the caller's contract is the cursor's: valid for reads, not written by others,
    // no overlap.
    unsafe { IovCursor::at(iovs, offset).copy_to_slice(dst) }
}

/// Whether the first `data.len()` bytes of the buffers described by `iovs` equal `data`
/// (false if the buffers are shorter than `data`). For Compare.
///
/// # Safety
/// As for [`copy_from_iovs`].
pub unsafe fn iovs_equal(iovs: &[IoVec], data: &[u8]) -> bool {
    // SAFETY: as in `copy_from_iovs`.
    unsafe { IovCursor::new(iovs).starts_with(data) }
}

/// Total bytes the buffers describe.
pub fn iovs_len(iovs: &[IoVec]) -> usize {
    iovs.iter().map(|v| v.len()).sum()
}

/// Copy the window of `page` that `cmd` asks for into `iovs`, zero-filling up to `cmd.len`
/// bytes (or the end of the buffers, if shorter). Returns the bytes written, or Invalid
/// Field if the offset is past the end of the page.
///
/// # Safety
/// As for [`copy_to_iovs`]: `iovs` describe writable memory nothing else touches
/// during the call (a request's buffers between `execute` and `request_complete`).
pub unsafe fn copy_log_page(
    page: &[u8],
    cmd: &GetLogPage,
    iovs: &[IoVec],
) -> Result<usize, Status> {
    let (start, n) = cmd.window(page.len())?;
    let want = usize::try_from(cmd.len)
        .unwrap_or(usize::MAX)
        .min(iovs_len(iovs));
    // SAFETY: the caller's guarantee for `iovs` is passed on.
    let copied = unsafe { copy_to_iovs(iovs, 0, &page[start..start + n]) };
    // SAFETY: as above.
    let zeroed = unsafe { zero_iovs(iovs, copied, want.saturating_sub(copied)) };
    Ok(copied + zeroed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Split `buf` into iovecs of the given sizes (the rest of `buf` unused).
    pub(crate) fn split(buf: &mut [u8], sizes: &[usize]) -> Vec<IoVec> {
        let mut v = Vec::new();
        let mut at = 0;
        for &s in sizes {
            // SAFETY: test buffers outlive the iovecs built on them and are only touched
            // through them while in use.
            v.push(unsafe { IoVec::from_raw_parts(buf.as_mut_ptr().add(at), s) });
            at += s;
        }
        assert!(at <= buf.len());
        v
    }

    #[test]
    fn copy_across_buffers_with_offset() {
        let mut mem = [0xeeu8; 16];
        let iovs = split(&mut mem, &[3, 5, 8]);
        assert_eq!(iovs_len(&iovs), 16);
        let src: Vec<u8> = (1..=10).collect();
        // SAFETY: `iovs` cover `mem`, which lives through the call.
        let n = unsafe { copy_to_iovs(&iovs, 2, &src) };
        assert_eq!(n, 10);
        assert_eq!(
            mem,
            [0xee, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xee, 0xee, 0xee, 0xee]
        );
        let iovs = split(&mut mem, &[3, 5, 8]);
        let mut back = [0u8; 4];
        // SAFETY: as above.
        assert_eq!(unsafe { copy_from_iovs(&iovs, 6, &mut back) }, 4);
        assert_eq!(back, [5, 6, 7, 8]);
        // SAFETY: as above.
        assert_eq!(unsafe { zero_iovs(&iovs, 12, 100) }, 4);
        assert_eq!(&mem[12..], &[0; 4]);
    }

    #[test]
    fn short_buffers_stop_the_copy() {
        let mut mem = [0u8; 4];
        let iovs = split(&mut mem, &[2, 2]);
        // SAFETY: `iovs` cover `mem`.
        assert_eq!(unsafe { copy_to_iovs(&iovs, 1, &[9; 10]) }, 3);
        assert_eq!(mem, [0, 9, 9, 9]);
        let iovs = split(&mut mem, &[2, 2]);
        // SAFETY: as above.
        assert_eq!(unsafe { copy_to_iovs(&iovs, 10, &[1]) }, 0);
        let mut dst = [0u8; 8];
        // SAFETY: as above.
        assert_eq!(unsafe { copy_from_iovs(&iovs, 0, &mut dst) }, 4);
        // SAFETY: no iovecs, nothing touched.
        assert_eq!(unsafe { copy_to_iovs(&[], 0, &[1]) }, 0);
    }

    #[test]
    fn equality_across_buffers() {
        let mut mem: Vec<u8> = (0..9).collect();
        let iovs = split(&mut mem, &[3, 2, 4]);
        // SAFETY: `iovs` cover `mem`, which outlives them and is only read through them.
        let eq = |d: &[u8]| unsafe { iovs_equal(&iovs, d) };
        assert!(eq(&[0, 1, 2, 3, 4, 5, 6]));
        assert!(eq(&[]));
        assert!(!eq(&[0, 1, 2, 3, 4, 5, 7]));
        assert!(!eq(&[0; 12]), "buffers shorter than data");
        // SAFETY: no iovecs, nothing touched.
        assert!(!unsafe { iovs_equal(&[], &[1]) });
    }

    #[test]
    fn copy_log_page_windows_and_zero_fills() {
        use keel_nvme::log::LID_ERROR;
        let glp = GetLogPage::command;
        let page: Vec<u8> = (0..64u8).collect();
        let mut mem = [0xeeu8; 32];
        let iovs = split(&mut mem, &[10, 22]);
        let cmd = GetLogPage::decode(&glp(7 << 16 | LID_ERROR as u32, 0, 56, 0, 0)).unwrap();
        assert_eq!(cmd.len, 32);
        // SAFETY: `iovs` cover `mem`, alive and untouched during the call.
        let n = unsafe { copy_log_page(&page, &cmd, &iovs) }.unwrap();
        assert_eq!(n, 32);
        assert_eq!(&mem[..8], &[56, 57, 58, 59, 60, 61, 62, 63]);
        assert_eq!(&mem[8..], &[0; 24]);
        let bad = GetLogPage::decode(&glp(LID_ERROR as u32, 0, 68, 0, 0)).unwrap();
        assert_eq!(
            // SAFETY: as above.
            unsafe { copy_log_page(&page, &bad, &iovs) },
            Err(Status::INVALID_FIELD)
        );
        // Buffers shorter than the request: fill what there is.
        let mut small = [0xeeu8; 4];
        let iovs = split(&mut small, &[4]);
        let all = GetLogPage::decode(&glp(15 << 16, 0, 0, 0, 0)).unwrap();
        // SAFETY: `iovs` cover `small`.
        assert_eq!(unsafe { copy_log_page(&page, &all, &iovs) }, Ok(4));
        assert_eq!(small, [0, 1, 2, 3]);
    }
}
