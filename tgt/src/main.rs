//! `keel-tgt`: the Keel storage target.
//!
//! Start-up: parse flags, set up logging, block the termination signals (so only the main
//! thread receives them), start one reactor per core of the mask, and on the main core register
//! every RPC method, start the JSON-RPC server and replay the `-c` config. The main thread then
//! waits for SIGINT/SIGTERM and runs the clean shutdown: RPC socket closed and removed, every bdev
//! unregistered (in-flight I/O drained), reactors stopped.

mod app;
mod args;
mod signals;

use clap::Parser;

fn main() {
    let args = args::Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("keel-tgt: {e}");
        std::process::exit(2);
    }
    if args.print_default_config {
        if args.listen.is_empty() {
            print!("{}", keel_tgt::DEFAULT_CONFIG);
        } else {
            let config = keel_tgt::default_config(&args.listen);
            println!(
                "{}",
                serde_json::to_string_pretty(&config).expect("a JSON value serialises")
            );
        }
        return;
    }
    if let Err(e) = keel_tgt::logging::init(&args.logflag) {
        // clap refuses unknown flags first; this guards the library entry point too.
        eprintln!("keel-tgt: -L: {e}");
        std::process::exit(2);
    }
    std::process::exit(app::run(args));
}
