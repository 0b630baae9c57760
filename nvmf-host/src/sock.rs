//! The host's TCP socket: a non-blocking connect that never stalls the reactor, and the
//! gathered/scattered `sendmsg`/`recvmsg` calls of the queue pair (one syscall moves many
//! PDUs). Thin wrappers over libc; every call is non-blocking.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// What a non-blocking socket call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xfer {
    /// Moved this many bytes (> 0).
    Bytes(usize),
    /// Nothing now (EAGAIN).
    WouldBlock,
    /// The peer closed the connection (receive only).
    Closed,
}

/// Start a non-blocking connect to `addr`; the socket has TCP_NODELAY and is returned at
/// once (the connection completes later: see [`connect_done`]).
pub fn connect_start(addr: &SocketAddr) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call; the fd is owned by the TcpStream below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own; TcpStream takes ownership and closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    stream.set_nodelay(true)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the socket's family.
    let rc = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Whether the connect started by [`connect_start`] finished: `Ok(true)` connected,
/// `Ok(false)` still in progress, `Err` refused/unreachable.
pub fn connect_done(stream: &TcpStream) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout (never sleeps).
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(false);
    }
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A message header over `iov` alone (no name, no control data).
#[inline]
fn msghdr(iov: &[libc::iovec]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zeroed is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    msg
}

/// After a non-blocking send or receive failed: `None` to retry it (EINTR), else what it
/// returns (EAGAIN: would block; anything else: the error).
#[inline]
fn failed() -> Option<io::Result<Xfer>> {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINTR) => None,
        Some(libc::EAGAIN) => Some(Ok(Xfer::WouldBlock)),
        _ => Some(Err(e)),
    }
}

/// Gathered send of `iov` (non-blocking, no SIGPIPE).
#[inline]
pub fn send_iov(fd: RawFd, iov: &[libc::iovec]) -> io::Result<Xfer> {
    if iov.is_empty() {
        return Ok(Xfer::WouldBlock);
    }
    let msg = msghdr(iov);
    loop {
        // SAFETY: `msg` points to `iov.len()` iovecs whose memory the caller guarantees valid
        // for reads for the duration of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(if n == 0 {
                Xfer::WouldBlock
            } else {
                Xfer::Bytes(n as usize)
            });
        }
        if let Some(r) = failed() {
            return r;
        }
    }
}

/// Scattered receive into `iov` (non-blocking).
#[inline]
pub fn recv_iov(fd: RawFd, iov: &[libc::iovec]) -> io::Result<Xfer> {
    let mut msg = msghdr(iov);
    loop {
        // SAFETY: `msg` points to `iov.len()` iovecs whose memory the caller guarantees valid
        // for writes and not otherwise accessed during the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
        if n > 0 {
            return Ok(Xfer::Bytes(n as usize));
        }
        if n == 0 {
            return Ok(Xfer::Closed);
        }
        if let Some(r) = failed() {
            return r;
        }
    }
}

/// A `libc::iovec` for `len` bytes at `base`.
#[inline]
pub fn iovec(base: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: base as *mut libc::c_void,
        iov_len: len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn connect_send_recv_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = connect_start(&addr).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        while !connect_done(&s).unwrap() {}
        let a = b"hello ";
        let b = b"world";
        let iov = [iovec(a.as_ptr(), a.len()), iovec(b.as_ptr(), b.len())];
        assert_eq!(send_iov(s.as_raw_fd(), &iov).unwrap(), Xfer::Bytes(11));
        let mut got = [0u8; 11];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello world");

        let mut x = [0u8; 4];
        let mut y = [0u8; 8];
        let iov = [iovec(x.as_mut_ptr(), 4), iovec(y.as_mut_ptr(), 8)];
        assert_eq!(recv_iov(s.as_raw_fd(), &iov).unwrap(), Xfer::WouldBlock);
        peer.write_all(b"0123456").unwrap();
        let mut n = 0;
        while n < 7 {
            if let Xfer::Bytes(k) = recv_iov(s.as_raw_fd(), &iov).unwrap() {
                n += k;
            }
        }
        assert_eq!((&x, &y[..3]), (b"0123", &b"456"[..]));
        drop(peer);
        loop {
            match recv_iov(s.as_raw_fd(), &iov).unwrap() {
                Xfer::Closed => break,
                Xfer::WouldBlock => continue,
                Xfer::Bytes(_) => panic!("no more data was sent"),
            }
        }
    }

    #[test]
    fn refused_connect_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let r = connect_start(&addr).and_then(|s| loop {
            if connect_done(&s)? {
                break Ok(());
            }
        });
        assert!(r.is_err());
    }
}
