//! perf/README.md's option list names every flag of `keel-perf --help` (a flag added without
//! its line in the README fails here), and names no flag keel-perf does not have.

use std::collections::BTreeSet;
use std::process::Command;

/// The `--long` flags in `text` (a flag is `--` then lowercase letters and `-`).
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at + 2;
        let end = start
            + b[start..]
                .iter()
                .take_while(|c| c.is_ascii_lowercase() || **c == b'-')
                .count();
        let name = text[start..end].trim_end_matches('-');
        let before = if i + at == 0 { b' ' } else { b[i + at - 1] };
        if name.len() > 1 && !before.is_ascii_alphanumeric() && before != b'-' {
            flags.insert(name.to_string());
        }
        i = end.max(start);
    }
    flags
}

#[test]
fn readme_options_name_every_keel_perf_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_keel-perf"))
        .arg("--help")
        .output()
        .expect("run keel-perf --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // (short, long) of every flag: `-q, --queue-depth <QUEUE_DEPTH>` or `--verify`.
    let flags: Vec<(Option<char>, String)> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            let at = l.find("--")?;
            let short = l
                .strip_prefix('-')
                .and_then(|r| r.chars().next())
                .filter(|c| c.is_ascii_alphabetic() && at > 0);
            let name: String = l[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            Some((short, name))
        })
        .filter(|(_, n)| n != "help" && n != "version")
        .collect();
    assert!(flags.len() > 20, "parsed --help: {flags:?}");
    let have: BTreeSet<String> = flags.iter().map(|(_, n)| n.clone()).collect();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let named = long_flags(&readme);
    let missing: Vec<_> = flags
        .iter()
        .filter(|(short, long)| {
            !named.contains(long) && !short.is_some_and(|c| readme.contains(&format!("`-{c}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "perf/README.md does not name {missing:?}"
    );
    // Flags the README uses for keel-perf that it does not have. The README also shows other
    // tools' flags (fio's, keel-tgt's, perf's, compare-fio.sh's): those are listed here.
    let others = [
        // fio's
        "name",
        "ioengine",
        "rw",
        "bs",
        "iodepth",
        "size",
        "runtime",
        "cpus",
        "direct",
        "output-format",
        // perf report's, cargo's, keel-tgt's, compare-fio.sh's, an example program's
        "no-children",
        "sort",
        "release",
        "print-default-config",
        "interrupt-mode",
        "no-default",
        "short",
        "help",
    ];
    let unknown: Vec<_> = named
        .iter()
        .filter(|f| !have.contains(*f) && !others.contains(&f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "perf/README.md names flags keel-perf lacks: {unknown:?}"
    );
}
