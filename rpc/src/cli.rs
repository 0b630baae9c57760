//! The `keel-rpc` command-line client: rpc.py-style arguments or raw JSON.
