//! The words of `route add`, `acl add` and `flow add`, as the CLI passes them on: any words. Must never
//! panic; what is accepted prints back as words that parse to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop_dataplane::config::{DenyRule, flow_rule::FlowRule, route_spec::RouteSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if let Ok(rule) = DenyRule::parse(&words) {
        let again: Vec<String> = rule.to_string().split(' ').map(str::to_owned).collect();
        assert_eq!(DenyRule::parse(&again), Ok(rule));
    }
    if let Ok(rule) = FlowRule::parse(&words) {
        assert_eq!(rule.to_string().parse::<FlowRule>(), Ok(rule));
    }
    if let Ok(spec) = RouteSpec::parse(&words.join(" ")) {
        assert_eq!(RouteSpec::parse(&spec.to_string()), Ok(spec));
    }
});
