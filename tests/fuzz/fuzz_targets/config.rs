//! Config files: any bytes, as the daemon reads them (UTF-8 first, then TOML and every
//! check). Must never panic; an accepted config must hold what the checks promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop_dataplane::config::{Config, MAX_ECMP_NEXTHOPS, RouteAction};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse("fuzz.toml", text) else {
        return;
    };
    assert!(!config.interfaces.is_empty());
    for route in &config.routes {
        assert_eq!(route.prefix, route.prefix.trunc(), "host bits in {}", route.prefix);
        if let RouteAction::Nexthops(ids) = &route.action {
            assert!(!ids.is_empty() && ids.len() <= MAX_ECMP_NEXTHOPS);
            assert!(ids.iter().all(|&i| i < config.nexthops.len()));
        }
    }
    for nexthop in &config.nexthops {
        assert!(config.interfaces.iter().any(|i| i.name == nexthop.dev));
    }
});
