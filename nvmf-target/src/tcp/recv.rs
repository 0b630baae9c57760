//! HOT PATH: the receive state machine of one connection, independent of sockets.
//!
//! Bytes come in two ways:
//! - into the staging buffer ([`Rx::stage_space`] then [`Rx::staged`]), where headers are
//!   parsed; data bytes that arrived in the same read as their header are copied from there to
//!   their destination (bounded by the staging size);
//! - straight into the data destination ([`Rx::direct_iovs`] then [`Rx::direct_advance`]) once
//!   the staging buffer is drained in the data phase: the socket read then fills the pool
//!   buffers first and the staging buffer with whatever follows (the next headers).
//!
//! [`Rx::step`] turns what is buffered into events: a validated PDU header (the owner then says
//! where its data goes with [`Rx::expect_data`]), the end of a PDU's data (with the data
//! digest verdict), a protocol error, or "need more bytes". Nothing here allocates after
//! construction.

use super::pdu::{
    check_header_digest, digest_append, validate_common, CapsuleCmdHeader, CommonHeader,
    DataHeader, Framing, IcReq, Negotiated, RxLimits, TermError, TermReqHeader, Wire, COMMON_HLEN,
    DIGEST_LEN, PDU_CAPSULE_CMD, PDU_H2C_DATA, PDU_H2C_TERM_REQ, PDU_ICREQ, TERM_MAX_DATA,
};
use keel_bdev::{IoVec, IovCursor, MAX_IOVS};

/// Size of the per-connection staging buffer (headers, and small data that arrives with
/// them). Larger than the biggest header (ICReq 128 B; a header with digest and padding up to
/// a `pdo` of at most 255 B).
pub const STAGING_SIZE: usize = 16 * 1024;

/// A host PDU header, copied out of the staging buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPdu {
    /// Initialize Connection Request.
    IcReq(IcReq),
    /// Command capsule (data, if any, follows: see the framing's `data_len`).
    Capsule(CapsuleCmdHeader),
    /// Host-to-controller data for an R2T.
    H2CData(DataHeader),
    /// The host terminates the connection.
    TermReq(TermReqHeader),
}

/// What [`Rx::step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxEvent {
    /// Nothing complete is buffered: read more from the socket.
    NeedMore,
    /// A validated header. If `framing.data_len > 0` the owner must call [`Rx::expect_data`]
    /// (or [`Rx::defer`]) before the next step.
    Pdu(HostPdu, Framing),
    /// The current PDU's data is in place; `digest_ok` is false on a data digest mismatch.
    DataDone {
        /// Whether the data digest matched (true without data digests).
        digest_ok: bool,
    },
    /// A protocol error: send a C2HTermReq (quoting [`Rx::bad_header`]) and close.
    Fatal(TermError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete header.
    Header,
    /// A header with data was returned; waiting for `expect_data`.
    Pending,
    /// Receiving data.
    Data,
    /// Receiving the 4-byte data digest.
    Digest,
    /// A fatal error happened: nothing more is parsed.
    Dead,
}

/// Where the current PDU's data goes: a cursor over iovecs.
struct Dest {
    segs: [IoVec; MAX_IOVS],
    cnt: usize,
    idx: usize,
    off: usize,
}

/// The receive state machine of one connection.
pub struct Rx {
    stage: Box<[u8]>,
    start: usize,
    end: usize,
    phase: Phase,
    /// Framing of the current PDU.
    cur: Framing,
    dest: Dest,
    /// Data bytes still to receive for the current PDU.
    remaining: usize,
    crc: u32,
    dgst: [u8; DIGEST_LEN],
    dgst_got: usize,
    /// The bytes of the offending header after a fatal error.
    bad: [u8; TERM_MAX_DATA],
    bad_len: usize,
    neg: Option<Negotiated>,
    limits: RxLimits,
}

impl Rx {
    /// A receive machine for a new connection (expects an ICReq first).
    pub fn new(limits: RxLimits) -> Rx {
        Rx {
            stage: vec![0u8; STAGING_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            phase: Phase::Header,
            cur: Framing {
                pdu_type: 0,
                flags: 0,
                hlen: 0,
                hdgst: false,
                data_start: 0,
                data_len: 0,
                ddgst: false,
                plen: 0,
            },
            dest: Dest {
                segs: [IoVec::EMPTY; MAX_IOVS],
                cnt: 0,
                idx: 0,
                off: 0,
            },
            remaining: 0,
            crc: 0,
            dgst: [0; DIGEST_LEN],
            dgst_got: 0,
            bad: [0; TERM_MAX_DATA],
            bad_len: 0,
            neg: None,
            limits,
        }
    }

    /// Record the ICReq/ICResp outcome: later headers are checked against it.
    pub fn set_negotiated(&mut self, neg: Negotiated) {
        self.neg = Some(neg);
    }

    /// The negotiation, once ICReq was handled.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.neg.as_ref()
    }

    /// Change the receive limits (e.g. the in-capsule limit once the queue is known).
    pub fn set_limits(&mut self, limits: RxLimits) {
        self.limits = limits;
    }

    /// The offending header bytes after [`RxEvent::Fatal`] (at most 128).
    pub fn bad_header(&self) -> &[u8] {
        &self.bad[..self.bad_len]
    }

    /// Free staging space to read into (compacting first when little is left). Empty while
    /// the machine waits for [`Rx::expect_data`] or after a fatal error.
    pub fn stage_space(&mut self) -> &mut [u8] {
        if matches!(self.phase, Phase::Pending | Phase::Dead) {
            return &mut [];
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.stage.len() - self.end < 512 {
            self.stage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.stage[self.end..]
    }

    /// `n` bytes were written into the slice [`Rx::stage_space`] returned.
    pub fn staged(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.stage.len());
        self.end = (self.end + n).min(self.stage.len());
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether the next socket read should go straight into the data destination.
    pub fn wants_direct(&self) -> bool {
        self.phase == Phase::Data && self.start == self.end && self.remaining > 0
    }

    /// Fill `out` with the iovecs for a direct read: the rest of the current PDU's data, then
    /// the whole (empty) staging buffer. Returns how many were filled (0 unless
    /// [`Rx::wants_direct`]).
    pub fn direct_iovs(&mut self, out: &mut [libc::iovec]) -> usize {
        if !self.wants_direct() || out.len() < 2 {
            return 0;
        }
        self.start = 0;
        self.end = 0;
        let mut n = 0;
        let mut left = self.remaining;
        let mut idx = self.dest.idx;
        let mut off = self.dest.off;
        while left > 0 && idx < self.dest.cnt && n + 1 < out.len() {
            let seg = self.dest.segs[idx];
            let len = (seg.len() - off).min(left);
            // SAFETY: `off < seg.len` (the cursor never rests at a segment's end), so the
            // pointer stays inside the segment `expect_data`'s caller vouched for.
            let base = unsafe { seg.base().add(off) };
            out[n] = libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            };
            n += 1;
            left -= len;
            idx += 1;
            off = 0;
        }
        if left > 0 {
            // Not every data segment fit: read only into the data this time (the staging
            // buffer must come after all of the PDU's data).
            return n;
        }
        out[n] = libc::iovec {
            iov_base: self.stage.as_mut_ptr().cast(),
            iov_len: self.stage.len(),
        };
        n + 1
    }

    /// A direct read filled `n` bytes of the iovecs [`Rx::direct_iovs`] gave: the data part
    /// first, the rest into the staging buffer.
    pub fn direct_advance(&mut self, n: usize) {
        let data = n.min(self.remaining);
        self.consume_data_in_place(data);
        self.end = n - data;
        if self.remaining == 0 {
            self.phase = if self.cur.ddgst {
                Phase::Digest
            } else {
                Phase::Data
            };
        }
    }

    /// Advance the data cursor over `n` bytes that are already in the destination, updating
    /// the data digest.
    fn consume_data_in_place(&mut self, mut n: usize) {
        self.remaining -= n;
        while n > 0 {
            let seg = self.dest.segs[self.dest.idx];
            let len = (seg.len() - self.dest.off).min(n);
            if self.cur.ddgst {
                // SAFETY: the range is inside the segment and was just written by the read.
                let bytes =
                    unsafe { std::slice::from_raw_parts(seg.base().add(self.dest.off), len) };
                self.crc = digest_append(self.crc, bytes);
            }
            self.advance_cursor(len);
            n -= len;
        }
    }

    fn advance_cursor(&mut self, len: usize) {
        self.dest.off += len;
        if self.dest.off == self.dest.segs[self.dest.idx].len() {
            self.dest.idx += 1;
            self.dest.off = 0;
        }
    }

    /// Say where the current PDU's data goes: `iovs` (skipping their first `skip` bytes) must
    /// hold at least the PDU's `data_len` bytes.
    ///
    /// # Safety
    /// Every iovec must be valid for writes of its length until [`RxEvent::DataDone`] or a
    /// fatal error is returned, or the machine is dropped, and nobody else may access that
    /// memory meanwhile.
    pub unsafe fn expect_data(&mut self, iovs: &[IoVec], skip: usize) -> Result<(), TermError> {
        debug_assert_eq!(self.phase, Phase::Pending);
        // Views of the PDU's data range inside the caller's iovecs (nothing copied; they are
        // as valid as the caller's iovecs, per the contract).
        let len = self.cur.data_len as usize;
        let (cnt, room) = IovCursor::at(iovs, skip).split_into(len, &mut self.dest.segs);
        if room < len {
            self.phase = Phase::Dead;
            return Err(TermError::status(
                super::pdu::FES_DATA_OUT_OF_RANGE,
                "data beyond the command's buffers",
            ));
        }
        self.dest.cnt = cnt;
        self.dest.idx = 0;
        self.dest.off = 0;
        self.remaining = self.cur.data_len as usize;
        self.crc = 0;
        self.dgst_got = 0;
        self.phase = Phase::Data;
        Ok(())
    }

    /// Put the header just returned back (the owner cannot take it yet, e.g. no free request
    /// slot): the next step returns it again.
    pub fn defer(&mut self) {
        if matches!(self.phase, Phase::Pending | Phase::Header) {
            self.start -= self.cur.data_start;
            self.phase = Phase::Header;
        }
    }

    /// Mark the connection dead (no more parsing).
    pub fn kill(&mut self) {
        self.phase = Phase::Dead;
    }

    fn fatal(&mut self, err: TermError, hdr_len: usize) -> RxEvent {
        let n = hdr_len.min(self.end - self.start).min(TERM_MAX_DATA);
        self.bad[..n].copy_from_slice(&self.stage[self.start..self.start + n]);
        self.bad_len = n;
        self.phase = Phase::Dead;
        RxEvent::Fatal(err)
    }

    /// Parse what is buffered into the next event.
    pub fn step(&mut self) -> RxEvent {
        loop {
            match self.phase {
                Phase::Dead | Phase::Pending => return RxEvent::NeedMore,
                Phase::Header => return self.step_header(),
                Phase::Data => {
                    if self.remaining == 0 {
                        // Data complete without digest (direct read finished it).
                        self.phase = Phase::Header;
                        return RxEvent::DataDone { digest_ok: true };
                    }
                    let avail = self.end - self.start;
                    if avail == 0 {
                        return RxEvent::NeedMore;
                    }
                    let n = avail.min(self.remaining);
                    self.copy_staged_data(n);
                    if self.remaining == 0 && self.cur.ddgst {
                        self.phase = Phase::Digest;
                    }
                }
                Phase::Digest => {
                    let avail = self.end - self.start;
                    let n = avail.min(DIGEST_LEN - self.dgst_got);
                    self.dgst[self.dgst_got..self.dgst_got + n]
                        .copy_from_slice(&self.stage[self.start..self.start + n]);
                    self.dgst_got += n;
                    self.start += n;
                    if self.dgst_got < DIGEST_LEN {
                        return RxEvent::NeedMore;
                    }
                    self.phase = Phase::Header;
                    return RxEvent::DataDone {
                        digest_ok: u32::from_le_bytes(self.dgst) == self.crc,
                    };
                }
            }
        }
    }

    /// Copy `n` staged bytes into the destination (the data that arrived with its header).
    fn copy_staged_data(&mut self, mut n: usize) {
        self.remaining -= n;
        while n > 0 {
            let seg = self.dest.segs[self.dest.idx];
            let len = (seg.len() - self.dest.off).min(n);
            let src = &self.stage[self.start..self.start + len];
            if self.cur.ddgst {
                self.crc = digest_append(self.crc, src);
            }
            // SAFETY: the destination range is inside a segment `expect_data`'s caller vouched
            // for; it cannot overlap the staging buffer, which this machine owns.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), seg.base().add(self.dest.off), len)
            };
            self.start += len;
            self.advance_cursor(len);
            n -= len;
        }
    }

    fn step_header(&mut self) -> RxEvent {
        let avail = self.end - self.start;
        if avail < COMMON_HLEN {
            return RxEvent::NeedMore;
        }
        let buf = &self.stage[self.start..self.end];
        let Some(ch) = CommonHeader::read_from(buf) else {
            return RxEvent::NeedMore;
        };
        let framing = match validate_common(&ch, self.neg.as_ref(), &self.limits) {
            Ok(f) => f,
            Err(e) => return self.fatal(e, (ch.hlen as usize).max(COMMON_HLEN)),
        };
        let need = framing.header_bytes();
        if avail < need {
            return RxEvent::NeedMore;
        }
        let hdr = &buf[..need];
        if framing.hdgst {
            if let Err(e) = check_header_digest(hdr, framing.hlen) {
                return self.fatal(e, framing.hlen);
            }
        }
        let pdu = match framing.pdu_type {
            PDU_ICREQ => IcReq::read_from(hdr).map(HostPdu::IcReq),
            PDU_CAPSULE_CMD => CapsuleCmdHeader::read_from(hdr).map(HostPdu::Capsule),
            PDU_H2C_DATA => DataHeader::read_from(hdr).map(HostPdu::H2CData),
            PDU_H2C_TERM_REQ => TermReqHeader::read_from(hdr).map(HostPdu::TermReq),
            _ => None,
        };
        let Some(pdu) = pdu else {
            // validate_common only lets the four types above through, with their hlen.
            return self.fatal(TermError::field(0, "unexpected PDU type"), framing.hlen);
        };
        self.start += need;
        self.cur = framing;
        if let HostPdu::TermReq(_) = pdu {
            self.phase = Phase::Dead;
        } else if framing.data_len > 0 {
            self.phase = Phase::Pending;
        }
        RxEvent::Pdu(pdu, framing)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pdu::*;
    use super::*;

    const LIM: RxLimits = RxLimits {
        max_in_capsule: 8192,
        maxh2cdata: 65536,
    };

    fn icreq(dgst: u8) -> Vec<u8> {
        let r = IcReq {
            common: CommonHeader::new(PDU_ICREQ, IC_HLEN),
            pfv: 0,
            hpda: 0,
            dgst,
            maxr2t: 0,
            rsvd: [0; 112],
        };
        r.as_bytes().to_vec()
    }

    /// A capsule with `data` in-capsule, digests as given.
    fn capsule(cid: u16, data: &[u8], hd: bool, dd: bool) -> Vec<u8> {
        let mut h = CapsuleCmdHeader {
            common: CommonHeader::new(PDU_CAPSULE_CMD, CAPSULE_CMD_HLEN),
            ..Default::default()
        };
        h.sqe.opc = 1;
        h.sqe.cid = cid;
        let hlen = CAPSULE_CMD_HLEN + if hd { 4 } else { 0 };
        if hd {
            h.common.flags |= FLAG_HDGSTF;
        }
        let mut plen = hlen;
        if !data.is_empty() {
            h.common.pdo = hlen as u8;
            plen += data.len();
            if dd {
                h.common.flags |= FLAG_DDGSTF;
                plen += 4;
            }
        }
        h.common.plen = plen as u32;
        let mut v = h.as_bytes().to_vec();
        if hd {
            let d = digest(&v);
            v.extend_from_slice(&d.to_le_bytes());
        }
        v.extend_from_slice(data);
        if !data.is_empty() && dd {
            v.extend_from_slice(&digest(data).to_le_bytes());
        }
        v
    }

    /// (cid, data, digest ok) of each capsule received.
    type Got = Vec<(u16, Vec<u8>, bool)>;

    /// Feed `stream` to a machine in chunks cut at `cuts`, using direct reads whenever the
    /// machine wants them; collect (cid, data, digest_ok) of every capsule.
    fn run(stream: &[u8], chunk: usize, neg: Negotiated) -> (Got, Option<TermError>) {
        let mut rx = Rx::new(LIM);
        rx.set_negotiated(neg);
        let mut pos = 0;
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut cur_cid = 0;
        loop {
            match rx.step() {
                RxEvent::Pdu(HostPdu::Capsule(c), f) => {
                    cur_cid = c.sqe.cid;
                    if f.data_len > 0 {
                        buf = vec![0; f.data_len as usize];
                        // Split the buffer in two segments to exercise the cursor.
                        let half = buf.len() / 2;
                        let p = buf.as_mut_ptr();
                        // SAFETY: both halves are inside `buf`, alive until DataDone.
                        let iovs = unsafe {
                            [
                                IoVec::from_raw_parts(p, half),
                                IoVec::from_raw_parts(p.add(half), buf.len() - half),
                            ]
                        };
                        // SAFETY: `buf` outlives the data phase and is not touched meanwhile.
                        unsafe { rx.expect_data(&iovs, 0) }.unwrap();
                    } else {
                        out.push((cur_cid, Vec::new(), true));
                    }
                }
                RxEvent::Pdu(_, _) => panic!("unexpected pdu"),
                RxEvent::DataDone { digest_ok } => {
                    out.push((cur_cid, std::mem::take(&mut buf), digest_ok));
                }
                RxEvent::Fatal(e) => return (out, Some(e)),
                RxEvent::NeedMore => {
                    if pos == stream.len() {
                        return (out, None);
                    }
                    let take = chunk.min(stream.len() - pos);
                    if rx.wants_direct() {
                        let mut iov = [libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        }; 8];
                        let n = rx.direct_iovs(&mut iov);
                        // Emulate readv.
                        let mut left = take;
                        for v in &iov[..n] {
                            let k = v.iov_len.min(left);
                            // SAFETY: the iovecs point into `buf` or the staging buffer.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    stream[pos + take - left..].as_ptr(),
                                    v.iov_base.cast::<u8>(),
                                    k,
                                )
                            };
                            left -= k;
                        }
                        rx.direct_advance(take - left);
                        pos += take - left;
                    } else {
                        let space = rx.stage_space();
                        let k = take.min(space.len());
                        space[..k].copy_from_slice(&stream[pos..pos + k]);
                        rx.staged(k);
                        pos += k;
                    }
                }
            }
        }
    }

    fn neg(hd: bool, dd: bool) -> Negotiated {
        Negotiated {
            hdgst: hd,
            ddgst: dd,
            cpda: 0,
            hpda: 0,
            maxh2cdata: 65536,
            maxr2t: 0,
        }
    }

    #[test]
    fn capsules_survive_any_split_point() {
        for (hd, dd) in [(false, false), (true, false), (false, true), (true, true)] {
            let d1: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
            let d2: Vec<u8> = (0..100u32).map(|i| (i * 3) as u8).collect();
            let mut s = capsule(1, &[], hd, dd);
            s.extend(capsule(2, &d1, hd, dd));
            s.extend(capsule(3, &d2, hd, dd));
            s.extend(capsule(4, &[], hd, dd));
            for chunk in [1, 2, 3, 7, 8, 71, 72, 73, 100, 1000, 4096, 5000, s.len()] {
                let (got, err) = run(&s, chunk, neg(hd, dd));
                assert_eq!(err, None, "chunk {chunk} hd {hd} dd {dd}");
                let want = vec![
                    (1, vec![], true),
                    (2, d1.clone(), true),
                    (3, d2.clone(), true),
                    (4, vec![], true),
                ];
                assert_eq!(got, want, "chunk {chunk} hd {hd} dd {dd}");
            }
        }
    }

    #[test]
    fn data_digest_mismatch_is_reported() {
        let d: Vec<u8> = vec![5; 512];
        let mut s = capsule(9, &d, false, true);
        let n = s.len();
        s[n - 1] ^= 0xff;
        let (got, err) = run(&s, 13, neg(false, true));
        assert_eq!(err, None);
        assert_eq!(got, vec![(9, d, false)]);
    }

    #[test]
    fn header_digest_mismatch_is_fatal_and_quoted() {
        let mut s = capsule(9, &[], true, false);
        s[10] ^= 1;
        let mut rx = Rx::new(LIM);
        rx.set_negotiated(neg(true, false));
        let space = rx.stage_space();
        space[..s.len()].copy_from_slice(&s);
        rx.staged(s.len());
        match rx.step() {
            RxEvent::Fatal(e) => assert_eq!(e.fes, FES_HEADER_DIGEST),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.bad_header(), &s[..72]);
        // Dead: nothing more is parsed or read.
        assert_eq!(rx.step(), RxEvent::NeedMore);
        assert!(rx.stage_space().is_empty());
    }

    #[test]
    fn icreq_first_then_defer_returns_the_same_header() {
        let mut rx = Rx::new(LIM);
        let s = icreq(0);
        rx.stage_space()[..128].copy_from_slice(&s);
        rx.staged(128);
        let ev = rx.step();
        assert!(matches!(ev, RxEvent::Pdu(HostPdu::IcReq(_), _)));
        rx.defer();
        assert_eq!(rx.step(), ev);
        assert_eq!(rx.step(), RxEvent::NeedMore);
    }

    #[test]
    fn garbage_first_is_a_sequence_error() {
        let mut rx = Rx::new(LIM);
        rx.stage_space()[..8].copy_from_slice(&[0x04, 0, 72, 0, 72, 0, 0, 0]);
        rx.staged(8);
        match rx.step() {
            RxEvent::Fatal(e) => assert_eq!(e.fes, FES_PDU_SEQUENCE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_longer_than_buffers_is_out_of_range() {
        let mut rx = Rx::new(LIM);
        rx.set_negotiated(neg(false, false));
        let s = capsule(1, &[1; 64], false, false);
        rx.stage_space()[..s.len()].copy_from_slice(&s);
        rx.staged(s.len());
        assert!(matches!(rx.step(), RxEvent::Pdu(..)));
        let mut small = [0u8; 32];
        // SAFETY: `small` outlives the call; the error path writes nothing.
        let iov = unsafe { [IoVec::from_raw_parts(small.as_mut_ptr(), 32)] };
        // SAFETY: as above.
        let e = unsafe { rx.expect_data(&iov, 0) }.unwrap_err();
        assert_eq!(e.fes, FES_DATA_OUT_OF_RANGE);
    }
}
