//! `keel-perf`: benchmark Keel's block stack. See `keel-perf --help` and perf/README.md.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = keel_perf::cli::Args::parse();
    std::process::exit(keel_perf::app::run(args));
}
