//! `keel-tgt`: the Keel storage target.
//!
//! Start-up: parse flags, set up logging, block the termination signals (so only the main
//! thread receives them), start one reactor per core of the mask, and on the main core register
//! every RPC method, start the JSON-RPC server and replay the `-c` config. The main thread then
//! waits for SIGINT/SIGTERM and runs the clean shutdown: RPC socket closed and removed, every bdev
//! unregistered (in-flight I/O drained), reactors stopped.

mod app;
mod args;
mod logging;
mod signals;

use clap::Parser;

fn main() {
    let args = args::Args::parse();
    if args.print_default_config {
        print!("{}", keel_tgt::DEFAULT_CONFIG);
        return;
    }
    logging::init(&args.logflag);
    std::process::exit(app::run(args));
}
