//! Fuzz the NVMe/RDMA capsule decoder (`keel_rdma::transport::capsule::parse`) with arbitrary
//! received bytes: it must never panic, must refuse anything shorter than a command, must place
//! in-capsule data inside the received bytes (after the command), and must never accept a keyed
//! transfer above the maximum I/O size (taken from the first bytes, so it varies too).

#![no_main]

use keel_rdma::transport::capsule::{parse, CapsuleData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let max_io = data.first().map_or(8192, |&b| (u32::from(b) + 1) * 4096);
    let bytes = data.get(1..).unwrap_or(&[]);
    match parse(bytes, max_io) {
        None => assert!(bytes.len() < 64),
        Some(c) => match c.data {
            Ok(CapsuleData::InCapsule { start, len }) => {
                assert!(start >= 64 && len > 0);
                assert!(start + len as usize <= bytes.len(), "in-capsule data past the capsule");
            }
            Ok(CapsuleData::Keyed { len, .. }) => assert!(len > 0 && len <= max_io),
            Ok(CapsuleData::None) | Err(_) => {}
        },
    }
});
