//! Command-line flags, SPDK-style where SPDK has the flag.

use clap::Parser;
use std::net::SocketAddr;

/// Default JSON-RPC socket path (SPDK's is /var/tmp/spdk.sock).
pub const DEFAULT_RPC_SOCKET: &str = "/var/tmp/keel.sock";

/// keel-tgt: a polled-mode NVMe-oF storage target.
///
/// Starts one pinned reactor per core of the core mask and serves JSON-RPC (SPDK-compatible:
/// SPDK's rpc.py works with `-s SOCKET`) on a Unix socket. Stop it with SIGINT or SIGTERM
/// (or the `spdk_kill_instance` RPC): in-flight I/O is drained and the socket removed.
#[derive(Debug, Parser)]
#[command(name = "keel-tgt", version, about, long_about, after_help = keel_tgt::environment::help())]
pub struct Args {
    /// Cores to run reactors on: a hex mask (0x3) or a list ([0,1] or [0-3]). The first core
    /// also serves the control plane.
    #[arg(
        short = 'm',
        long = "cpumask",
        value_name = "MASK",
        default_value = "0x1"
    )]
    pub cpumask: String,

    /// Path of the JSON-RPC Unix socket.
    #[arg(short = 'r', long = "rpc-socket", value_name = "PATH", default_value = DEFAULT_RPC_SOCKET)]
    pub rpc_socket: String,

    /// JSON config file (SPDK format, as `save_config` writes it) replayed at start-up.
    /// Without it keel-tgt runs its embedded default: a 1 GiB malloc namespace at
    /// nqn.2016-06.io.keel:default on NVMe/TCP 127.0.0.1:4420 (see --print-default-config).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<String>,

    /// Start with nothing configured instead of the embedded default (when no -c is given).
    #[arg(long = "no-default", conflicts_with = "config")]
    pub no_default: bool,

    /// Where the embedded default namespace listens (NVMe/TCP), instead of 127.0.0.1:4420:
    /// ADDR:PORT, IPv6 in brackets ([::1]:4420); repeatable for several listeners. Only for the
    /// embedded default (a -c file names its own listeners).
    #[arg(long = "listen", value_name = "ADDR:PORT", value_parser = keel_tgt::parse_listen_addr,
          conflicts_with_all = ["config", "no_default"])]
    pub listen: Vec<SocketAddr>,

    /// Print the embedded default configuration (a valid -c file, with the --listen
    /// addresses) and exit.
    #[arg(long = "print-default-config")]
    pub print_default_config: bool,

    /// Start only the JSON-RPC server, in SPDK's startup state (log_*, rpc_get_methods,
    /// framework_* ...), and initialise (replay -c or the embedded default) when
    /// framework_start_init is called.
    #[arg(long = "wait-for-rpc")]
    pub wait_for_rpc: bool,

    /// Turn on a log flag: the debug messages of one component (SPDK's flag names); repeatable.
    /// log_set_flag / log_clear_flag change them at run time. RUST_LOG, when set, replaces
    /// the info level as the base filter (e.g. RUST_LOG=keel_bdev=trace).
    #[arg(short = 'L', long = "logflag", value_name = "FLAG",
          value_parser = keel_tgt::logging::flag_value_parser())]
    pub logflag: Vec<String>,

    /// Let idle reactors sleep until a message, timer or socket wakes them (lower CPU use,
    /// higher latency), instead of busy polling.
    #[arg(long = "interrupt-mode")]
    pub interrupt_mode: bool,

    /// Upper bound on each core's I/O buffer pool, in MiB (in 2 MiB pages).
    #[arg(long = "pool-size-mb", value_name = "MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(2..))]
    pub pool_size_mb: u64,
}

impl Args {
    /// Checks across flags that clap cannot express: a `--listen` address given twice.
    pub fn validate(&self) -> Result<(), String> {
        for (i, addr) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(addr) {
                return Err(format!("--listen {addr} is given twice"));
            }
        }
        Ok(())
    }
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
        assert!(d.listen.is_empty() && !d.wait_for_rpc);
    }

    #[test]
    fn log_flags_are_spdk_names_and_unknown_ones_are_refused_with_the_list() {
        let a = Args::try_parse_from(["keel-tgt", "-L", "nvmf", "-L", "bdev_raid", "-L", "all"])
            .unwrap();
        assert_eq!(a.logflag, ["nvmf", "bdev_raid", "all"]);
        let err = Args::try_parse_from(["keel-tgt", "-L", "nvmf2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nvmf2"), "{err}");
        for name in keel_tgt::logging::flag_names() {
            assert!(err.contains(name), "{name} listed in: {err}");
        }
        let help = Args::command().render_long_help().to_string();
        for f in keel_tgt::logging::FLAGS {
            assert!(
                help.contains(f.name) && help.contains(f.help),
                "{} in --help",
                f.name
            );
        }
    }

    #[test]
    fn listen_is_repeatable_validated_and_only_for_the_default() {
        let a = Args::try_parse_from([
            "keel-tgt",
            "--listen",
            "127.0.0.1:5401",
            "--listen",
            "[::1]:5402",
        ])
        .unwrap();
        assert_eq!(
            a.listen,
            [
                "127.0.0.1:5401".parse::<SocketAddr>().unwrap(),
                "[::1]:5402".parse().unwrap()
            ]
        );
        let err = Args::try_parse_from(["keel-tgt", "--listen", "::1:4420"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("IPv6 in brackets"), "{err}");
        for other in [["-c", "x.json"], ["--no-default", ""]] {
            let mut argv = vec!["keel-tgt", "--listen", "127.0.0.1:5401"];
            argv.extend(other.iter().filter(|s| !s.is_empty()));
            let err = Args::try_parse_from(&argv).unwrap_err().to_string();
            assert!(err.contains("cannot be used with"), "{argv:?}: {err}");
        }
        let twice = Args::try_parse_from([
            "keel-tgt",
            "--listen",
            "127.0.0.1:5401",
            "--listen",
            "127.0.0.1:5401",
        ])
        .unwrap();
        assert!(twice.validate().unwrap_err().contains("given twice"));
        assert!(a.validate().is_ok());
        assert!(
            Args::try_parse_from(["keel-tgt", "--wait-for-rpc", "--listen", "[::1]:5402"])
                .unwrap()
                .wait_for_rpc
        );
    }
}
