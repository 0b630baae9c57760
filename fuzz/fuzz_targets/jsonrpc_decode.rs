//! Fuzz the JSON-RPC request decoding path of the server: framing scan, JSON parse, request
//! validation. Arbitrary bytes must never panic, and what is reported must be consistent.

#![no_main]

use keel_rpc::framing::{find_value_end, JsonScanner, Scan};
use keel_rpc::protocol::{decode_request, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One-shot scan: an end is inside the buffer.
    let whole = find_value_end(data);
    if let Scan::Complete(n) = whole {
        assert!(
            n >= 1 && n <= data.len(),
            "end {n} outside 1..={}",
            data.len()
        );
        assert!(
            matches!(data[n - 1], b'}' | b']'),
            "a value ends with a closing bracket"
        );
    }

    // Incremental scan over the same bytes fed in pieces gives the same answer.
    let split = if data.is_empty() {
        0
    } else {
        data[0] as usize % data.len()
    };
    let mut scanner = JsonScanner::new();
    let first = scanner.scan(&data[..split]);
    let incremental = if first == Scan::Incomplete {
        scanner.scan(data)
    } else {
        first
    };
    assert_eq!(incremental, whole, "split at {split}");

    // Full decode, then the rest of the buffer, as the server loops over a connection.
    let mut rest = data;
    while !rest.is_empty() {
        match decode_request(rest) {
            Decoded::Incomplete => break,
            Decoded::Fatal { error } => {
                assert!(error.code == -32700 || error.code == -32600);
                break;
            }
            Decoded::Invalid { len, error, .. } => {
                assert_eq!(error.code, -32600);
                assert!(len >= 1 && len <= rest.len());
                rest = &rest[len..];
            }
            Decoded::Request { len, request } => {
                assert!(len >= 1 && len <= rest.len());
                if let Some(id) = &request.id {
                    assert!(id.is_null() || id.is_string() || id.is_number(), "id {id}");
                }
                if let Some(params) = &request.params {
                    assert!(params.is_object() || params.is_array(), "params {params}");
                }
                rest = &rest[len..];
            }
        }
    }
});
