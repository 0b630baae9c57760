//! The journal: an append-only text file of what the checker learned, one record a line, so
//! that a later run (after the target was killed and restarted) knows every acknowledged
//! write. Records:
//!
//! ```text
//! keel-crashcheck journal v1 block_size=4096   first line
//! A nsid lba blocks generation                 acknowledged
//! M nsid lba blocks generation                 may have landed (in flight at a failure)
//! S nsid lba generation                        a read after restart found this (0: zeroes)
//! ```
//!
//! Writes are buffered (the checker is not the process that gets killed); [`Journal::flush`]
//! runs when the connection dies and at the end.

use crate::ledger::Ledger;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};

const HEADER: &str = "keel-crashcheck journal v1 block_size=";

/// An open journal, appending.
pub struct Journal {
    out: BufWriter<File>,
    path: String,
}

/// Read the journal at `path` into a ledger (an empty one if the file does not exist).
pub fn load(path: &str) -> Result<Ledger, String> {
    let mut led = Ledger::default();
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(led),
        Err(e) => return Err(format!("cannot open the journal {path}: {e}")),
    };
    let mut r = BufReader::new(f);
    let mut line = String::new();
    let mut n = 0usize;
    loop {
        line.clear();
        let got = r
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the journal {path}: {e}"))?;
        if got == 0 {
            break;
        }
        n += 1;
        if !line.ends_with('\n') {
            return Err(format!("{path}:{n}: truncated last record {line:?}"));
        }
        apply(&mut led, line.trim_end(), n == 1).map_err(|e| format!("{path}:{n}: {e}"))?;
    }
    Ok(led)
}

fn num<T: std::str::FromStr>(f: Option<&str>, what: &str) -> Result<T, String> {
    let s = f.ok_or_else(|| format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what} {s:?}"))
}

/// Apply one record (the first line must be the header).
fn apply(led: &mut Ledger, line: &str, first: bool) -> Result<(), String> {
    if first {
        let bs = line
            .strip_prefix(HEADER)
            .ok_or_else(|| format!("not a keel-crashcheck journal: {line:?}"))?;
        led.block_size = num(Some(bs), "block size")?;
        if led.block_size < crate::block::MIN_BLOCK as u32 {
            return Err(format!("block size {} too small", led.block_size));
        }
        return Ok(());
    }
    let mut f = line.split(' ');
    let kind = f.next().unwrap_or("");
    let nsid: u32 = num(f.next(), "namespace id")?;
    let lba: u64 = num(f.next(), "LBA")?;
    let (blocks, generation) = match kind {
        "A" | "M" => (
            num::<u64>(f.next(), "block count")?,
            num(f.next(), "generation")?,
        ),
        "S" => (1, num(f.next(), "generation")?),
        _ => return Err(format!("unknown record {line:?}")),
    };
    if f.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    if blocks == 0 || blocks > 1 << 24 || lba.checked_add(blocks).is_none_or(|e| e > 1 << 40) {
        return Err(format!("implausible extent in {line:?}"));
    }
    if generation == 0 && kind != "S" {
        return Err(format!("generation 0 in {line:?}"));
    }
    led.saw_generation(generation);
    let ns = led.ns_mut(nsid);
    match kind {
        "A" => ns.ack(lba, blocks, generation),
        "M" => ns.maybe(lba, blocks, generation),
        _ => ns.settle(lba, generation),
    }
    Ok(())
}

impl Journal {
    /// Open `path` for appending; a new file gets the header for `block_size`. An existing
    /// one must have been written for the same block size (`recorded`, from [`load`]).
    pub fn open(path: &str, block_size: u32, recorded: u32) -> Result<Journal, String> {
        if recorded != 0 && recorded != block_size {
            return Err(format!(
                "the journal {path} was written for {recorded}-byte blocks, the namespaces \
                 now have {block_size}-byte blocks"
            ));
        }
        let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the journal {path}: {e}"))?;
        let mut j = Journal {
            out: BufWriter::with_capacity(1 << 20, f),
            path: path.into(),
        };
        if fresh {
            j.line(format_args!("{HEADER}{block_size}"))?;
        }
        Ok(j)
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), String> {
        writeln!(self.out, "{args}")
            .map_err(|e| format!("cannot write the journal {}: {e}", self.path))
    }

    /// `blocks` blocks from `lba` of `nsid` were acknowledged with `generation`.
    pub fn acked(
        &mut self,
        nsid: u32,
        lba: u64,
        blocks: u64,
        generation: u64,
    ) -> Result<(), String> {
        self.line(format_args!("A {nsid} {lba} {blocks} {generation}"))
    }

    /// `blocks` blocks from `lba` of `nsid` may have been written with `generation`.
    pub fn maybe(
        &mut self,
        nsid: u32,
        lba: u64,
        blocks: u64,
        generation: u64,
    ) -> Result<(), String> {
        self.line(format_args!("M {nsid} {lba} {blocks} {generation}"))
    }

    /// A read after restart found `generation` (0: zeroes) at `lba` of `nsid`.
    pub fn settled(&mut self, nsid: u32, lba: u64, generation: u64) -> Result<(), String> {
        self.line(format_args!("S {nsid} {lba} {generation}"))
    }

    /// Write out what is buffered.
    pub fn flush(&mut self) -> Result<(), String> {
        self.out
            .flush()
            .map_err(|e| format!("cannot write the journal {}: {e}", self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Found;

    fn tmp(name: &str) -> String {
        let p = std::env::temp_dir().join(format!(
            "keel-crashcheck-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let p = tmp("roundtrip");
        let mut j = Journal::open(&p, 4096, 0).unwrap();
        j.acked(1, 10, 2, 5).unwrap();
        j.maybe(1, 11, 1, 6).unwrap();
        j.acked(2, 0, 1, 7).unwrap();
        j.flush().unwrap();
        drop(j);
        let mut j = Journal::open(&p, 4096, 4096).unwrap(); // append, no second header
        j.settled(1, 11, 6).unwrap();
        j.flush().unwrap();
        let led = load(&p).unwrap();
        assert_eq!(led.block_size, 4096);
        assert_eq!(led.max_generation, 7);
        let ns1 = led.ns(1).unwrap();
        assert_eq!(ns1.acked(10), 5);
        assert_eq!(ns1.acked(11), 6);
        assert!(!ns1.is_uncertain(11));
        assert!(ns1.judge(11, Found::Stamped(5)).is_err());
        assert_eq!(led.ns(2).unwrap().acked(0), 7);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_missing_journal_is_empty_and_a_bad_one_is_refused() {
        let p = tmp("missing");
        let led = load(&p).unwrap();
        assert_eq!((led.block_size, led.namespaces.len()), (0, 0));
        for (body, why) in [
            ("hello\n", "not a keel-crashcheck journal"),
            (
                "keel-crashcheck journal v1 block_size=4096\nA 1 2 3\n",
                "missing generation",
            ),
            (
                "keel-crashcheck journal v1 block_size=4096\nX 1 2 3 4\n",
                "unknown record",
            ),
            (
                "keel-crashcheck journal v1 block_size=4096\nA 1 2 0 4\n",
                "implausible extent",
            ),
            (
                "keel-crashcheck journal v1 block_size=4096\nA 1 2 1 4",
                "truncated",
            ),
            (
                "keel-crashcheck journal v1 block_size=4096\nA 1 2 1 x\n",
                "bad generation",
            ),
            ("keel-crashcheck journal v1 block_size=8\n", "too small"),
        ] {
            std::fs::write(&p, body).unwrap();
            let e = load(&p).unwrap_err();
            assert!(e.contains(why), "{body:?}: {e}");
        }
        assert!(Journal::open(&p, 512, 4096).is_err());
        // An empty file (created, never written) gets its header.
        std::fs::write(&p, "").unwrap();
        let mut j = Journal::open(&p, 512, 0).unwrap();
        j.acked(1, 0, 1, 1).unwrap();
        j.flush().unwrap();
        assert_eq!(load(&p).unwrap().block_size, 512);
        let _ = std::fs::remove_file(&p);
    }
}
