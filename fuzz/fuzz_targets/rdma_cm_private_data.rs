//! Fuzz the NVMe-oF RDMA CM private data parsers with arbitrary bytes: the target's
//! CONNECT_REQUEST parser must never panic, must accept only requests within the limits (taken
//! from the first bytes, so limits vary too), and what it accepts must encode back to the same
//! RECFMT, QID, HRQSIZE, HSQSIZE and CNTLID bytes; the host-side ACCEPT/REJECT parsers must
//! never panic.

#![no_main]

use keel_rdma::nvmf_cm::{parse_accept, parse_reject, parse_request, CmLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limit = |i: usize| data.get(i).map_or(128, |&b| u16::from(b) + 1);
    let limits = CmLimits {
        max_qid: limit(0) - 1,
        max_queue_depth: limit(1),
        max_aq_depth: limit(2),
    };
    let body = data.get(3..).unwrap_or(&[]);
    if let Ok(req) = parse_request(body, &limits) {
        assert!(req.qid <= limits.max_qid);
        let depth = if req.qid == 0 {
            limits.max_aq_depth
        } else {
            limits.max_queue_depth
        };
        assert!(req.hsqsize >= 1 && req.hsqsize < depth);
        assert!(req.hrqsize >= 1 && req.hrqsize <= depth);
        let enc = req.encode();
        assert_eq!(&enc[..10], &body[..10], "accepted request re-encodes its fields");
        assert_eq!(parse_request(&enc, &limits), Ok(req));
    }
    let _ = parse_accept(body);
    let _ = parse_reject(body);
});
