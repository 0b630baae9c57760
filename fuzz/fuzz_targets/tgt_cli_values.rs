//! Fuzz keel-tgt's command-line value parsers with arbitrary text: `--listen ADDR:PORT`, the
//! `-L`/`log_set_flag` flag names and the SPDK level names. None may panic; an accepted listen
//! address must have a port, and the default config built from it must name exactly that
//! address (parsing back to it); an accepted flag must clear again; an accepted level must
//! print back to a name that parses to itself.

#![no_main]

use keel_tgt::logging::{self, SpdkLevel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = keel_tgt::parse_listen_addr(text) {
        assert_ne!(addr.port(), 0);
        let config = keel_tgt::default_config(&[addr]);
        let listeners: Vec<_> = config["subsystems"]
            .as_array()
            .expect("the default config lists its subsystems")
            .iter()
            .flat_map(|s| {
                s["config"]
                    .as_array()
                    .expect("each subsystem lists its calls")
            })
            .filter(|c| c["method"] == "nvmf_subsystem_add_listener")
            .collect();
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0]["params"]["listen_address"];
        let ip: std::net::IpAddr = l["traddr"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("the listener's traddr is an IP address");
        let port: u16 = l["trsvcid"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("the listener's trsvcid is a port");
        assert_eq!((ip, port), (addr.ip(), addr.port()));
        assert_eq!(l["adrfam"] == "IPv4", addr.is_ipv4());
    }
    if logging::set_flag(text).is_ok() {
        assert!(text == logging::ALL || logging::flag_names().any(|n| n == text));
        logging::clear_flag(text).expect("a flag that could be set can be cleared");
    }
    if let Some(level) = SpdkLevel::parse(text) {
        assert_eq!(SpdkLevel::parse(level.name()), Some(level));
    }
});
