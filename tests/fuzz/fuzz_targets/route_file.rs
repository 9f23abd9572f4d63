//! Route files (`route load`): any text. Must never panic; every route it accepts must
//! print back as a line that parses to the same route.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop_dataplane::config::route_spec::{RouteSpec, parse_lines};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_lines("fuzz.routes", text, &mut |_| {}) {
        Ok(routes) => {
            for (_, spec) in routes {
                let line = spec.to_string();
                assert_eq!(RouteSpec::parse(&line).as_ref(), Ok(&spec), "{line}");
            }
        }
        Err(error) => {
            assert!(!error.lines.is_empty(), "an error names a line");
            assert!(error.lines.iter().all(|line| line.file == "fuzz.routes"), "{error}");
            assert!(error.to_string().starts_with("fuzz.routes:"), "{error}");
        }
    }
});
