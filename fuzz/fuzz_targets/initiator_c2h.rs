//! Fuzz the initiator's side of NVMe/TCP: what a (possibly hostile) controller sends back.
//! Arbitrary bytes as an ICResp (checked against our ICReq), then as a stream of controller
//! PDU headers validated against the negotiation, with header digest checks.
#![no_main]

use keel_nvme::frame::{check_hdgst, check_icresp, icreq, validate_c2h};
use keel_nvme::pdu::{CommonHeader, IcResp, Wire, IC_HLEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&cfg, bytes)) = input.split_first() else {
        return;
    };
    let req = icreq(0, cfg & 1 != 0, cfg & 2 != 0, 0);
    let Some(resp) = bytes.get(..IC_HLEN).and_then(IcResp::read_from) else {
        return;
    };
    let Ok(neg) = check_icresp(&resp, &req) else {
        return;
    };
    let mut rest = &bytes[IC_HLEN..];
    while let Some(ch) = CommonHeader::read_from(rest) {
        let Ok(f) = validate_c2h(&ch, &neg) else {
            break;
        };
        assert!(f.hlen <= f.plen as usize || f.pdu_type == 3, "header inside the PDU");
        if f.hdgst && rest.len() >= f.hlen + 4 {
            let _ = check_hdgst(&rest[..f.hlen + 4], f.hlen);
        }
        let step = (f.plen as usize).clamp(8, rest.len());
        rest = &rest[step..];
    }
});
