//! Logging set-up: info by default, `-L COMPONENT` turns on debug for one crate.

/// Map a `-L` component name to the module path prefix it enables.
fn component_target(flag: &str) -> Option<&'static str> {
    match flag {
        "reactor" => Some("keel_reactor"),
        "rpc" => Some("keel_rpc"),
        "bdev" => Some("keel_bdev"),
        "tgt" | "app" => Some("keel_tgt"),
        _ => None,
    }
}

/// Build the env_logger filter string for the given `-L` flags.
pub fn filter_for(flags: &[String]) -> String {
    let mut filter = String::from("info");
    for flag in flags {
        if flag == "all" {
            filter.push_str(",keel_reactor=debug,keel_rpc=debug,keel_bdev=debug,keel_tgt=debug");
        } else if let Some(target) = component_target(flag) {
            filter.push_str(&format!(",{target}=debug"));
        } else {
            eprintln!("keel-tgt: unknown log flag -L {flag} (known: reactor, rpc, bdev, tgt, all)");
        }
    }
    filter
}

/// Initialise the global logger (RUST_LOG, when set, wins over `-L`).
pub fn init(flags: &[String]) {
    let env = env_logger::Env::default().default_filter_or(filter_for(flags));
    env_logger::Builder::from_env(env)
        .format_timestamp_micros()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_crate_filters() {
        assert_eq!(filter_for(&[]), "info");
        assert_eq!(filter_for(&["bdev".into()]), "info,keel_bdev=debug");
        assert!(filter_for(&["all".into()]).contains("keel_reactor=debug"));
        assert_eq!(filter_for(&["nope".into()]), "info");
    }
}
