//! Finding one complete JSON value in a byte stream (JSON-RPC without framing).
//!
//! SPDK's JSON-RPC has no length prefix: a request is one complete JSON value, and the next one
//! starts right after it. [`JsonScanner`] finds where that value ends without parsing it, so the
//! server can read partial data, notice when a request is complete, hand exactly those bytes to
//! `serde_json`, and keep the rest for the next request.
//!
//! The scanner only tracks what it needs to find the end: whether it is inside a string (and
//! right after a backslash there) and the bracket depth. It checks that the top-level value is
//! an object or an array; everything else about the value (bracket kinds matching, commas, the
//! tokens between brackets) is left to the parser that gets the bytes.
//!
//! Scanning is incremental: call [`JsonScanner::scan`] again with the same buffer after more
//! bytes were appended, and it resumes where it stopped, so each byte is looked at once.
//!
//! ```
//! use keel_rpc::framing::{JsonScanner, Scan};
//! let mut s = JsonScanner::new();
//! let mut buf = b"  {\"a\": \"}\"".to_vec();
//! assert_eq!(s.scan(&buf), Scan::Incomplete);
//! buf.extend_from_slice(b"} [1]");
//! assert_eq!(s.scan(&buf), Scan::Complete(12));
//! // The caller consumes the first 12 bytes, then scans the rest with a reset scanner.
//! buf.drain(..12);
//! s.reset();
//! assert_eq!(s.scan(&buf), Scan::Complete(4));
//! ```

/// Outcome of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The buffer holds no complete value yet (possibly only whitespace): read more.
    Incomplete,
    /// The value ends right before this offset: `buf[..n]` is leading whitespace plus one
    /// complete value (`n <= buf.len()`); the bytes after it belong to the next value.
    Complete(usize),
    /// The top-level value does not start with `{` or `[`: there is no way to find where it
    /// ends, so the stream cannot be resynchronised.
    Invalid(FramingError),
}

/// Why a byte stream cannot hold a JSON-RPC request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first non-whitespace byte (at `offset`) is not `{` or `[`.
    #[error("expected a JSON object or array, found byte 0x{byte:02x} at offset {offset}")]
    NotObjectOrArray {
        /// Offset of the offending byte in the scanned buffer.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
}

/// Incremental scanner for the end of one top-level JSON object or array.
///
/// Feed it the same growing buffer (starting at the first byte of the value or of the
/// whitespace before it) until it answers [`Scan::Complete`] or [`Scan::Invalid`]; then
/// [`reset`](JsonScanner::reset) it before scanning the next value (the buffer passed then must
/// start at the first byte after the previous value).
#[derive(Debug, Clone, Default)]
pub struct JsonScanner {
    /// Bytes of the buffer already examined.
    pos: usize,
    /// Bracket depth (`{`/`[` opened minus closed) outside strings.
    depth: usize,
    /// The first `{` or `[` was seen.
    started: bool,
    /// Inside a string literal.
    in_string: bool,
    /// Inside a string, right after a backslash.
    escaped: bool,
    /// The result once final (complete or invalid), returned again on later calls.
    done: Option<Scan>,
}

impl JsonScanner {
    /// A scanner at the start of a value.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget all state, to scan the next value (from a buffer starting after the last one).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Bytes of the current buffer examined so far (at most `buf.len()` of the last call).
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// Whether only whitespace has been seen so far (no value has started).
    pub fn is_blank(&self) -> bool {
        !self.started && self.done.is_none()
    }

    /// Resume scanning `buf`, which must be the buffer of the previous calls with bytes appended
    /// (a shorter buffer is treated as a new one: the scanner restarts from its beginning).
    pub fn scan(&mut self, buf: &[u8]) -> Scan {
        if let Some(done) = self.done {
            if self.pos <= buf.len() {
                return done;
            }
        }
        if self.pos > buf.len() {
            self.reset();
        }
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if !self.started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.started = true;
                        self.depth = 1;
                    }
                    _ => {
                        let err = FramingError::NotObjectOrArray {
                            offset: i - 1,
                            byte: b,
                        };
                        return self.finish(i, Scan::Invalid(err));
                    }
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return self.finish(i, Scan::Complete(i));
                    }
                }
                _ => {}
            }
        }
        self.pos = i;
        Scan::Incomplete
    }

    fn finish(&mut self, pos: usize, result: Scan) -> Scan {
        self.pos = pos;
        self.done = Some(result);
        result
    }
}

/// One-shot scan: where the first complete value in `buf` ends (see [`Scan`]).
pub fn find_value_end(buf: &[u8]) -> Scan {
    JsonScanner::new().scan(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` in pieces of `step` bytes; returns the scan result after the last piece.
    fn scan_in_steps(data: &[u8], step: usize) -> Scan {
        let mut s = JsonScanner::new();
        let mut buf = Vec::new();
        let mut last = Scan::Incomplete;
        for chunk in data.chunks(step) {
            buf.extend_from_slice(chunk);
            last = s.scan(&buf);
            if last != Scan::Incomplete {
                break;
            }
        }
        last
    }

    #[test]
    fn finds_end_of_object_and_array() {
        assert_eq!(find_value_end(br#"{"a":1}"#), Scan::Complete(7));
        assert_eq!(find_value_end(b"[1,[2],{}]xyz"), Scan::Complete(10));
        assert_eq!(find_value_end(b"{}"), Scan::Complete(2));
    }

    #[test]
    fn leading_whitespace_is_part_of_the_value() {
        assert_eq!(find_value_end(b" \r\n\t{}"), Scan::Complete(6));
        assert_eq!(find_value_end(b" \n  "), Scan::Incomplete);
        assert_eq!(find_value_end(b""), Scan::Incomplete);
        let mut s = JsonScanner::new();
        assert_eq!(s.scan(b"  "), Scan::Incomplete);
        assert!(s.is_blank());
        assert_eq!(s.scan(b"  {"), Scan::Incomplete);
        assert!(!s.is_blank());
    }

    #[test]
    fn brackets_and_quotes_inside_strings_are_ignored() {
        let v = br#"{"a":"}]\"{[","b":["\\",{"c":"\\\""}]}"#;
        assert_eq!(find_value_end(v), Scan::Complete(v.len()));
        // Every prefix is incomplete.
        for n in 0..v.len() {
            assert_eq!(find_value_end(&v[..n]), Scan::Incomplete, "prefix {n}");
        }
        // Parsed by serde_json, the same bytes are one value.
        let parsed: serde_json::Value = serde_json::from_slice(v).unwrap();
        assert_eq!(parsed["a"], "}]\"{[");
    }

    #[test]
    fn split_reads_give_the_same_answer_at_every_split() {
        let v =
            br#"  {"method":"x","params":{"s":"a\"]}\\","l":[1,[2,{"k":"}"}]]},"id":1}{"next":1}"#;
        let whole = find_value_end(v);
        let Scan::Complete(n) = whole else {
            panic!("complete expected, got {whole:?}")
        };
        assert_eq!(&v[n..], br#"{"next":1}"#);
        for step in 1..v.len() {
            assert_eq!(scan_in_steps(v, step), whole, "step {step}");
        }
    }

    #[test]
    fn next_value_after_reset() {
        let mut buf = br#"{"id":1} {"id":2}"#.to_vec();
        let mut s = JsonScanner::new();
        assert_eq!(s.scan(&buf), Scan::Complete(8));
        // Asking again without consuming gives the same answer.
        assert_eq!(s.scan(&buf), Scan::Complete(8));
        buf.drain(..8);
        s.reset();
        assert_eq!(s.scan(&buf), Scan::Complete(9));
    }

    #[test]
    fn garbage_is_invalid_at_its_first_byte() {
        assert_eq!(
            find_value_end(b"  x{}"),
            Scan::Invalid(FramingError::NotObjectOrArray {
                offset: 2,
                byte: b'x'
            })
        );
        for bad in [
            &b"\"str\""[..],
            b"123",
            b"true",
            b"null",
            b"}",
            b"]",
            b"\0",
            b"\xff{",
        ] {
            assert!(matches!(find_value_end(bad), Scan::Invalid(_)), "{bad:?}");
        }
        let err = FramingError::NotObjectOrArray {
            offset: 0,
            byte: b'x',
        };
        assert!(err.to_string().contains("0x78"));
    }

    #[test]
    fn unbalanced_close_ends_the_value_and_leaves_errors_to_the_parser() {
        // `{]` closes depth 1: the scanner says complete, serde_json then reports the error.
        assert_eq!(find_value_end(b"{\"a\": ]]"), Scan::Complete(7));
        assert!(serde_json::from_slice::<serde_json::Value>(b"{\"a\": ]").is_err());
    }

    #[test]
    fn shorter_buffer_restarts() {
        let mut s = JsonScanner::new();
        assert_eq!(s.scan(b"[[[["), Scan::Incomplete);
        assert_eq!(s.scan(b"[]"), Scan::Complete(2));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = vec![b'['; 100_000];
        v.resize(200_000, b']');
        assert_eq!(find_value_end(&v), Scan::Complete(200_000));
    }
}
