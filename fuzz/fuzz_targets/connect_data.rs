//! Fuzz the Fabrics Connect data parser with arbitrary bytes: it must never panic, accept
//! only exactly 1024 bytes, and what it accepts must hold valid NQNs (a non-empty subsystem NQN;
//! the host NQN may be empty: an anonymous host) and encode back to data that parses the same.

#![no_main]

use keel_nvme::fabrics::{ConnectData, NQN_MAX_LEN};
use keel_nvme::status::Status;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Pad or cut to 1024 bytes most of the time, so the NQN checks get exercised; keep the
    // raw length when the first byte says so, to exercise the length check.
    let mut buf = [0u8; 1024];
    let input: &[u8] = if data.first().is_some_and(|&b| b == 0xff) {
        data
    } else {
        let n = data.len().min(1024);
        buf[..n].copy_from_slice(&data[..n]);
        &buf
    };
    match ConnectData::parse(input) {
        Ok(d) => {
            assert_eq!(input.len(), ConnectData::SIZE);
            // The host NQN may be empty (an anonymous host); the subsystem NQN may not.
            assert!(!d.subnqn.is_empty());
            assert_eq!(d.is_anonymous(), d.hostnqn.is_empty());
            for nqn in [&d.subnqn, &d.hostnqn] {
                assert!(nqn.len() <= NQN_MAX_LEN);
                assert!(!nqn.contains('\0'));
            }
            assert_eq!(&d.hostid[..], &input[..16]);
            assert_eq!(d.cntlid, u16::from_le_bytes([input[16], input[17]]));
            let again = ConnectData::parse(&d.encode()).expect("re-encoded data parses");
            assert_eq!(again, d);
        }
        Err(e) => {
            if input.len() != ConnectData::SIZE {
                assert_eq!(e.status, Status::DATA_SGL_LENGTH_INVALID);
            } else {
                assert_eq!(e.status, Status::CONNECT_INVALID_PARAMETERS);
                assert!(
                    e.cdw0 == 1 << 16 | 256 || e.cdw0 == 1 << 16 | 512,
                    "{:#x}",
                    e.cdw0
                );
            }
        }
    }
});
