//! `-m/--cpumask` parsing: SPDK-style hex masks (`0x3`, `3`) or lists (`[0,2]`, `[0-3,6]`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Highest core number a mask may name (exclusive). Generous: Linux's `CPU_SETSIZE` is 1024.
const MAX_CORES: u32 = 4096;

/// A set of cores for reactors, in ascending order, non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMask {
    cores: Vec<u32>,
}

/// Why a core mask was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuMaskError {
    /// Neither a hex mask nor a core list.
    #[error("invalid core mask {0:?}: expected a hex mask like 0x3 or a list like [0,1]")]
    Syntax(String),
    /// Selects no core.
    #[error("core mask {0:?} selects no core")]
    Empty(String),
    /// Names a core this machine (or this process's affinity) does not have.
    #[error("core {core} does not exist on this machine (usable cores: {usable})")]
    NoSuchCore {
        /// The core asked for.
        core: u32,
        /// The cores this process may use, for the message.
        usable: String,
    },
}

impl CpuMask {
    /// Parse a mask without checking that the cores exist.
    pub fn parse(s: &str) -> Result<CpuMask, CpuMaskError> {
        let text = s.trim();
        let syntax = || CpuMaskError::Syntax(s.to_string());
        let cores = if let Some(list) = text.strip_prefix('[') {
            let body = list.strip_suffix(']').ok_or_else(syntax)?;
            parse_list(body).ok_or_else(syntax)?
        } else {
            let hex = text
                .strip_prefix("0x")
                .or_else(|| text.strip_prefix("0X"))
                .unwrap_or(text);
            parse_hex(hex).ok_or_else(syntax)?
        };
        if cores.is_empty() {
            return Err(CpuMaskError::Empty(s.to_string()));
        }
        Ok(CpuMask {
            cores: cores.into_iter().collect(),
        })
    }

    /// Parse and check every core against the process's CPU affinity set.
    pub fn parse_and_validate(s: &str) -> Result<CpuMask, CpuMaskError> {
        let mask = CpuMask::parse(s)?;
        mask.validate_against(&usable_cores())?;
        Ok(mask)
    }

    /// Check every core of the mask against `usable` (ascending core ids).
    fn validate_against(&self, usable: &[u32]) -> Result<(), CpuMaskError> {
        match self.cores.iter().find(|c| usable.binary_search(c).is_err()) {
            Some(&core) => Err(CpuMaskError::NoSuchCore {
                core,
                usable: format_list(usable),
            }),
            None => Ok(()),
        }
    }

    /// The cores, ascending.
    pub fn cores(&self) -> &[u32] {
        &self.cores
    }
}

impl std::fmt::Display for CpuMask {
    /// Formats as a core list, e.g. `[0-3,6]` (parseable by [`CpuMask::parse`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", format_list(&self.cores))
    }
}

/// Hex digits, least significant digit = cores 0..4. `None` on a syntax error or a core past
/// [`MAX_CORES`] (a set bit there; leading zero digits are accepted).
fn parse_hex(hex: &str) -> Option<BTreeSet<u32>> {
    if hex.is_empty() {
        return None;
    }
    let mut cores = BTreeSet::new();
    for (pos, ch) in hex.chars().rev().enumerate() {
        let digit = ch.to_digit(16)?;
        for bit in 0..4u32 {
            if digit & (1 << bit) != 0 {
                let core = u32::try_from(pos).ok()?.checked_mul(4)?.checked_add(bit)?;
                if core >= MAX_CORES {
                    return None;
                }
                cores.insert(core);
            }
        }
    }
    Some(cores)
}

/// The inside of `[...]`: comma-separated cores or inclusive ranges `a-b`; blanks allowed
/// around items. An empty body gives an empty set.
fn parse_list(body: &str) -> Option<BTreeSet<u32>> {
    let mut cores = BTreeSet::new();
    if body.trim().is_empty() {
        return Some(cores);
    }
    for item in body.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (parse_core(lo)?, parse_core(hi)?),
            None => {
                let core = parse_core(item)?;
                (core, core)
            }
        };
        if lo > hi {
            return None;
        }
        cores.extend(lo..=hi);
    }
    Some(cores)
}

fn parse_core(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&c| c < MAX_CORES)
}

/// Ascending cores as a compact list without brackets, e.g. `0-3,6`.
fn format_list(cores: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        let mut end = start;
        while i + 1 < cores.len() && cores[i + 1] == end + 1 {
            i += 1;
            end = cores[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = if start == end {
            write!(out, "{start}")
        } else {
            write!(out, "{start}-{end}")
        };
        i += 1;
    }
    out
}

/// The cores this process may run on (`sched_getaffinity`), ascending. Falls back to every
/// online CPU if the affinity cannot be read.
fn usable_cores() -> Vec<u32> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass; pid 0 = this thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        log::warn!("sched_getaffinity failed ({err}); assuming cores 0..{n} are usable");
        return (0..n as u32).collect();
    }
    let max = (8 * std::mem::size_of::<libc::cpu_set_t>()) as u32;
    (0..max)
        // SAFETY: `set` is initialised and `core` is below the set's capacity in bits.
        .filter(|&core| unsafe { libc::CPU_ISSET(core as usize, &set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(s: &str) -> Vec<u32> {
        CpuMask::parse(s).unwrap().cores().to_vec()
    }

    #[test]
    fn hex_forms() {
        assert_eq!(cores("0x3"), [0, 1]);
        assert_eq!(cores("0X3"), [0, 1]);
        assert_eq!(cores("3"), [0, 1]);
        assert_eq!(cores("0x5"), [0, 2]);
        assert_eq!(cores("0x10"), [4]);
        assert_eq!(cores("0xF0"), [4, 5, 6, 7]);
        assert_eq!(cores("0xa"), [1, 3]);
        assert_eq!(cores(" 0x1 "), [0]);
        assert_eq!(cores("0x0001"), [0]);
        assert_eq!(cores("0x100000000"), [32]);
    }

    #[test]
    fn list_forms() {
        assert_eq!(cores("[0,2]"), [0, 2]);
        assert_eq!(cores("[0-3,6]"), [0, 1, 2, 3, 6]);
        assert_eq!(cores("[5]"), [5]);
        assert_eq!(cores("[ 1 , 0 ]"), [0, 1]);
        assert_eq!(cores("[2-2]"), [2]);
        assert_eq!(cores("[0-2,1-3]"), [0, 1, 2, 3]);
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "",
            "0x",
            "0xg",
            "zz",
            "-1",
            "[",
            "[0",
            "0]",
            "[a]",
            "[1-]",
            "[-1]",
            "[3-1]",
            "[0,,1]",
            "[0;1]",
            "[+1]",
            "[1-2-3]",
            "[4096]",
            "[0-99999999999]",
        ] {
            assert_eq!(
                CpuMask::parse(bad),
                Err(CpuMaskError::Syntax(bad.to_string())),
                "input {bad:?}"
            );
        }
        // A bit past MAX_CORES (digit 1025 from the right).
        let huge = format!("0x1{}", "0".repeat(1024));
        assert!(matches!(
            CpuMask::parse(&huge),
            Err(CpuMaskError::Syntax(_))
        ));
    }

    #[test]
    fn empty_masks() {
        for empty in ["0x0", "0", "000", "[]", "[ ]"] {
            assert_eq!(
                CpuMask::parse(empty),
                Err(CpuMaskError::Empty(empty.to_string()))
            );
        }
    }

    #[test]
    fn validation_names_usable_cores() {
        let mask = CpuMask::parse("[0,2,5]").unwrap();
        assert_eq!(mask.validate_against(&[0, 1, 2, 5]), Ok(()));
        assert_eq!(
            mask.validate_against(&[0, 1, 2, 3]),
            Err(CpuMaskError::NoSuchCore {
                core: 5,
                usable: "0-3".into()
            })
        );
        let err = mask.validate_against(&[0, 3, 4, 6]).unwrap_err();
        assert_eq!(
            err,
            CpuMaskError::NoSuchCore {
                core: 2,
                usable: "0,3-4,6".into()
            }
        );
        assert!(err.to_string().contains("usable cores: 0,3-4,6"), "{err}");
    }

    #[test]
    fn validate_against_process_affinity() {
        let usable = usable_cores();
        assert!(!usable.is_empty());
        let first = usable[0];
        let ok = CpuMask::parse_and_validate(&format!("[{first}]")).unwrap();
        assert_eq!(ok.cores(), [first]);
        let missing = MAX_CORES - 1;
        assert!(!usable.contains(&missing));
        match CpuMask::parse_and_validate(&format!("[{first},{missing}]")) {
            Err(CpuMaskError::NoSuchCore { core, usable: list }) => {
                assert_eq!(core, missing);
                assert_eq!(list, format_list(&usable));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Syntax errors are reported before validation.
        assert!(matches!(
            CpuMask::parse_and_validate("[x]"),
            Err(CpuMaskError::Syntax(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["[0-3,6]", "0x5", "[7]"] {
            let mask = CpuMask::parse(s).unwrap();
            assert_eq!(CpuMask::parse(&mask.to_string()).unwrap(), mask);
        }
        assert_eq!(CpuMask::parse("0xF1").unwrap().to_string(), "[0,4-7]");
    }
}
