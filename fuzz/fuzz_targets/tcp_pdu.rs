//! Fuzz the NVMe/TCP receive path: arbitrary bytes through the receive state machine (header
//! validation, digests, data routing into buffers, direct reads), at arbitrary split points.
#![no_main]

use keel_bdev::IoVec;
use keel_nvme::pdu::{Negotiated, RxLimits};
use keel_nvmf::tcp::recv::{HostPdu, Rx, RxEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, bytes)) = input.split_first() else {
        return;
    };
    let mut rx = Rx::new(RxLimits {
        max_in_capsule: 8192,
        maxh2cdata: 16384,
    });
    // Bit 0: start negotiated (else an ICReq must come first); bits 1-2: digests;
    // bits 3-7: chunk size.
    if cfg & 1 != 0 {
        rx.set_negotiated(Negotiated {
            hdgst: cfg & 2 != 0,
            ddgst: cfg & 4 != 0,
            cpda: 0,
            hpda: 0,
            maxh2cdata: 16384,
            maxr2t: 0,
        });
    }
    let chunk = 1 + (cfg >> 3) as usize * 37;
    let mut buf = vec![0u8; 16384];
    let mut pos = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > 100_000 {
            panic!("receive machine does not make progress");
        }
        match rx.step() {
            RxEvent::Pdu(pdu, f) => {
                if let HostPdu::IcReq(_) = pdu {
                    rx.set_negotiated(Negotiated {
                        hdgst: cfg & 2 != 0,
                        ddgst: cfg & 4 != 0,
                        cpda: 0,
                        hpda: 0,
                        maxh2cdata: 16384,
                        maxr2t: 0,
                    });
                }
                if f.data_len > 0 {
                    assert!(f.data_len as usize <= buf.len());
                    let half = buf.len() / 3;
                    let p = buf.as_mut_ptr();
                    // SAFETY: both segments are inside `buf`, which outlives `rx` use below
                    // and is not touched while the machine holds them.
                    let iovs = unsafe {
                        [
                            IoVec::from_raw_parts(p, half),
                            IoVec::from_raw_parts(p.add(half), buf.len() - half),
                        ]
                    };
                    // SAFETY: as above.
                    if unsafe { rx.expect_data(&iovs, 0) }.is_err() {
                        return;
                    }
                }
            }
            RxEvent::DataDone { .. } => {}
            RxEvent::Fatal(_) => {
                assert!(rx.bad_header().len() <= 128);
                return;
            }
            RxEvent::NeedMore => {
                if pos == bytes.len() {
                    return;
                }
                let take = chunk.min(bytes.len() - pos);
                if rx.wants_direct() {
                    let mut iov = [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; 4];
                    let n = rx.direct_iovs(&mut iov);
                    let mut done = 0;
                    for v in &iov[..n] {
                        let k = v.iov_len.min(take - done);
                        // SAFETY: the iovecs point into `buf` or the machine's staging buffer.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                bytes[pos + done..].as_ptr(),
                                v.iov_base.cast::<u8>(),
                                k,
                            )
                        };
                        done += k;
                    }
                    rx.direct_advance(done);
                    pos += done;
                } else {
                    let space = rx.stage_space();
                    if space.is_empty() {
                        return;
                    }
                    let k = take.min(space.len());
                    space[..k].copy_from_slice(&bytes[pos..pos + k]);
                    rx.staged(k);
                    pos += k;
                }
            }
        }
    }
});
