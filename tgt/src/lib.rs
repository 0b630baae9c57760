//! Shared by the `keel-tgt` and `keel-rpc` binaries: the crates whose RPC methods, config
//! subsystems and transports the target serves, and the embedded default configuration.

/// The configuration `keel-tgt` runs when started without `-c` (and without `--no-default`):
/// a 1 GiB malloc namespace at [`DEFAULT_NQN`] on NVMe/TCP 127.0.0.1:4420.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.json");

/// The subsystem NQN of the embedded default configuration.
pub const DEFAULT_NQN: &str = "nqn.2016-06.io.keel:default";

/// Register every crate's RPC methods, config subsystems and transports, in config replay
/// order (a subsystem comes after those it depends on: bdev before nvmf).
pub fn register_rpcs() {
    keel_rpc::register_builtin_methods();
    keel_bdev::rpc::register();
    keel_raid::register_rpcs();
    keel_nvmf::register_rpcs();
    keel_nvmf::tcp::register();
    keel_rdma::transport::register();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_json_naming_the_default_nqn() {
        let v: serde_json::Value = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        let text = v.to_string();
        assert!(text.contains(DEFAULT_NQN));
        assert!(text.contains("\"trsvcid\":\"4420\""));
        assert_eq!(
            v["subsystems"][0]["subsystem"], "bdev",
            "bdevs replay before nvmf"
        );
    }
}
