//! Thin wrappers over the eventfd and epoll syscalls used by interrupt mode.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking eventfd: any thread may [`EventFd::notify`]; the owner waits on it in epoll.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall with constant flags; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the eventfd readable (wakes an epoll_wait on it). Never blocks.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an fd we own. Failure can only be EAGAIN
        // (counter saturated), in which case it is already readable: nothing to do.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter (non-blocking; a no-op when not readable).
    pub(crate) fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN (not readable) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An epoll set watching descriptors for readability (level-triggered).
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

/// What `Epoll::wait` reports for each ready descriptor: the token it was added with.
pub(crate) type Token = u64;

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watch `fd` for readability; `token` comes back from [`Epoll::wait`].
    pub(crate) fn add(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel checks `fd`.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stop watching `fd`.
    pub(crate) fn remove(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; the event argument is ignored for DEL but must be non-null on
        // old kernels.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sleep until a watched fd is readable or `timeout` passed (rounded up to whole ms).
    /// Calls `ready(token)` for each ready fd; returns how many were ready. EINTR counts as 0.
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(Token),
    ) -> io::Result<usize> {
        const MAX_EVENTS: usize = 32;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a writable array of MAX_EVENTS epoll_event.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as i32,
                ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(err)
            };
        }
        let n = n as usize;
        for ev in &events[..n] {
            ready(ev.u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_epoll_until_cleared() {
        let efd = EventFd::new().unwrap();
        let ep = Epoll::new().unwrap();
        ep.add(efd.as_raw_fd(), 7).unwrap();
        assert_eq!(ep.wait(Duration::ZERO, |_| panic!("not ready")).unwrap(), 0);
        efd.notify();
        efd.notify();
        let mut seen = vec![];
        assert_eq!(
            ep.wait(Duration::from_secs(5), |t| seen.push(t)).unwrap(),
            1
        );
        assert_eq!(seen, [7]);
        efd.clear();
        assert_eq!(ep.wait(Duration::ZERO, |_| panic!("cleared")).unwrap(), 0);
        ep.remove(efd.as_raw_fd()).unwrap();
        efd.notify();
        assert_eq!(ep.wait(Duration::ZERO, |_| panic!("removed")).unwrap(), 0);
    }

    #[test]
    fn bad_fds_are_errors() {
        let ep = Epoll::new().unwrap();
        assert!(ep.add(-1, 0).is_err());
        assert!(ep.remove(-1).is_err());
    }
}
