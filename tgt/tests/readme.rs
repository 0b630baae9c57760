//! The README's `keel-tgt` tables are the `--help` of the binary, row for row: every flag clap
//! knows (short, long, value name, default) and every environment variable the target reads.
//! A flag added, renamed or given another default without the README fails here.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

#[allow(dead_code)]
#[path = "../src/args.rs"]
mod args;

use clap::{ArgAction, CommandFactory};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tgt/ is inside the repository")
        .to_path_buf()
}

/// The rows `(first cell, second cell)` of the first table after the heading `heading`,
/// without the header row; each cell's text between backticks when it is one code span.
fn table(readme: &str, heading: &str) -> Vec<(String, String)> {
    let start = readme
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"));
    let rows: Vec<&str> = readme
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(rows.len() > 2, "no table under {heading:?}");
    assert!(rows[1].starts_with("|---"), "{heading:?}: {}", rows[1]);
    rows[2..]
        .iter()
        .map(|r| {
            let cells: Vec<&str> = r.trim_matches('|').splitn(2, " | ").collect();
            assert_eq!(cells.len(), 2, "a row of two cells: {r}");
            let first = cells[0].trim();
            let first = first
                .strip_prefix('`')
                .and_then(|f| f.strip_suffix('`'))
                .unwrap_or_else(|| panic!("first cell in backticks: {r}"));
            (first.to_string(), cells[1].trim().to_string())
        })
        .collect()
}

/// How clap's `--help` heads each flag, without the angle brackets: `-m, --cpumask MASK`.
fn flag_cell(a: &clap::Arg) -> String {
    let mut s = String::new();
    if let Some(c) = a.get_short() {
        s.push_str(&format!("-{c}, "));
    }
    s.push_str(&format!(
        "--{}",
        a.get_long().expect("every flag has a long name")
    ));
    if matches!(a.get_action(), ArgAction::Set | ArgAction::Append) {
        let names = a
            .get_value_names()
            .expect("a value-taking flag has a value name");
        for n in names {
            s.push_str(&format!(" {n}"));
        }
    }
    s
}

#[test]
fn readme_flags_table_is_keel_tgt_help() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let rows = table(&readme, "## keel-tgt flags");
    let mut cmd = args::Args::command();
    cmd.build();
    let flags: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    let want: Vec<String> = flags.iter().map(|a| flag_cell(a)).collect();
    let have: Vec<String> = rows.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        have, want,
        "README's keel-tgt flags table (left) is not `keel-tgt --help` (right), in order"
    );
    for (a, (cell, meaning)) in flags.iter().zip(&rows) {
        let takes_value = matches!(a.get_action(), ArgAction::Set | ArgAction::Append);
        let defaults = if takes_value && !a.is_hide_default_value_set() {
            a.get_default_values()
        } else {
            &[]
        };
        for d in defaults {
            let d = d.to_string_lossy();
            assert!(
                meaning.contains(&format!("(default `{d}`)")),
                "README row {cell}: --help's default is {d}, the row says: {meaning}"
            );
        }
        if defaults.is_empty() {
            assert!(
                !meaning.contains("(default `"),
                "README row {cell} names a default --help does not have: {meaning}"
            );
        }
    }
}

#[test]
fn readme_environment_table_is_keel_tgt_help() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let rows = table(&readme, "### Environment");
    let have: Vec<&str> = rows.iter().map(|(v, _)| v.as_str()).collect();
    let want: Vec<&str> = keel_tgt::environment::VARS.iter().map(|v| v.name).collect();
    assert_eq!(have, want, "README's Environment table vs keel-tgt --help");
    let help = args::Args::command().render_long_help().to_string();
    assert!(help.contains(&keel_tgt::environment::help()), "{help}");
}

/// Every `std::env::var`/`var_os` in the source of the crates keel-tgt is built from names a
/// variable listed in [`keel_tgt::environment::VARS`] (a literal, or a `const NAME: &str` of
/// the same file).
#[test]
fn every_variable_the_target_reads_is_in_help() {
    let root = repo();
    let mut read = BTreeSet::new();
    let crates = [
        "reactor",
        "rpc",
        "bdev",
        "raid",
        "nvmf-target",
        "rdma-transport",
        "tgt",
    ];
    let mut files = Vec::new();
    for c in crates {
        let mut dirs = vec![root.join(c).join("src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
    }
    assert!(files.len() > 50, "found the sources: {}", files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for pat in ["env::var(", "env::var_os("] {
            for (at, _) in text.match_indices(pat) {
                let arg: String = text[at + pat.len()..]
                    .chars()
                    .take_while(|&c| c != ')')
                    .collect();
                let arg = arg.trim();
                let name = if let Some(lit) = arg.strip_prefix('"') {
                    lit.trim_end_matches('"').to_string()
                } else {
                    let decl = format!("const {arg}: &str = \"");
                    let at = text.find(&decl).unwrap_or_else(|| {
                        panic!("{}: cannot resolve the variable name {arg}", f.display())
                    });
                    let rest = &text[at + decl.len()..];
                    rest[..rest.find('"').unwrap()].to_string()
                };
                read.insert(name);
            }
        }
    }
    let listed: BTreeSet<String> = keel_tgt::environment::VARS
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(
        read, listed,
        "variables read by the target's crates (left) vs keel-tgt --help's Environment (right)"
    );
}

/// The files and directories at the top of the repository (tracked by git, or on disk when this
/// is not a git checkout), without the ones every Rust repository has.
fn top_level_entries(root: &Path) -> BTreeSet<String> {
    let skip = [
        "README.md",
        "Cargo.toml",
        "Cargo.lock",
        ".gitignore",
        ".git",
        "target",
    ];
    let git = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    let names: Vec<String> = match git {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(|p| p.split('/').next().unwrap().to_string())
            .collect(),
        _ => std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    };
    names
        .into_iter()
        .filter(|n| !skip.contains(&n.as_str()))
        .collect()
}

#[test]
fn readme_layout_lists_every_crate_and_directory() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows = table(&readme, "## Layout");
    let listed: BTreeSet<String> = rows
        .iter()
        .map(|(e, _)| e.trim_end_matches('/').to_string())
        .collect();
    assert_eq!(
        listed,
        top_level_entries(&root),
        "README's Layout table (left) vs the repository's top level (right)"
    );
    let row = |dir: &str| -> &str {
        &rows
            .iter()
            .find(|(e, _)| e.trim_end_matches('/') == dir)
            .unwrap_or_else(|| panic!("Layout row for {dir}"))
            .1
    };
    // The workspace's members (the `members = [...]` list, on one line or several).
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let list = workspace
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("the workspace lists its members");
    let members: Vec<&str> = list
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.contains(&"bdev"), "members parsed: {members:?}");
    for m in &members {
        assert!(
            listed.contains(*m),
            "workspace member {m} in the Layout table"
        );
    }
    // Each crate (every member, and the fuzz crate outside the workspace) is named by its
    // package name.
    for dir in members.iter().copied().chain(["fuzz"]) {
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{dir}/Cargo.toml has a package name"));
        assert!(
            row(dir).starts_with(&format!("`{name}`")),
            "Layout row {dir}/ names the crate {name}: {}",
            row(dir)
        );
    }
    // The scripts users run are named in their directory's row.
    for dir in ["scripts", "perf"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".sh") {
                assert!(
                    row(dir).contains(&format!("`{name}`")),
                    "{dir}/{name} is named in the Layout row of {dir}/: {}",
                    row(dir)
                );
            }
        }
    }
}

/// Every `.rs` file of the repository below `dir` (build output and VCS data skipped).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            // Build output (cargo marks its target dirs with CACHEDIR.TAG), VCS data, fuzz data.
            let build_output = p.join("CACHEDIR.TAG").exists();
            if !build_output && !matches!(name.as_str(), ".git" | "corpus" | "artifacts") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Functions allowed past `clippy::too_many_lines` on 2026-12-08, when the lint came in. The
/// ratchet: this number only goes down (lower it when a function leaves the list).
const RATCHET_MAX: usize = 28;

#[test]
fn function_length_ratchet_is_the_architecture_list_and_only_shrinks() {
    let root = repo();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    // In the code: `path: fn` for each `#[allow(clippy::too_many_lines)]`.
    let mut in_code = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if !l
                .trim_start()
                .starts_with("#[allow(clippy::too_many_lines)]")
            {
                continue;
            }
            let name = lines[i + 1..]
                .iter()
                .find_map(|l| {
                    let (_, rest) = l.split_once("fn ")?;
                    Some(rest.split(['(', '<']).next()?.trim().to_string())
                })
                .unwrap_or_else(|| panic!("{}:{}: an allow without a fn", f.display(), i + 1));
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            in_code.insert(format!("{rel}: {name}"));
        }
    }
    // In docs/ARCHITECTURE.md: the list after "The function-length ratchet", one file a line:
    // "- `path`: `fn`, `fn`".
    let arch = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut in_doc = BTreeSet::new();
    let list = arch
        .lines()
        .skip_while(|l| !l.starts_with("The function-length ratchet"))
        .skip_while(|l| !l.starts_with("- `"))
        .take_while(|l| l.starts_with("- `"));
    for l in list {
        let (path, fns) = l[2..].split_once(": ").unwrap();
        for f in fns.split(", ") {
            in_doc.insert(format!(
                "{}: {}",
                path.trim_matches('`'),
                f.trim_matches('`')
            ));
        }
    }
    assert_eq!(
        in_code, in_doc,
        "the too_many_lines allows in the code (left) vs docs/ARCHITECTURE.md §3.7 (right)"
    );
    assert!(
        in_code.len() <= RATCHET_MAX,
        "{} functions over the length limit, the ratchet allows {RATCHET_MAX}: split the new one",
        in_code.len()
    );
}
