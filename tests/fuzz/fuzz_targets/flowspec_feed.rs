//! Lines of ExaBGP's JSON API output, as `pop-dataplane flowspec-feed` reads them: any bytes.
//! Must never panic; every route turned into a rule prints back as words that parse to the
//! same rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop_dataplane::config::{
    flow_rule::FlowRule,
    flowspec_feed::{FeedEvent, parse_line},
};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(FeedEvent::Announce { routes, .. }) = parse_line(line) {
        for (_, rule) in routes {
            if let Ok(rule) = rule {
                assert_eq!(rule.to_string().parse::<FlowRule>(), Ok(rule));
            }
        }
    }
});
