//! The environment variables `keel-tgt` reads: one list, [`VARS`], that `--help` shows in its
//! "Environment" section ([`help`]) and that the README's table is checked against
//! (`tgt/tests/readme.rs`, which also checks that every variable the target's crates read is
//! listed here).

/// One environment variable `keel-tgt` reads.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// Its name.
    pub name: &'static str,
    /// What it does, one sentence (shown in `--help` and the README).
    pub help: &'static str,
}

/// Every environment variable `keel-tgt` reads, in the order `--help` lists them.
pub const VARS: &[EnvVar] = &[
    EnvVar {
        name: "RUST_LOG",
        help: "base log filter at start-up instead of the `info` level (env_logger syntax, e.g. \
               `RUST_LOG=keel_bdev=trace` or `RUST_LOG=warn`); -L flags still add their debug \
               messages; a later log_set_level replaces it",
    },
    EnvVar {
        name: keel_rdma::ffi::rdma_core::LIBDIR_ENV,
        help: "directory to load rdma-core's libibverbs.so.1 and librdmacm.so.1 from, instead \
               of the dynamic linker's search path (an rdma-core built from source); read when \
               RDMA is first asked for",
    },
];

/// The "Environment" section of `keel-tgt --help`: one line per variable of [`VARS`].
pub fn help() -> String {
    let width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut s = String::from("Environment:\n");
    for v in VARS {
        s.push_str(&format!("  {:width$}  {}\n", v.name, v.help));
    }
    s.pop();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_variable_once() {
        let h = help();
        assert!(h.starts_with("Environment:\n"), "{h}");
        assert_eq!(h.lines().count(), VARS.len() + 1, "{h}");
        for (line, v) in h.lines().skip(1).zip(VARS) {
            assert!(line.trim_start().starts_with(v.name), "{line}");
            assert!(line.ends_with(v.help), "{line}");
        }
        assert!(h.contains("KEEL_RDMA_CORE_LIBDIR") && h.contains("RUST_LOG"));
    }
}
