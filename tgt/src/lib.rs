//! Shared by the `keel-tgt` and `keel-rpc` binaries: the crates whose RPC methods, config
//! subsystems and transports the target serves, and the embedded default configuration.

pub mod environment;
pub mod framework;
mod log_rpc;
pub mod logging;

use serde_json::{json, Value};
use std::net::SocketAddr;

/// The configuration `keel-tgt` runs when started without `-c` (and without `--no-default`):
/// a 1 GiB malloc namespace at [`DEFAULT_NQN`] on NVMe/TCP 127.0.0.1:4420 (`--listen` replaces
/// the listener: [`default_config`]).
pub const DEFAULT_CONFIG: &str = include_str!("default_config.json");

/// The subsystem NQN of the embedded default configuration.
pub const DEFAULT_NQN: &str = "nqn.2016-06.io.keel:default";

/// The listener of the embedded default configuration when no `--listen` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4420";

/// Parse a `--listen` value: `ADDR:PORT`, an IPv4 or IPv6 address (IPv6 in brackets, e.g.
/// `[::1]:4420`) and a non-zero port. Host names are not resolved (SPDK's `traddr` is an address).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not ADDR:PORT: give an IP address and a port, e.g. 127.0.0.1:4420, \
             0.0.0.0:4420 or [::1]:4420 (IPv6 in brackets; host names are not resolved)"
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0 cannot be connected to; give a port"));
    }
    if let SocketAddr::V6(v6) = addr {
        if v6.scope_id() != 0 {
            return Err(format!(
                "{s:?}: IPv6 scope ids (%...) are not supported by NVMe-oF listeners"
            ));
        }
    }
    Ok(addr)
}

/// The embedded default configuration with its listener replaced by one per `listen` address
/// (in order); with none, [`DEFAULT_CONFIG`] as it is (listening on [`DEFAULT_LISTEN`]).
pub fn default_config(listen: &[SocketAddr]) -> Value {
    let mut config: Value =
        serde_json::from_str(DEFAULT_CONFIG).expect("embedded default config is JSON");
    if listen.is_empty() {
        return config;
    }
    let nvmf = config["subsystems"]
        .as_array_mut()
        .and_then(|subs| subs.iter_mut().find(|s| s["subsystem"] == "nvmf"))
        .and_then(|s| s["config"].as_array_mut())
        .expect("the embedded default config has an nvmf subsystem");
    let at = nvmf
        .iter()
        .position(|c| c["method"] == "nvmf_subsystem_add_listener")
        .expect("the embedded default config has a listener");
    let template = nvmf.remove(at);
    for (i, addr) in listen.iter().enumerate() {
        let mut call = template.clone();
        call["params"]["listen_address"] = json!({
            "trtype": "TCP",
            "adrfam": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
            "traddr": addr.ip().to_string(),
            "trsvcid": addr.port().to_string(),
        });
        nvmf.insert(at + i, call);
    }
    config
}

/// The `nvme connect` command line that reaches the default namespace at `addr`.
pub fn default_connect_hint(addr: &SocketAddr) -> String {
    format!(
        "nvme connect -t tcp -a {} -s {} -n {DEFAULT_NQN}",
        addr.ip(),
        addr.port()
    )
}

/// Register every crate's RPC methods, config subsystems and transports, in config replay
/// order (a subsystem comes after those it depends on: bdev before nvmf).
pub fn register_rpcs() {
    keel_rpc::register_builtin_methods();
    keel_bdev::rpc::register();
    keel_lvol::register_rpcs();
    keel_raid::register_rpcs();
    keel_nvmf::register_rpcs();
    keel_nvmf::tcp::register();
    keel_rdma::transport::register();
    log_rpc::register();
    framework::register();
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
        assert_eq!(
            default_config(&[]),
            v,
            "no --listen: the embedded text as is"
        );
        assert!(text.contains(&format!(
            "\"trsvcid\":\"{}\"",
            DEFAULT_LISTEN.rsplit(':').next().unwrap()
        )));
    }

    #[test]
    fn listen_addresses_parse_with_clear_errors() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:5401").unwrap(),
            "127.0.0.1:5401".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_listen_addr("[::1]:4420").unwrap().is_ipv6());
        assert!(parse_listen_addr("0.0.0.0:4420").is_ok());
        for bad in [
            "",
            "127.0.0.1",
            "::1:4420",
            "localhost:4420",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "1.2.3:4420",
            "[::1]",
        ] {
            let err = parse_listen_addr(bad).unwrap_err();
            assert!(err.contains("ADDR:PORT"), "{bad}: {err}");
        }
        assert!(parse_listen_addr("127.0.0.1:0")
            .unwrap_err()
            .contains("port 0"));
        assert!(parse_listen_addr("[fe80::1%2]:4420")
            .unwrap_err()
            .contains("scope"));
    }

    #[test]
    fn listen_addresses_replace_the_default_listener_in_order() {
        let addrs = [
            parse_listen_addr("127.0.0.1:5401").unwrap(),
            parse_listen_addr("[::1]:5402").unwrap(),
        ];
        let cfg = default_config(&addrs);
        let nvmf = cfg["subsystems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subsystem"] == "nvmf")
            .unwrap();
        let listeners: Vec<&Value> = nvmf["config"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["method"] == "nvmf_subsystem_add_listener")
            .collect();
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[0]["params"],
            json!({"nqn": DEFAULT_NQN, "listen_address":
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "5401"}})
        );
        assert_eq!(
            listeners[1]["params"]["listen_address"],
            json!({"trtype": "TCP", "adrfam": "IPv6", "traddr": "::1", "trsvcid": "5402"})
        );
        assert!(
            !cfg.to_string().contains("4420"),
            "the default listener is gone"
        );
        assert_eq!(
            nvmf["config"].as_array().unwrap().last().unwrap()["method"],
            "nvmf_subsystem_add_listener",
            "listeners still come after the namespace"
        );
        assert_eq!(
            default_connect_hint(&addrs[1]),
            format!("nvme connect -t tcp -a ::1 -s 5402 -n {DEFAULT_NQN}")
        );
    }
}
