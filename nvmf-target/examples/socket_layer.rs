//! Socket-layer benchmark for the NVMe/TCP poll group: epoll vs io_uring, on 127.0.0.1.
//!
//! Isolates what `src/tcp/group.rs` does with its sockets (no NVMe parsing, no bdev): a server
//! thread pinned to core 0 busy-polls its connections, cuts the byte stream into 72-byte
//! "commands" and answers each with one 4136-byte "read answer" (24-byte C2HData header +
//! 4096 bytes of data + 16-byte CapsuleResp, three iovecs), gathered into `sendmsg` calls of
//! at most 64 iovecs per connection like `conn.rs`. A client thread pinned to core 1 (plain
//! non-blocking std sockets, the same for every server variant) keeps `depth` commands
//! outstanding on each of `conns` connections. Neither side ever sleeps in the kernel.
//!
//! Server variants:
//! - `epoll`: today's group: `epoll_wait(0)`, then non-blocking `recv` (up to 8 per ready
//!   connection, until EAGAIN), then one gathered `sendmsg` per connection with answers.
//! - `uring`: one oneshot `Recv` SQE outstanding per connection (re-armed on completion) and
//!   one `SendMsg` SQE per connection with answers; one `io_uring_enter(GETEVENTS)` per poll
//!   iteration submits the new SQEs and runs completions (SINGLE_ISSUER | DEFER_TASKRUN).
//! - `uring-mshot`: the same with one multishot `Recv` per connection over a provided-buffer
//!   ring (kernel ≥ 6.0).
//! - `uring-lazy`: multishot recv, COOP_TASKRUN | TASKRUN_FLAG, and `io_uring_enter` only when
//!   there are SQEs to submit or the kernel flags pending task work: idle polls make no
//!   syscall at all.
//!
//! Variants and loads are interleaved over `--rounds` rounds (the machine is shared and noisy);
//! the table gives medians and the ratio to `epoll`. Run: `perf/socket-layer.sh`, or
//! `cargo run --release -p keel-nvmf --example socket_layer -- --help`.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A command capsule on the wire.
const CMD: usize = 72;
/// The three parts of a 4 KiB read's answer.
const PARTS: [usize; 3] = [24, 4096, 16];
/// One answer on the wire.
const ANSWER: usize = PARTS[0] + PARTS[1] + PARTS[2];
/// Most iovecs per `sendmsg` (as `conn.rs`).
const IOV_BATCH: usize = 64;
/// Answers per `sendmsg` at most.
const PER_SEND: usize = IOV_BATCH / PARTS.len();
/// Receive buffer per connection (as the staging buffer of `recv.rs`).
const RX_BUF: usize = 16 * 1024;
/// Most `recv` calls per ready connection per poll (as `conn.rs`).
const READ_BUDGET: usize = 8;
/// Server core and client core.
const SERVER_CORE: usize = 0;
const CLIENT_CORE: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Epoll,
    Uring,
    UringMshot,
    UringLazy,
}

impl Variant {
    fn parse(s: &str) -> Option<Variant> {
        Some(match s {
            "epoll" => Variant::Epoll,
            "uring" => Variant::Uring,
            "uring-mshot" => Variant::UringMshot,
            "uring-lazy" => Variant::UringLazy,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Epoll => "epoll",
            Variant::Uring => "uring",
            Variant::UringMshot => "uring-mshot",
            Variant::UringLazy => "uring-lazy",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Load {
    conns: usize,
    depth: usize,
}

impl Load {
    fn name(self) -> String {
        format!(
            "QD{} ({}x{})",
            self.conns * self.depth,
            self.conns,
            self.depth
        )
    }
}

struct Args {
    variants: Vec<Variant>,
    loads: Vec<Load>,
    rounds: usize,
    secs: f64,
    warmup: f64,
    /// Runs where client or server got less of its core than this are left out of the medians.
    min_share: f64,
}

const USAGE: &str = "usage: socket_layer [--variants epoll,uring,uring-mshot,uring-lazy] \
[--loads 1x1,1x32,4x8] [--rounds 3] [--secs 2] [--warmup 0.3] [--min-cpu 0.9]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        variants: vec![
            Variant::Epoll,
            Variant::Uring,
            Variant::UringMshot,
            Variant::UringLazy,
        ],
        loads: vec![
            Load { conns: 1, depth: 1 },
            Load {
                conns: 1,
                depth: 32,
            },
            Load { conns: 4, depth: 8 },
        ],
        rounds: 3,
        secs: 2.0,
        warmup: 0.3,
        min_share: 0.9,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--help" || k == "-h" {
            return Err(USAGE.into());
        }
        let v = it.next().ok_or(format!("{k} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--variants" => {
                a.variants = v
                    .split(',')
                    .map(|s| Variant::parse(s).ok_or(format!("unknown variant {s}")))
                    .collect::<Result<_, _>>()?
            }
            "--loads" => {
                a.loads = v
                    .split(',')
                    .map(|s| {
                        let (c, d) = s.split_once('x').ok_or(format!("load {s}: want CxD"))?;
                        let conns = c.parse().map_err(|e| format!("load {s}: {e}"))?;
                        let depth: usize = d.parse().map_err(|e| format!("load {s}: {e}"))?;
                        if conns == 0 || !(1..=256).contains(&depth) {
                            return Err(format!("load {s}: 1..=256 deep, 1+ connections"));
                        }
                        Ok(Load { conns, depth })
                    })
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => a.rounds = num(&v)?.max(1.0) as usize,
            "--secs" => a.secs = num(&v)?.max(0.1),
            "--warmup" => a.warmup = num(&v)?.max(0.0),
            "--min-cpu" => a.min_share = num(&v)?.clamp(0.0, 1.0),
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// Pin the calling thread to `core` (a warning if the machine refuses).
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the macros and the call only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            eprintln!(
                "warning: cannot pin to core {core}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The bytes every answer is made of (the data is shared: this measures the socket layer).
struct Payload {
    parts: [Box<[u8]>; 3],
}

impl Payload {
    fn new() -> Payload {
        Payload {
            parts: PARTS.map(|n| vec![0x5au8; n].into_boxed_slice()),
        }
    }
}

/// Send-side bookkeeping of one server connection.
struct Tx {
    /// Answers owed and not yet fully sent.
    queued: usize,
    /// Bytes of the first queued answer already sent.
    head_off: usize,
    iov: Box<[libc::iovec; IOV_BATCH]>,
    msg: Box<libc::msghdr>,
    /// Bytes the current `sendmsg` carries.
    len: usize,
}

impl Tx {
    fn new() -> Tx {
        Tx {
            queued: 0,
            head_off: 0,
            iov: Box::new(
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; IOV_BATCH],
            ),
            // SAFETY: a zeroed msghdr is valid ("no name, no control").
            msg: Box::new(unsafe { std::mem::zeroed() }),
            len: 0,
        }
    }

    /// Fill the iovecs and the msghdr for the next `sendmsg` (up to PER_SEND answers).
    fn prepare(&mut self, p: &Payload) {
        let answers = self.queued.min(PER_SEND);
        let mut n = 0;
        let mut skip = self.head_off;
        let mut len = 0;
        for _ in 0..answers {
            for part in &p.parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                self.iov[n] = libc::iovec {
                    // SAFETY: skip < part.len(): inside the buffer.
                    iov_base: unsafe { part.as_ptr().add(skip) } as *mut libc::c_void,
                    iov_len: part.len() - skip,
                };
                len += part.len() - skip;
                skip = 0;
                n += 1;
            }
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        self.len = len;
    }

    /// `sent` bytes of the prepared message left.
    fn sent(&mut self, sent: usize) {
        let done = self.head_off + sent;
        self.queued -= done / ANSWER;
        self.head_off = done % ANSWER;
    }
}

/// One server connection.
struct SrvConn {
    sock: TcpStream,
    /// Bytes of an incomplete command received so far.
    partial: usize,
    rx: Box<[u8]>,
    tx: Tx,
    /// io_uring: a send is in flight / a recv is armed.
    sending: bool,
    receiving: bool,
}

impl SrvConn {
    fn new(sock: TcpStream) -> SrvConn {
        SrvConn {
            sock,
            partial: 0,
            rx: vec![0u8; RX_BUF].into_boxed_slice(),
            tx: Tx::new(),
            sending: false,
            receiving: false,
        }
    }

    /// `n` bytes of commands arrived: each complete command owes an answer.
    fn received(&mut self, n: usize) {
        let total = self.partial + n;
        self.tx.queued += total / CMD;
        self.partial = total % CMD;
    }
}

fn accept_all(l: &TcpListener, n: usize, nonblocking: bool) -> io::Result<Vec<SrvConn>> {
    (0..n)
        .map(|_| {
            let (s, _) = l.accept()?;
            s.set_nodelay(true)?;
            s.set_nonblocking(nonblocking)?;
            Ok(SrvConn::new(s))
        })
        .collect()
}

fn os_err<T>(what: &str) -> io::Result<T> {
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

// ----- server: epoll -----

fn serve_epoll(l: TcpListener, n: usize, stop: &AtomicBool) -> io::Result<()> {
    let mut conns = accept_all(&l, n, true)?;
    let payload = Payload::new();
    // SAFETY: plain syscall, result checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return os_err("epoll_create1");
    }
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid fds and event.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.sock.as_raw_fd(), &mut ev) } < 0 {
            return os_err("epoll_ctl");
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 128];
    let mut dirty: Vec<usize> = Vec::with_capacity(n);
    let mut epollout = vec![false; n];
    let result = (|| {
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `events` holds 128 entries; zero timeout.
            let k = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 128, 0) };
            for e in &events[..k.max(0) as usize] {
                let i = e.u64 as usize;
                let c = &mut conns[i];
                if e.events & libc::EPOLLIN as u32 != 0 {
                    for _ in 0..READ_BUDGET {
                        // SAFETY: `rx` is a writable buffer of RX_BUF bytes.
                        let r = unsafe {
                            libc::recv(c.sock.as_raw_fd(), c.rx.as_mut_ptr().cast(), RX_BUF, 0)
                        };
                        if r > 0 {
                            c.received(r as usize);
                        } else if r == 0 {
                            return Ok(()); // the client left
                        } else {
                            break; // EAGAIN (or an error the next send reports)
                        }
                    }
                }
                if c.tx.queued > 0 && !dirty.contains(&i) {
                    dirty.push(i);
                }
            }
            for i in dirty.drain(..) {
                let c = &mut conns[i];
                let mut blocked = false;
                while c.tx.queued > 0 {
                    c.tx.prepare(&payload);
                    let fd = c.sock.as_raw_fd();
                    // SAFETY: the iovecs point into `payload`, alive during the call.
                    let r = unsafe {
                        libc::sendmsg(fd, &*c.tx.msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                    };
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::WouldBlock {
                            blocked = true;
                            break;
                        }
                        return Err(e);
                    }
                    c.tx.sent(r as usize);
                    if (r as usize) < c.tx.len {
                        blocked = true;
                        break;
                    }
                }
                if blocked != epollout[i] {
                    epollout[i] = blocked;
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLIN as u32
                            | if blocked { libc::EPOLLOUT as u32 } else { 0 },
                        u64: i as u64,
                    };
                    // SAFETY: valid fds and event.
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd_of(c), &mut ev) };
                }
            }
        }
        Ok(())
    })();
    // SAFETY: our epoll fd, closed once.
    unsafe { libc::close(ep) };
    result
}

fn fd_of(c: &SrvConn) -> i32 {
    c.sock.as_raw_fd()
}

// ----- server: io_uring -----

/// `io_uring_enter` flag: run completions / task work (the crate keeps its `sys` private).
const IORING_ENTER_GETEVENTS: u32 = 1;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
/// Provided-buffer ring: buffer group, entries, size of each buffer.
const BGID: u16 = 7;
const NBUFS: usize = 64;
const BUF_LEN: usize = RX_BUF;

/// A provided-buffer ring (multishot recv picks its buffers from it).
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    bufs: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new(uring: &IoUring) -> io::Result<BufRing> {
        let ring_bytes = NBUFS * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping, result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return os_err("mmap buffer ring");
        }
        let mut br = BufRing {
            ring: p.cast(),
            ring_bytes,
            bufs: vec![0u8; NBUFS * BUF_LEN].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the ring is page-aligned, NBUFS entries, alive until `Drop` (after the
        // io_uring, which is dropped first by its owner).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(p as u64, NBUFS as u16, BGID, 0)?
        };
        for bid in 0..NBUFS as u16 {
            br.give(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Put buffer `bid` back (visible to the kernel at the next `publish`).
    fn give(&mut self, bid: u16) {
        let slot = self.tail as usize & (NBUFS - 1);
        // SAFETY: `slot` < NBUFS: inside the mapping; the kernel does not read entries past
        // the published tail.
        let e = unsafe { &mut *self.ring.add(slot) };
        e.set_addr(self.bufs.as_ptr() as u64 + (bid as usize * BUF_LEN) as u64);
        e.set_len(BUF_LEN as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the mapped ring; the kernel reads
        // it with acquire semantics.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: our mapping; the ring (and so the registration) is gone by now.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

fn recv_sqe(c: &mut SrvConn, i: usize, multishot: bool) -> squeue::Entry {
    let fd = types::Fd(c.sock.as_raw_fd());
    let ud = (i as u64) << 8 | OP_RECV;
    if multishot {
        opcode::RecvMulti::new(fd, BGID).build().user_data(ud)
    } else {
        opcode::Recv::new(fd, c.rx.as_mut_ptr(), RX_BUF as u32)
            .build()
            .user_data(ud)
    }
}

fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer an SQE points to (rx buffers, msghdr, iovecs, payload) belongs to a
    // connection or the payload, which outlive the ring's in-flight operations (drained or
    // cancelled before they are dropped).
    unsafe { ring.submission().push(e) }.map_err(|_| io::Error::other("submission queue full"))
}

#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one experiment's event loop
fn serve_uring(l: TcpListener, n: usize, v: Variant, stop: &AtomicBool) -> io::Result<()> {
    let multishot = v != Variant::Uring;
    let lazy = v == Variant::UringLazy;
    let mut b = IoUring::builder();
    if lazy {
        b.setup_coop_taskrun().setup_taskrun_flag();
    } else {
        b.setup_single_issuer().setup_defer_taskrun();
    }
    let mut ring = b.build(256)?;
    let mut bufs = if multishot {
        Some(BufRing::new(&ring)?)
    } else {
        None
    };
    // io_uring arms its own poll on sockets: keep them blocking.
    let mut conns = accept_all(&l, n, false)?;
    let payload = Payload::new();
    for (i, c) in conns.iter_mut().enumerate() {
        let e = recv_sqe(c, i, multishot);
        push(&mut ring, &e)?;
        c.receiving = true;
    }
    let getevents = IORING_ENTER_GETEVENTS;
    let mut rearm: Vec<usize> = Vec::with_capacity(n);
    let result = (|| {
        while !stop.load(Ordering::Relaxed) {
            let to_submit = ring.submission().len();
            let enter = !lazy || to_submit > 0 || ring.submission().taskrun();
            if enter {
                // SAFETY: plain enter, no argument.
                unsafe {
                    ring.submitter().enter::<libc::sigset_t>(
                        to_submit as u32,
                        0,
                        getevents,
                        None,
                    )?
                };
            }
            let mut gave = false;
            rearm.clear();
            for cqe in ring.completion() {
                let (i, op) = ((cqe.user_data() >> 8) as usize, cqe.user_data() & 0xff);
                let c = &mut conns[i];
                let res = cqe.result();
                let more = multishot && cqueue::more(cqe.flags());
                if op == OP_RECV && !more {
                    c.receiving = false;
                }
                if op == OP_SEND {
                    c.sending = false;
                    if res < 0 {
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    c.tx.sent(res as usize);
                    continue;
                }
                if let (Some(br), Some(bid)) = (bufs.as_mut(), cqueue::buffer_select(cqe.flags())) {
                    br.give(bid);
                    gave = true;
                }
                if res == 0 {
                    return Ok(()); // the client left
                }
                if res > 0 {
                    c.received(res as usize);
                } else if res != -libc::ENOBUFS {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                if !more {
                    rearm.push(i);
                }
            }
            if gave {
                if let Some(br) = bufs.as_ref() {
                    br.publish();
                }
            }
            for &i in &rearm {
                let e = recv_sqe(&mut conns[i], i, multishot);
                push(&mut ring, &e)?;
                conns[i].receiving = true;
            }
            for (i, c) in conns.iter_mut().enumerate() {
                if c.tx.queued > 0 && !c.sending {
                    c.tx.prepare(&payload);
                    let e = opcode::SendMsg::new(types::Fd(c.sock.as_raw_fd()), &*c.tx.msg)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                        .user_data((i as u64) << 8 | OP_SEND);
                    push(&mut ring, &e)?;
                    c.sending = true;
                }
            }
        }
        Ok(())
    })();
    // End every operation before the buffers go: shut the sockets down, then reap (bounded).
    for c in &conns {
        let _ = c.sock.shutdown(std::net::Shutdown::Both);
    }
    let mut left: usize = conns
        .iter()
        .map(|c| c.sending as usize + c.receiving as usize)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(2);
    let ts = types::Timespec::new().nsec(10_000_000);
    let wait = types::SubmitArgs::new().timespec(&ts);
    while left > 0 && Instant::now() < deadline {
        let _ = ring.submitter().submit_with_args(1, &wait);
        for cqe in ring.completion() {
            let more = cqueue::more(cqe.flags());
            if cqe.user_data() & 0xff == OP_SEND || !more {
                left = left.saturating_sub(1);
            }
        }
    }
    if left > 0 {
        // Never free memory the kernel may still write to.
        eprintln!("warning: {left} io_uring operations did not end; leaking their buffers");
        std::mem::forget(conns);
        std::mem::forget(bufs.take());
    }
    drop(ring);
    drop(bufs);
    result
}

// ----- client -----

/// One client connection: send times of the outstanding commands, oldest first.
struct CliConn {
    sock: TcpStream,
    sent: std::collections::VecDeque<Instant>,
    partial: usize,
}

struct Outcome {
    ops: u64,
    lat_sum: Duration,
    secs: f64,
    /// The smaller of the client's and the server's CPU time over the window, as a share of
    /// the window: below 1 when something else ran on their cores (a noisy neighbour).
    cpu_share: f64,
    /// Kept open until the server has stopped (a close would fail its pending receives).
    _conns: Vec<CliConn>,
}

fn send_cmds(s: &mut TcpStream, k: usize, cmds: &[u8]) -> io::Result<()> {
    let mut buf = &cmds[..k * CMD];
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// CPU time of the thread whose CPU clock is `clock` (the calling thread's: None).
fn cpu_time(clock: Option<libc::clockid_t>) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let id = clock.unwrap_or(libc::CLOCK_THREAD_CPUTIME_ID);
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn client(
    port: u16,
    load: Load,
    warmup: f64,
    secs: f64,
    server_clock: libc::clockid_t,
) -> io::Result<Outcome> {
    pin(CLIENT_CORE);
    let cmds = vec![0x11u8; 256 * CMD];
    let mut conns = Vec::with_capacity(load.conns);
    for _ in 0..load.conns {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let mut conns: Vec<CliConn> = conns
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true)?;
            Ok(CliConn {
                sock: s,
                sent: std::collections::VecDeque::with_capacity(load.depth),
                partial: 0,
            })
        })
        .collect::<io::Result<_>>()?;
    let mut rx = vec![0u8; 256 * 1024];
    let start = Instant::now();
    for c in &mut conns {
        c.sent.extend(std::iter::repeat_n(start, load.depth));
        send_cmds(&mut c.sock, load.depth, &cmds)?;
    }
    let t0 = start + Duration::from_secs_f64(warmup);
    let t1 = t0 + Duration::from_secs_f64(secs);
    let (mut ops, mut lat_sum) = (0u64, Duration::ZERO);
    let mut now = start;
    let mut cpu0: Option<(Instant, Duration, Duration)> = None;
    while now < t1 {
        if cpu0.is_none() && now >= t0 {
            cpu0 = Some((now, cpu_time(None), cpu_time(Some(server_clock))));
        }
        for c in &mut conns {
            let n = match c.sock.read(&mut rx) {
                Ok(0) => return Err(io::Error::other("the server closed")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            now = Instant::now();
            let total = c.partial + n;
            let k = total / ANSWER;
            c.partial = total % ANSWER;
            if k == 0 {
                continue;
            }
            let measuring = now >= t0 && now < t1;
            for _ in 0..k {
                let ts = c.sent.pop_front().expect("answers only for commands sent");
                if measuring {
                    ops += 1;
                    lat_sum += now - ts;
                }
            }
            c.sent.extend(std::iter::repeat_n(now, k));
            send_cmds(&mut c.sock, k, &cmds)?;
        }
        now = Instant::now();
    }
    let cpu_share = cpu0.map_or(0.0, |(w0, c0, s0)| {
        let wall = (now - w0).as_secs_f64();
        let mine = (cpu_time(None) - c0).as_secs_f64();
        let server = (cpu_time(Some(server_clock)) - s0).as_secs_f64();
        mine.min(server) / wall
    });
    Ok(Outcome {
        ops,
        lat_sum,
        secs,
        cpu_share,
        _conns: conns,
    })
}

/// One measurement: a fresh server of variant `v` and the client. Ops/s and mean latency (µs).
/// One run's result.
#[derive(Debug, Clone, Copy)]
struct Run {
    iops: f64,
    lat_us: f64,
    cpu_share: f64,
}

fn run_once(v: Variant, load: Load, args: &Args) -> io::Result<Run> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        pin(SERVER_CORE);
        let r = match v {
            Variant::Epoll => serve_epoll(l, load.conns, &stop2),
            _ => serve_uring(l, load.conns, v, &stop2),
        };
        r.map_err(|e| format!("server {}: {e}", v.name()))
    });
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the server thread is alive until joined below; `clock` is a valid out-parameter.
    let rc = unsafe { libc::pthread_getcpuclockid(server.as_pthread_t(), &mut clock) };
    let out = if rc != 0 {
        Err(io::Error::from_raw_os_error(rc))
    } else {
        client(port, load, args.warmup, args.secs, clock)
    };
    stop.store(true, Ordering::Relaxed);
    let srv = server
        .join()
        .map_err(|_| io::Error::other("server panicked"))?;
    let out = out?;
    srv.map_err(io::Error::other)?;
    if out.ops == 0 {
        return Err(io::Error::other("no operation completed"));
    }
    Ok(Run {
        iops: out.ops as f64 / out.secs,
        lat_us: out.lat_sum.as_secs_f64() / out.ops as f64 * 1e6,
        cpu_share: out.cpu_share,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let nv = args.variants.len();
    let nl = args.loads.len();
    // results[load][variant][round]
    let mut results: Vec<Vec<Vec<Option<Run>>>> = vec![vec![Vec::new(); nv]; nl];
    for round in 0..args.rounds {
        for (li, &load) in args.loads.iter().enumerate() {
            // Rotate the order each round so no variant always runs first.
            for k in 0..nv {
                let vi = (k + round) % nv;
                let v = args.variants[vi];
                let r = run_once(v, load, &args);
                match &r {
                    Ok(r) => eprintln!(
                        "round {:>2} {:<12} {:<12} {:>9.0} ops/s {:>8.2} us  cpu {:.2}",
                        round + 1,
                        load.name(),
                        v.name(),
                        r.iops,
                        r.lat_us,
                        r.cpu_share
                    ),
                    Err(e) => eprintln!("round {} {} {}: {e}", round + 1, load.name(), v.name()),
                }
                results[li][vi].push(r.ok());
            }
        }
    }
    println!(
        "\nsocket layer: 127.0.0.1, server core {SERVER_CORE}, client core {CLIENT_CORE}, {} rounds \
         of {:.1} s, {CMD} B commands, {ANSWER} B answers. Medians over the clean runs (client \
         and server each had >= {:.0}% of their core; other runs were disturbed by other work); \
         ratios: median of the per-round ratios to epoll (number of rounds).",
        args.rounds,
        args.secs,
        args.min_share * 100.0
    );
    println!(
        "| load | variant | clean runs | ops/s | mean latency (us) | ops/s vs epoll, clean rounds \
         | ops/s vs epoll, all rounds |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base = args.variants.iter().position(|&v| v == Variant::Epoll);
    let clean = |r: &Option<Run>| r.filter(|r| r.cpu_share >= args.min_share);
    for (li, load) in args.loads.iter().enumerate() {
        for (vi, v) in args.variants.iter().enumerate() {
            let runs = &results[li][vi];
            let total = runs.iter().flatten().count();
            // Per-round ratios to epoll: over the rounds where both runs were clean, and over
            // all rounds.
            let paired = |only_clean: bool| -> String {
                let Some(b) = base else {
                    return "n/a".into();
                };
                let mut q: Vec<f64> = runs
                    .iter()
                    .zip(&results[li][b])
                    .filter_map(|(x, y)| {
                        let (x, y) = if only_clean {
                            (clean(x)?, clean(y)?)
                        } else {
                            ((*x)?, (*y)?)
                        };
                        Some(x.iops / y.iops)
                    })
                    .collect();
                if q.is_empty() {
                    "n/a".into()
                } else {
                    format!("{:.3} ({})", median(&mut q), q.len())
                }
            };
            let c: Vec<Run> = runs.iter().filter_map(clean).collect();
            if c.is_empty() {
                println!(
                    "| {} | {} | 0/{total} | | | n/a | {} |",
                    load.name(),
                    v.name(),
                    paired(false)
                );
                continue;
            }
            let mut iops: Vec<f64> = c.iter().map(|r| r.iops).collect();
            let mut lat: Vec<f64> = c.iter().map(|r| r.lat_us).collect();
            println!(
                "| {} | {} | {}/{total} | {:.0} | {:.2} | {} | {} |",
                load.name(),
                v.name(),
                c.len(),
                median(&mut iops),
                median(&mut lat),
                paired(true),
                paired(false)
            );
        }
    }
}
