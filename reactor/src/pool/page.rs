//! Pool pages: 2 MiB anonymous mappings, hugepage-backed when the system allows.
//!
//! With `use_hugepages` a page is first mapped with `MAP_HUGETLB | MAP_HUGE_2MB`. When that
//! fails (no hugepages reserved, reserve used up, kernel without hugetlbfs) the domain falls
//! back to ordinary pages for good; the process logs that once at `info` (it is a supported
//! configuration, not an error). Ordinary pages are mapped 2 MiB-aligned (4 MiB are reserved,
//! the unaligned head and tail unmapped again), so every slice and every object is aligned to
//! its size, and transparent hugepages can back the page; we `madvise(MADV_HUGEPAGE)` it.
//!
//! Memory is not pre-faulted: a slice nobody carved costs no resident memory.

use super::PAGE_SIZE;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// `MAP_HUGE_2MB`: log2(2 MiB) in the `MAP_HUGE_SHIFT` bits of the mmap flags.
const MAP_HUGE_2MB: libc::c_int = 21 << libc::MAP_HUGE_SHIFT;

/// Set once the process logged that hugepages are unavailable.
static HUGEPAGES_UNAVAILABLE_LOGGED: AtomicBool = AtomicBool::new(false);

/// One mapped, 2 MiB-aligned, `PAGE_SIZE`-long region, unmapped on drop.
#[derive(Debug)]
pub(super) struct Page {
    base: NonNull<u8>,
    huge: bool,
}

impl Page {
    /// Map one page. `try_huge` asks for a hugetlb page first; on its failure `*try_huge` is
    /// cleared (the caller stops asking) and an ordinary page is mapped instead.
    /// Returns the OS error when even the ordinary mapping fails.
    pub(super) fn map(try_huge: &mut bool) -> std::io::Result<Page> {
        if *try_huge {
            match map_anon(PAGE_SIZE, libc::MAP_HUGETLB | MAP_HUGE_2MB) {
                Ok(base) => return Ok(Page { base, huge: true }),
                Err(e) => {
                    *try_huge = false;
                    if !HUGEPAGES_UNAVAILABLE_LOGGED.swap(true, Ordering::Relaxed) {
                        log::info!(
                            "buffer pool: 2 MiB hugepages unavailable ({e}); using ordinary pages"
                        );
                    }
                }
            }
        }
        map_aligned_ordinary().map(|base| Page { base, huge: false })
    }

    /// First byte of the page.
    pub(super) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether the page is backed by a hugetlb page.
    pub(super) fn is_huge(&self) -> bool {
        self.huge
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a PAGE_SIZE mapping this Page owns; the domain drops
        // its pages only when no buffer into them is outstanding.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), PAGE_SIZE) };
        if rc != 0 {
            log::error!(
                "buffer pool: munmap of page {:p} failed: {}",
                self.base,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// mmap `len` bytes of private anonymous read/write memory with `extra` flags.
fn map_anon(len: usize, extra: libc::c_int) -> std::io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// Map an ordinary PAGE_SIZE region aligned to PAGE_SIZE: reserve twice the size, unmap the
/// unaligned head and the tail.
fn map_aligned_ordinary() -> std::io::Result<NonNull<u8>> {
    let raw = map_anon(2 * PAGE_SIZE, 0)?;
    let addr = raw.as_ptr() as usize;
    let head = addr.next_multiple_of(PAGE_SIZE) - addr;
    let tail = PAGE_SIZE - head;
    // SAFETY: [addr, addr + 2*PAGE_SIZE) is our own fresh mapping; we unmap its first `head`
    // and last `tail` bytes (page-granular, as PAGE_SIZE and the mmap address are multiples of
    // the OS page size), keeping the aligned PAGE_SIZE in between.
    unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap(raw.as_ptr().add(head + PAGE_SIZE).cast(), tail);
        }
    }
    // SAFETY: addr + head lies inside the mapping, hence non-null.
    let base = unsafe { NonNull::new_unchecked(raw.as_ptr().add(head)) };
    // SAFETY: advisory only, on memory we own; failure (THP disabled) is harmless.
    unsafe { libc::madvise(base.as_ptr().cast(), PAGE_SIZE, libc::MADV_HUGEPAGE) };
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_page_is_aligned_and_writable() {
        let mut huge = false;
        let page = Page::map(&mut huge).expect("map");
        assert!(!page.is_huge());
        assert_eq!(page.base() as usize % PAGE_SIZE, 0);
        // SAFETY: the page is PAGE_SIZE bytes of our own read/write memory.
        let mem = unsafe { std::slice::from_raw_parts_mut(page.base(), PAGE_SIZE) };
        mem[0] = 1;
        mem[PAGE_SIZE - 1] = 2;
        assert_eq!((mem[0], mem[PAGE_SIZE - 1]), (1, 2));
    }

    #[test]
    fn hugepage_request_falls_back_or_succeeds() {
        let mut huge = true;
        let page = Page::map(&mut huge).expect("map never fails for lack of hugepages");
        // Either we got a hugetlb page (and keep asking) or fell back (and stop asking).
        assert_eq!(page.is_huge(), huge);
        assert_eq!(page.base() as usize % PAGE_SIZE, 0);
    }
}
