//! `keel-rpc`: the command-line JSON-RPC client for keel-tgt (rpc.py-style arguments).
//! It registers the same methods the target does, so `keel-rpc METHOD --help` works offline.

fn main() {
    keel_tgt::register_rpcs();
    std::process::exit(keel_rpc::cli::main_with(&keel_rpc::method_specs()));
}
