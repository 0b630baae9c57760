//! Command-line flags, SPDK-style where SPDK has the flag.

use clap::Parser;

/// Default JSON-RPC socket path (SPDK's is /var/tmp/spdk.sock).
pub const DEFAULT_RPC_SOCKET: &str = "/var/tmp/keel.sock";

/// keel-tgt: a polled-mode NVMe-oF storage target.
///
/// Starts one pinned reactor per core of the core mask and serves JSON-RPC (SPDK-compatible:
/// SPDK's rpc.py works with `-s SOCKET`) on a Unix socket. Stop it with SIGINT or SIGTERM
/// (or the `spdk_kill_instance` RPC): in-flight I/O is drained and the socket removed.
#[derive(Debug, Parser)]
#[command(name = "keel-tgt", version, about, long_about)]
pub struct Args {
    /// Cores to run reactors on: a hex mask (0x3) or a list ([0,1] or [0-3]). The first core
    /// also serves the control plane.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    pub cpumask: String,

    /// Path of the JSON-RPC Unix socket.
    #[arg(short = 'r', long = "rpc-socket", default_value = DEFAULT_RPC_SOCKET)]
    pub rpc_socket: String,

    /// JSON config file (SPDK format, as `save_config` writes it) replayed at start-up.
    /// Without it keel-tgt runs its embedded default: a 1 GiB malloc namespace at
    /// nqn.2016-06.io.keel:default on NVMe/TCP 127.0.0.1:4420 (see --print-default-config).
    #[arg(short = 'c', long = "config")]
    pub config: Option<String>,

    /// Start with nothing configured instead of the embedded default (when no -c is given).
    #[arg(long = "no-default", conflicts_with = "config")]
    pub no_default: bool,

    /// Print the embedded default configuration (a valid -c file) and exit.
    #[arg(long = "print-default-config")]
    pub print_default_config: bool,

    /// Enable debug logs for a component (reactor, rpc, bdev, or all); repeatable.
    /// RUST_LOG overrides everything, e.g. RUST_LOG=keel_bdev=trace.
    #[arg(short = 'L', long = "logflag")]
    pub logflag: Vec<String>,

    /// Let idle reactors sleep until a message, timer or socket wakes them (lower CPU use,
    /// higher latency), instead of busy polling.
    #[arg(long = "interrupt-mode")]
    pub interrupt_mode: bool,

    /// Upper bound on each core's I/O buffer pool, in MiB (in 2 MiB pages).
    #[arg(long = "pool-size-mb", default_value_t = 512, value_parser = clap::value_parser!(u64).range(2..))]
    pub pool_size_mb: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_like_spdk() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "keel-tgt",
            "-m",
            "[0,1]",
            "-r",
            "/tmp/x.sock",
            "-c",
            "c.json",
            "-L",
            "bdev",
            "-L",
            "rpc",
            "--interrupt-mode",
        ])
        .unwrap();
        assert_eq!(a.cpumask, "[0,1]");
        assert_eq!(a.rpc_socket, "/tmp/x.sock");
        assert_eq!(a.config.as_deref(), Some("c.json"));
        assert_eq!(a.logflag, ["bdev", "rpc"]);
        assert!(a.interrupt_mode);
        let d = Args::try_parse_from(["keel-tgt"]).unwrap();
        assert_eq!(d.cpumask, "0x1");
        assert_eq!(d.rpc_socket, DEFAULT_RPC_SOCKET);
        assert!(Args::try_parse_from(["keel-tgt", "--pool-size-mb", "1"]).is_err());
    }
}
