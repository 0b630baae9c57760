#!/usr/bin/env python3
"""Hostile NVMe/TCP client: attacks a target on loopback with malformed traffic, bounded in
count and time, and checks that each attack is rejected (C2HTermReq, a closed connection, or an
NVMe error status where the PDU itself is well formed) and that the target keeps serving.

Scenarios: PDUs before ICReq, garbage, bad ICReq fields, a second ICReq, wrong hlen / plen / pdo,
a huge plen, H2CData without R2T, with a wrong tag, out-of-range offset or too much data, bad
Connect data length, unknown subsystem, out-of-range LBA, bad namespace, truncated headers and
data, connections closed mid-transfer, byte-by-byte ICReq, and floods of idle, ICReq and
Connect connections. After every scenario the target must still answer an ICReq; at the end a
full Connect must still succeed.

  hostile.py [--host 127.0.0.1] [--port 4420] [--nqn NQN] [--duration SECS] [--seed N]
  hostile.py --selftest      (against built-in mock targets: a correct one must pass, a
                              careless one must fail; proves the checks can fail)

Prints one line per check and 'hostile: N passed, M failed'; exits 1 if anything failed.
"""
import argparse
import ipaddress
import os
import random
import socket
import struct
import sys
import threading
import time

# PDU types (NVMe/TCP 1.0)
ICREQ, ICRESP, H2C_TERM, C2H_TERM, CAPSULE_CMD, CAPSULE_RESP, H2C_DATA, C2H_DATA, R2T = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09)
PDU_NAMES = {0: "ICReq", 1: "ICResp", 2: "H2CTermReq", 3: "C2HTermReq", 4: "CapsuleCmd",
             5: "CapsuleResp", 6: "H2CData", 7: "C2HData", 9: "R2T"}
HOSTNQN = "nqn.2016-06.io.keel:kinit-hostile"
HOSTID = bytes.fromhex("6b656c00000040008000000000000bad")
WRITE_SLBA = 200 * 2048  # 200 MiB in 512 B blocks: away from the ranges the guest's fio verifies
RECV_TIMEOUT = 5.0


def ch(ptype, flags, hlen, pdo, plen):
    return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)


def icreq(pfv=0, hpda=0, dgst=0, maxr2t=0, hlen=128, plen=128):
    body = struct.pack("<HBBI", pfv, hpda, dgst, maxr2t)
    return (ch(ICREQ, 0, hlen, 0, plen) + body).ljust(128, b"\0")


def sqe(opcode, cid, nsid=0, sgl=b"", cdw10=b"", fctype=None):
    """A 64-byte SQE with an SGL (PSDT=01b) descriptor; fabrics commands put fctype at byte 4."""
    b = bytearray(64)
    struct.pack_into("<BBH", b, 0, opcode, 0x40, cid)
    if fctype is None:
        struct.pack_into("<I", b, 4, nsid)
    else:
        b[4] = fctype
    b[24:24 + len(sgl)] = sgl
    b[40:40 + len(cdw10)] = cdw10
    return bytes(b)


def sgl_incapsule(length):
    return struct.pack("<QI3xB", 0, length, 0x01)  # data block, offset subtype


def sgl_transport(length):
    return struct.pack("<QI3xB", 0, length, 0x5A)  # transport data block, transport specific


def capsule(s, data=b"", hlen=72, plen=None, pdo=None):
    plen = hlen + len(data) if plen is None else plen
    pdo = (hlen if data else 0) if pdo is None else pdo
    return ch(CAPSULE_CMD, 0, hlen, pdo, plen) + s + data


def connect_cmd(cid, qid, subnqn, cntlid=0xFFFF, kato_ms=30000, data_len=1024, sgl_len=1024):
    cdw = struct.pack("<HHHBxI", 0, qid, 31, 0, kato_ms)  # recfmt, qid, sqsize 32, cattr, kato
    data = bytearray(1024)
    data[0:16] = HOSTID
    struct.pack_into("<H", data, 16, cntlid)
    n = subnqn.encode()[:255]
    h = HOSTNQN.encode()
    data[256:256 + len(n)] = n
    data[512:512 + len(h)] = h
    return capsule(sqe(0x7F, cid, sgl=sgl_incapsule(sgl_len), cdw10=cdw, fctype=0x01), bytes(data[:data_len]))


def prop_set(cid, off, val):
    return capsule(sqe(0x7F, cid, cdw10=struct.pack("<B3xIQ", 0, off, val), fctype=0x00))


def prop_get(cid, off, size8=False):
    return capsule(sqe(0x7F, cid, cdw10=struct.pack("<B3xI", 1 if size8 else 0, off), fctype=0x04))


def rw_cmd(opcode, cid, nsid, slba, nblocks):
    cdw = struct.pack("<QH", slba, nblocks - 1)
    return capsule(sqe(opcode, cid, nsid=nsid, sgl=sgl_transport(nblocks * 512), cdw10=cdw))


def h2c_data(cccid, ttag, datao, data, last=True, datal=None):
    datal = len(data) if datal is None else datal
    hdr = ch(H2C_DATA, 0x04 if last else 0, 24, 24, 24 + len(data))
    return hdr + struct.pack("<HHII4x", cccid, ttag, datao, datal) + data


class Pdu:
    def __init__(self, ptype, hdr, data):
        self.type, self.hdr, self.data = ptype, hdr, data

    def status(self):  # CapsuleResp: (sct, sc, dw0)
        st = struct.unpack_from("<H", self.hdr, 22)[0] >> 1
        return (st >> 8) & 7, st & 0xFF, struct.unpack_from("<I", self.hdr, 8)[0]

    def __repr__(self):
        name = PDU_NAMES.get(self.type, "type %#x" % self.type)
        if self.type == C2H_TERM and len(self.hdr) >= 14:
            fes, fei = struct.unpack_from("<HI", self.hdr, 8)
            return "C2HTermReq(fes=%#x, fei=%#x)" % (fes, fei)
        if self.type == CAPSULE_RESP and len(self.hdr) >= 24:
            sct, sc, _ = self.status()
            return "CapsuleResp(sct=%d, sc=%#x)" % (sct, sc)
        return name


class Closed(Exception):
    pass


class Conn:
    def __init__(self, addr, timeout=None):
        self.s = socket.create_connection(addr, timeout=timeout or RECV_TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.maxh2c = 8192

    def send(self, b):
        try:
            self.s.sendall(b)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed(str(e))

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError) as e:
                raise Closed(str(e))
            if not d:
                raise Closed("closed by the target")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout=None):
        """The next PDU; raises Closed, or socket.timeout."""
        timeout = timeout or RECV_TIMEOUT
        deadline = time.monotonic() + timeout
        h = self._read(8, deadline)
        ptype, _, hlen, _, plen = struct.unpack("<BBBBI", h)
        if hlen < 8 or plen < hlen or plen > 16 << 20:
            return Pdu(ptype, h, b"")  # the target itself sent a bad header; report what we got
        hdr = h + self._read(hlen - 8, deadline)
        return Pdu(ptype, hdr, self._read(plen - hlen, deadline))

    def handshake(self):
        self.send(icreq())
        p = self.recv()
        if p.type != ICRESP or len(p.hdr) != 128:
            raise RuntimeError("expected ICResp, got %r" % p)
        pfv, cpda, dgst, maxh2c = struct.unpack_from("<HBBI", p.hdr, 8)
        if pfv != 0 or dgst != 0 or maxh2c < 4096:
            raise RuntimeError("bad ICResp: pfv %d dgst %d maxh2cdata %d" % (pfv, dgst, maxh2c))
        self.maxh2c = maxh2c
        return p

    def command(self, pdu, cid):
        """Send a command, return its CapsuleResp (skipping nothing else: any other PDU is an error)."""
        self.send(pdu)
        p = self.recv()
        if p.type != CAPSULE_RESP or struct.unpack_from("<H", p.hdr, 20)[0] != cid:
            raise RuntimeError("expected CapsuleResp for cid %d, got %r" % (cid, p))
        return p

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def admin_session(addr, nqn):
    """ICReq + admin Connect + CC.EN=1 + wait CSTS.RDY; returns (conn, cntlid)."""
    c = Conn(addr)
    c.handshake()
    sct, sc, dw0 = c.command(connect_cmd(1, 0, nqn), 1).status()
    if (sct, sc) != (0, 0):
        raise RuntimeError("admin Connect failed: sct %d sc %#x" % (sct, sc))
    cntlid = dw0 & 0xFFFF
    if c.command(prop_set(2, 0x14, 0x00460001), 2).status()[:2] != (0, 0):
        raise RuntimeError("Property Set CC.EN=1 failed")
    for i in range(50):
        st = c.command(prop_get(3 + i, 0x1C), 3 + i).status()
        if st[:2] == (0, 0) and st[2] & 1:
            return c, cntlid
        time.sleep(0.1)
    raise RuntimeError("CSTS.RDY never set")


def io_session(addr, nqn, cntlid):
    c = Conn(addr)
    c.handshake()
    sct, sc, _ = c.command(connect_cmd(1, 1, nqn, cntlid=cntlid, kato_ms=0), 1).status()
    if (sct, sc) != (0, 0):
        raise RuntimeError("I/O queue Connect failed: sct %d sc %#x" % (sct, sc))
    return c


# ------------------------------------------------------------------ verdicts
def rejected(c, allow_error_status=False, timeout=None):
    """After a protocol violation: the target must send C2HTermReq or close the connection
    (or, if allowed, answer with an NVMe error status). Returns (passed, what happened)."""
    timeout = timeout or RECV_TIMEOUT
    try:
        while True:
            p = c.recv(timeout)
            if p.type == C2H_TERM:
                try:
                    c.recv(2.0)
                    return True, "%r (connection left open)" % p
                except Closed:
                    return True, "%r, then closed" % p
                except socket.timeout:
                    return True, "%r (connection left open)" % p
            if p.type == CAPSULE_RESP and allow_error_status:
                sct, sc, _ = p.status()
                if (sct, sc) != (0, 0):
                    return True, "%r" % p
                return False, "the command succeeded: %r" % p
            if p.type in (R2T, ICRESP, CAPSULE_RESP, C2H_DATA):
                return False, "the target went on as if nothing was wrong: %r" % p
            return False, "unexpected %r" % p
    except Closed as e:
        return True, "closed (%s)" % e
    except socket.timeout:
        return False, "no C2HTermReq and still open after %.0f s" % timeout


def nvme_error(c, cid, want=None):
    """A well-formed command with bad content must get an NVMe error status, not a transport error."""
    try:
        p = c.recv()
    except Closed:
        return False, "the connection was closed instead of an NVMe error status"
    except socket.timeout:
        return False, "no answer in %.0f s" % RECV_TIMEOUT
    if p.type != CAPSULE_RESP:
        return False, "expected a CapsuleResp, got %r" % p
    sct, sc, _ = p.status()
    if (sct, sc) == (0, 0):
        return False, "the command succeeded"
    if want and (sct, sc) not in want:
        return False, "%r, want one of %s" % (p, ["sct %d sc %#x" % w for w in want])
    return True, "%r" % p


# ------------------------------------------------------------------ scenarios
class Attack:
    def __init__(self, addr, nqn, rng):
        self.addr, self.nqn, self.rng = addr, nqn, rng

    def garbage(self, n):
        b = bytearray(self.rng.getrandbits(8) for _ in range(n))
        b[0] = self.rng.choice([0x08] + list(range(0x0A, 0x100)))  # no valid PDU type
        return bytes(b)

    def fresh(self, handshake=False):
        c = Conn(self.addr)
        if handshake:
            c.handshake()
        return c

    # each returns (passed or None for "no verdict: liveness decides", detail)
    def capsule_before_icreq(self):
        c = self.fresh()
        c.send(prop_get(1, 0x08))
        return rejected(c)

    def garbage_first(self):
        c = self.fresh()
        c.send(self.garbage(512))
        return rejected(c)

    def icreq_bad_hlen(self):
        c = self.fresh()
        c.send(icreq(hlen=64) + bytes(256))
        return rejected(c)

    def icreq_plen_too_big(self):
        c = self.fresh()
        c.send(icreq(plen=1000) + bytes(1024))
        return rejected(c)

    def icreq_plen_lt_hlen(self):
        c = self.fresh()
        c.send(icreq(plen=16) + bytes(256))
        return rejected(c)

    def icreq_bad_pfv(self):
        c = self.fresh()
        c.send(icreq(pfv=1))
        return rejected(c)

    def icreq_bad_hpda(self):
        c = self.fresh()
        c.send(icreq(hpda=32))
        return rejected(c)

    def second_icreq(self):
        c = self.fresh(True)
        c.send(icreq())
        return rejected(c)

    def garbage_after_icreq(self):
        c = self.fresh(True)
        c.send(self.garbage(4096))
        return rejected(c)

    def capsule_bad_hlen(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x06, 1), hlen=24, plen=72) + bytes(256))
        return rejected(c)

    def capsule_plen_lt_hlen(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x06, 1), plen=40) + bytes(256))
        return rejected(c)

    def capsule_plen_huge(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x01, 1, nsid=1, sgl=sgl_incapsule(4096)), plen=0x7FFFFFF0, pdo=72))
        try:
            c.send(bytes(65536))
        except Closed:
            return True, "closed while we sent data"
        return rejected(c)

    def capsule_bad_pdo(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x01, 1, nsid=1, sgl=sgl_incapsule(512)), bytes(512), pdo=12))
        return rejected(c, allow_error_status=True)

    def h2c_without_r2t(self):
        c = self.fresh(True)
        c.send(h2c_data(1, 0x1234, 0, bytes(512)))
        return rejected(c)

    def connect_short_data(self):
        c = self.fresh(True)
        c.send(connect_cmd(1, 0, self.nqn, data_len=100))  # SGL says 1024, capsule carries 100
        return rejected(c, allow_error_status=True)

    def connect_unknown_subsystem(self):
        c = self.fresh(True)
        c.send(connect_cmd(1, 0, "nqn.2016-06.io.keel:no-such-subsystem"))
        return nvme_error(c, 1)

    def io_queue_bad_cntlid(self):
        c = self.fresh(True)
        c.send(connect_cmd(1, 1, self.nqn, cntlid=0xFFEE, kato_ms=0))
        return nvme_error(c, 1)

    def _write_r2t(self, nblocks=16):
        """Admin + I/O session, a Write without in-capsule data; returns (admin, io, r2t fields)."""
        a, cntlid = admin_session(self.addr, self.nqn)
        io = io_session(self.addr, self.nqn, cntlid)
        io.send(rw_cmd(0x01, 7, 1, WRITE_SLBA, nblocks))
        p = io.recv()
        if p.type != R2T:
            raise RuntimeError("expected R2T for an 8 KiB write, got %r" % p)
        cccid, ttag, r2to, r2tl = struct.unpack_from("<HHII", p.hdr, 8)
        return a, io, (cccid, ttag, r2to, r2tl)

    def h2c_out_of_range(self):
        a, io, (cccid, ttag, r2to, r2tl) = self._write_r2t()
        io.send(h2c_data(cccid, ttag, r2to + r2tl + 512, bytes(512)))
        r = rejected(io)
        a.close()
        return r

    def h2c_too_much_data(self):
        a, io, (cccid, ttag, r2to, r2tl) = self._write_r2t()
        io.send(h2c_data(cccid, ttag, r2to, bytes(r2tl + 4096)))
        r = rejected(io)
        a.close()
        return r

    def h2c_wrong_ttag(self):
        a, io, (cccid, ttag, r2to, r2tl) = self._write_r2t()
        io.send(h2c_data(cccid, ttag ^ 0x5A5A, r2to, bytes(r2tl)))
        r = rejected(io)
        a.close()
        return r

    def h2c_datal_mismatch(self):
        a, io, (cccid, ttag, r2to, r2tl) = self._write_r2t()
        io.send(h2c_data(cccid, ttag, r2to, bytes(512), datal=r2tl))  # DATAL != data in the PDU
        r = rejected(io)
        a.close()
        return r

    def read_lba_out_of_range(self):
        a, cntlid = admin_session(self.addr, self.nqn)
        io = io_session(self.addr, self.nqn, cntlid)
        io.send(rw_cmd(0x02, 9, 1, 1 << 40, 8))
        r = nvme_error(io, 9, want=[(0, 0x80)])  # LBA Out of Range
        io.close()
        a.close()
        return r

    def read_bad_nsid(self):
        a, cntlid = admin_session(self.addr, self.nqn)
        io = io_session(self.addr, self.nqn, cntlid)
        io.send(rw_cmd(0x02, 9, 0xDEAD, 0, 8))
        r = nvme_error(io, 9, want=[(0, 0x0B)])  # Invalid Namespace or Format
        io.close()
        a.close()
        return r

    def truncated_header(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x06, 1))[:30])
        time.sleep(0.2)
        c.close()
        return None, "sent 30 of 72 header bytes, closed"

    def truncated_data(self):
        c = self.fresh(True)
        c.send(capsule(sqe(0x01, 1, nsid=1, sgl=sgl_incapsule(4096)), bytes(4096))[:72 + 1000])
        time.sleep(0.2)
        c.close()
        return None, "sent 1000 of 4096 in-capsule bytes, closed"

    def close_mid_transfer(self):
        a, io, (cccid, ttag, r2to, r2tl) = self._write_r2t()
        io.send(h2c_data(cccid, ttag, r2to, bytes(r2tl), last=True)[:24 + r2tl // 2])
        io.close()
        a.close()
        return None, "R2T answered with half its data, both queues closed"

    def slow_icreq(self):
        c = self.fresh()
        for b in icreq():
            c.send(bytes([b]))
            time.sleep(0.003)
        try:
            p = c.recv()
        except (Closed, socket.timeout) as e:
            return False, "an ICReq sent byte by byte got no ICResp (%s)" % e.__class__.__name__
        return p.type == ICRESP, "%r" % p

    def flood_idle(self, n=200):
        conns = [Conn(self.addr) for _ in range(n)]
        time.sleep(0.5)
        for c in conns:
            c.close()
        return None, "%d idle connections opened and closed" % n

    def flood_icreq(self, n=64):
        conns = [Conn(self.addr) for _ in range(n)]
        for c in conns:
            c.send(icreq())
        got = 0
        for c in conns:
            try:
                got += c.recv(10).type == ICRESP
            except (Closed, socket.timeout):
                pass
            c.close()
        return got == n, "%d/%d concurrent connections got an ICResp" % (got, n)

    def flood_connect(self, n=16):
        got = 0
        conns = []
        for i in range(n):
            c = Conn(self.addr)
            conns.append(c)
            try:
                c.handshake()
                got += c.command(connect_cmd(1, 0, self.nqn), 1).status()[:2] == (0, 0)
            except (Closed, socket.timeout, RuntimeError):
                pass
        for c in conns:
            c.close()  # abrupt: no Disconnect, the target must release the controllers
        return got == n, "%d/%d admin Connects succeeded, then all dropped" % (got, n)


SCENARIOS = [
    "capsule_before_icreq", "garbage_first", "icreq_bad_hlen", "icreq_plen_too_big",
    "icreq_plen_lt_hlen", "icreq_bad_pfv", "icreq_bad_hpda", "second_icreq", "garbage_after_icreq",
    "capsule_bad_hlen", "capsule_plen_lt_hlen", "capsule_plen_huge", "capsule_bad_pdo",
    "h2c_without_r2t", "connect_short_data", "connect_unknown_subsystem", "io_queue_bad_cntlid",
    "h2c_out_of_range", "h2c_too_much_data", "h2c_wrong_ttag", "h2c_datal_mismatch",
    "read_lba_out_of_range", "read_bad_nsid", "truncated_header", "truncated_data",
    "close_mid_transfer", "slow_icreq", "flood_idle", "flood_icreq", "flood_connect",
]


def alive(addr):
    try:
        c = Conn(addr, timeout=3)
        c.handshake()
        c.close()
        return True, ""
    except Exception as e:  # noqa: BLE001 - any failure means "not serving"
        return False, "%s: %s" % (e.__class__.__name__, e)


def attack(addr, nqn, duration, seed, max_rounds=20, out=print):
    """Run the scenarios in rounds until `duration` s have passed (at least one round).
    Returns (passed, failed)."""
    rng = random.Random(seed)
    a = Attack(addr, nqn, rng)
    failures = {}
    ok, why = alive(addr)
    if not ok:
        out("FAIL target on %s:%d does not answer a valid ICReq: %s" % (addr + (why,)))
        return 0, 1
    try:
        s, cntlid = admin_session(addr, nqn)
        s.close()
        out("ok   sanity: valid ICReq + Connect + CC.EN on %s (cntlid %d)" % (nqn, cntlid))
    except Exception as e:  # noqa: BLE001
        out("FAIL sanity: a valid Connect to %s fails: %s" % (nqn, e))
        return 0, 1
    t0 = time.monotonic()
    rounds = 0
    while rounds < max_rounds and (rounds == 0 or time.monotonic() - t0 < duration):
        rounds += 1
        for name in SCENARIOS:
            try:
                verdict, detail = getattr(a, name)()
            except (Closed, socket.timeout, ConnectionError, RuntimeError, OSError) as e:
                verdict, detail = False, "set-up failed: %s: %s" % (e.__class__.__name__, e)
            if verdict is False and name not in failures:
                failures[name] = detail
            if rounds == 1:
                out("%s %-26s %s" % ("FAIL" if verdict is False else "ok  ", name, detail))
            up, why = alive(addr)
            if not up:
                out("FAIL target stopped answering ICReq after %s (round %d): %s" % (name, rounds, why))
                return len(SCENARIOS) - len(failures), len(failures) + 1
        if rounds > 1:
            out("     round %d done (%.0f s)" % (rounds, time.monotonic() - t0))
    for name, detail in failures.items():
        out("FAIL %s (first failure): %s" % (name, detail))
    try:
        s, cntlid = admin_session(addr, nqn)
        s.close()
        out("ok   after %d rounds in %.0f s the target still serves a full Connect" % (rounds, time.monotonic() - t0))
        final_ok = 1
    except Exception as e:  # noqa: BLE001
        out("FAIL after the attack a valid Connect fails: %s" % e)
        final_ok = 0
    passed = len(SCENARIOS) - len(failures) + final_ok + 1
    return passed, len(failures) + (1 - final_ok)


# ------------------------------------------------------------------ mock targets (--selftest)
class MockTarget(threading.Thread):
    """A minimal NVMe/TCP target, 'strict' (validates like a correct target) or 'careless'
    (ignores what it does not understand and never rejects anything)."""

    def __init__(self, strict):
        super().__init__(daemon=True)
        self.strict = strict
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(512)
        self.port = self.ls.getsockname()[1]

    def run(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    @staticmethod
    def read(s, n):
        b = b""
        while len(b) < n:
            d = s.recv(n - len(b))
            if not d:
                raise Closed()
            b += d
        return b

    def term(self, s, hdr, fes=1):
        if self.strict:
            s.sendall(ch(C2H_TERM, 0, 24, 0, 24 + len(hdr[:72])) + struct.pack("<HI10x", fes, 0) + hdr[:72])
            s.close()
            raise Closed()

    def resp(self, s, cid, sct=0, sc=0, dw0=0):
        s.sendall(ch(CAPSULE_RESP, 0, 24, 0, 24) + struct.pack("<IIHHHH", dw0, 0, 0, 0, cid, ((sct << 8) | sc) << 1))

    def serve(self, s):
        r2t = {}
        try:
            h = self.read(s, 8)
            t, _, hlen, _, plen = struct.unpack("<BBBBI", h)
            if t != ICREQ or hlen != 128 or plen != 128:
                self.term(s, h)
            h += self.read(s, 120)
            pfv, hpda = struct.unpack_from("<HB", h, 8)
            if pfv != 0 or hpda > 31:
                self.term(s, h, 2)
            s.sendall((ch(ICRESP, 0, 128, 0, 128) + struct.pack("<HBBI", 0, 0, 0, 8192)).ljust(128, b"\0"))
            while True:
                h = self.read(s, 8)
                t, _, hlen, pdo, plen = struct.unpack("<BBBBI", h)
                if t == CAPSULE_CMD and (hlen != 72 or plen < 72 or plen > 72 + 8192
                                         or (plen > 72 and pdo != 72)):
                    self.term(s, h)
                if t == H2C_DATA and (hlen != 24 or plen < 24 or plen > 24 + 65536):
                    self.term(s, h)
                if t not in (CAPSULE_CMD, H2C_DATA):
                    self.term(s, h)
                    if not self.strict:
                        continue
                hdr = h + self.read(s, max(hlen, 8) - 8)
                data = self.read(s, max(plen - max(hlen, 8), 0)) if plen < (1 << 20) else b""
                if t == H2C_DATA:
                    cccid, ttag, datao, datal = struct.unpack_from("<HHII", hdr, 8)
                    want = r2t.get(ttag)
                    if want is None or datao != 0 or datal != want or len(data) != datal:
                        self.term(s, hdr, 5)
                        continue
                    del r2t[ttag]
                    self.resp(s, cccid)
                    continue
                opc, _, cid, nsid = struct.unpack_from("<BBHI", hdr, 8)
                sgl_len = struct.unpack_from("<I", hdr, 8 + 32)[0]
                if opc == 0x7F and hdr[12] == 0x01:
                    qid, = struct.unpack_from("<H", hdr, 8 + 42)
                    if len(data) != 1024 or sgl_len != 1024:
                        self.term(s, hdr, 2) if self.strict else self.resp(s, cid)
                        continue
                    subnqn = data[256:512].rstrip(b"\0").decode(errors="replace")
                    cntlid, = struct.unpack_from("<H", data, 16)
                    if (self.strict and not subnqn.startswith("nqn.2016-06.io.keel:mock")) or \
                            (self.strict and qid and cntlid != 1):
                        self.resp(s, cid, 1, 0x82)
                    else:
                        self.resp(s, cid, dw0=1)
                elif opc == 0x7F:
                    self.resp(s, cid, dw0=1)  # Property Get/Set: CSTS.RDY=1
                elif opc == 0x01 and not data:
                    ttag = cid + 0x100
                    r2t[ttag] = sgl_len
                    s.sendall(ch(R2T, 0, 24, 0, 24) + struct.pack("<HHII4x", cid, ttag, 0, sgl_len))
                elif opc == 0x02:
                    slba, = struct.unpack_from("<Q", hdr, 8 + 40)
                    if self.strict and nsid != 1:
                        self.resp(s, cid, 0, 0x0B)
                    elif self.strict and slba >= 1 << 20:
                        self.resp(s, cid, 0, 0x80)
                    else:
                        self.resp(s, cid)
                else:
                    self.resp(s, cid)
        except (Closed, OSError, struct.error):
            pass  # the careless mock chokes on short headers: that just ends the connection
        finally:
            s.close()


def selftest():
    global RECV_TIMEOUT
    good = MockTarget(True)
    careless = MockTarget(False)
    good.start()
    careless.start()
    nqn = "nqn.2016-06.io.keel:mock"
    quiet = []
    print("== strict mock target (every check must pass)")
    p1, f1 = attack(("127.0.0.1", good.port), nqn, 0, 1)
    print("== careless mock target (checks must fail)")
    RECV_TIMEOUT = 1.0
    p2, f2 = attack(("127.0.0.1", careless.port), nqn, 0, 1, out=quiet.append)
    print("     %d passed, %d failed, e.g.: %s" % (p2, f2, quiet[1:4]))
    ok = f1 == 0 and f2 >= 10
    print("hostile selftest: %s (strict: %d passed %d failed; careless: %d failed)"
          % ("ok" if ok else "FAILED", p1, f1, f2))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4420)
    ap.add_argument("--nqn", default="nqn.2016-06.io.keel:kinit-main")
    ap.add_argument("--duration", type=float, default=20, help="repeat rounds for this long (s)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        return selftest()
    if not ipaddress.ip_address(socket.gethostbyname(a.host)).is_loopback:
        print("hostile.py attacks loopback targets only, not %s" % a.host)
        return 2
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    print("hostile: target %s:%d %s, seed %d, %.0f s" % (a.host, a.port, a.nqn, seed, a.duration))
    passed, failed = attack((a.host, a.port), a.nqn, min(a.duration, 300), seed)
    print("hostile: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
