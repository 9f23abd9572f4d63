//! FlowSpec routes as ExaBGP's process API hands them over (`encoder json`: one JSON object
//! per line): a session's state changes, and UPDATEs announcing or withdrawing flow routes,
//! turned into [`FlowRule`]s. The feed (`pop-dataplane flowspec-feed`) keeps each session's
//! rules and hands them to the daemon.
//!
//! A route's match comes from its components (ExaBGP's names: `destination-ipv4`,
//! `next-header`, ...; each a list of terms, ORed, a term's `&` an AND); its action from the
//! UPDATE's extended communities (RFC 8955 section 7): `rate-limit:0` drops, `rate-limit:N`
//! limits to N bytes a second, `mark D` remarks DSCP D; none accepts. Redirects and
//! traffic-action (sample, terminal) are not supported: a route carrying a redirect is
//! refused, traffic-action is ignored.

use serde_json::Value;

use super::flow_rule::{FlowRule, FlowRuleError};

/// What one line from ExaBGP says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// The session with `session` (the peer's address) is established.
    Up { session: String },
    /// The session went down: its routes are gone.
    Down { session: String },
    /// Routes announced (or re-announced), each with its key (ExaBGP's text of the match,
    /// which the withdrawal repeats) and the rule, or why it cannot be one.
    Announce {
        session: String,
        routes: Vec<(String, Result<FlowRule, FeedError>)>,
    },
    /// Routes withdrawn, by key.
    Withdraw { session: String, keys: Vec<String> },
    /// Anything else (keepalives, other families, notifications): nothing to do.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("not a JSON object from ExaBGP: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
    #[error("unsupported component {0:?}")]
    Component(String),
    #[error("IPv6 prefix {0} has an offset: offsets are not supported")]
    Offset(String),
    #[error("unsupported action {0:?} (only traffic-rate and traffic-marking are)")]
    Action(String),
    #[error(transparent)]
    Rule(#[from] FlowRuleError),
}

/// Reads one line of ExaBGP's JSON output.
pub fn parse_line(line: &str) -> Result<FeedEvent, FeedError> {
    let message: Value =
        serde_json::from_str(line).map_err(|err| FeedError::Json(err.to_string()))?;
    let shape = |what: &str| FeedError::Shape(format!("no {what} in {line:.200}"));
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("type"))?;
    let neighbor = message.get("neighbor");
    let session = || {
        neighbor
            .and_then(|n| n.pointer("/address/peer"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| shape("neighbor address"))
    };
    match kind {
        "state" => {
            let state = neighbor
                .and_then(|n| n.get("state"))
                .and_then(Value::as_str)
                .ok_or_else(|| shape("state"))?;
            Ok(match state {
                "up" => FeedEvent::Up {
                    session: session()?,
                },
                "down" => FeedEvent::Down {
                    session: session()?,
                },
                _ => FeedEvent::Other,
            })
        }
        "update" => {
            let Some(update) = neighbor.and_then(|n| n.pointer("/message/update")) else {
                return Ok(FeedEvent::Other);
            };
            if let Some(withdraw) = update.get("withdraw") {
                let mut keys = Vec::new();
                for family in ["ipv4 flow", "ipv6 flow"] {
                    for route in withdraw
                        .get(family)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        keys.push(route_key(route).ok_or_else(|| shape("route string"))?);
                    }
                }
                if !keys.is_empty() {
                    return Ok(FeedEvent::Withdraw {
                        session: session()?,
                        keys,
                    });
                }
            }
            let Some(announce) = update.get("announce") else {
                return Ok(FeedEvent::Other);
            };
            let action = action(update.get("attribute"));
            let mut routes = Vec::new();
            for family in ["ipv4 flow", "ipv6 flow"] {
                let Some(by_nexthop) = announce.get(family).and_then(Value::as_object) else {
                    continue;
                };
                for route in by_nexthop.values().filter_map(Value::as_array).flatten() {
                    let key = route_key(route).ok_or_else(|| shape("route string"))?;
                    let rule = action
                        .clone()
                        .and_then(|action| rule(family, route, &action));
                    routes.push((key, rule));
                }
            }
            if routes.is_empty() {
                return Ok(FeedEvent::Other);
            }
            Ok(FeedEvent::Announce {
                session: session()?,
                routes,
            })
        }
        _ => Ok(FeedEvent::Other),
    }
}

/// The text ExaBGP gives a route's match: the same in its announcement and withdrawal.
fn route_key(route: &Value) -> Option<String> {
    route
        .get("string")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The action words of an UPDATE's extended communities.
fn action(attributes: Option<&Value>) -> Result<String, FeedError> {
    let mut verdict = "accept".to_owned();
    let mut remark = None;
    let communities = attributes
        .and_then(|a| a.get("extended-community"))
        .and_then(Value::as_array);
    for community in communities.into_iter().flatten() {
        let Some(text) = community.get("string").and_then(Value::as_str) else {
            continue;
        };
        if let Some(rate) = text.strip_prefix("rate-limit:") {
            // Bytes a second, as a float (RFC 8955 7.1); 0 drops.
            let rate: f64 = rate
                .parse()
                .map_err(|_| FeedError::Action(text.to_owned()))?;
            verdict = if rate < 1.0 {
                "drop".to_owned()
            } else {
                format!("rate-limit {} bytes", rate.round() as u64)
            };
        } else if let Some(dscp) = text.strip_prefix("mark ") {
            remark = Some(dscp.to_owned());
        } else if text.starts_with("redirect") || text.starts_with("copy") {
            return Err(FeedError::Action(text.to_owned()));
        }
        // traffic-action (sample, terminal) and other communities: ignored.
    }
    Ok(match remark {
        Some(dscp) if verdict != "drop" => format!("{verdict} remark {dscp}"),
        _ => verdict,
    })
}

/// The rule of one announced route of `family`.
fn rule(family: &str, route: &Value, action: &str) -> Result<FlowRule, FeedError> {
    let object = route
        .as_object()
        .ok_or_else(|| FeedError::Shape("a route that is not an object".to_owned()))?;
    let mut words = vec![
        if family == "ipv4 flow" {
            "ipv4"
        } else {
            "ipv6"
        }
        .to_owned(),
    ];
    for (key, value) in object {
        if key == "string" {
            continue;
        }
        let terms: Vec<&str> = value
            .as_array()
            .map(|terms| terms.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let name = match key.as_str() {
            "destination-ipv4" | "destination-ipv6" => "destination",
            "source-ipv4" | "source-ipv6" => "source",
            "protocol" | "next-header" => "protocol",
            "port" | "destination-port" | "source-port" | "icmp-type" | "icmp-code"
            | "tcp-flags" | "packet-length" | "dscp" | "fragment" => key.as_str(),
            "traffic-class" => "dscp",
            other => return Err(FeedError::Component(other.to_owned())),
        };
        let value = if name == "destination" || name == "source" {
            let [prefix] = terms.as_slice() else {
                return Err(FeedError::Shape(format!("{key}: one prefix expected")));
            };
            // IPv6: PREFIX/LEN/OFFSET.
            match prefix.rsplit_once('/') {
                Some((net, offset)) if net.contains('/') => {
                    if offset != "0" {
                        return Err(FeedError::Offset((*prefix).to_owned()));
                    }
                    net.to_owned()
                }
                _ => (*prefix).to_owned(),
            }
        } else {
            terms
                .iter()
                .map(|term| term_value(name, term))
                .collect::<Vec<_>>()
                .join("|")
        };
        words.push(name.to_owned());
        words.push(value);
    }
    words.push("then".to_owned());
    words.extend(action.split(' ').map(str::to_owned));
    Ok(FlowRule::parse(&words)?)
}

/// One term in this crate's syntax: ExaBGP's names of ICMP types and protocols made numbers
/// where ours differ, "unknown ... N" made N.
fn term_value(component: &str, term: &str) -> String {
    term.split('&')
        .map(|part| {
            let at = part
                .find(|c: char| !"=<>!".contains(c))
                .unwrap_or(part.len());
            let (op, value) = part.split_at(at);
            let value = if let Some(number) = value
                .strip_prefix("unknown")
                .and_then(|rest| rest.rsplit(' ').next())
            {
                number.to_owned()
            } else if component == "icmp-type" {
                icmp_type(value).map_or_else(|| value.to_owned(), |n| n.to_string())
            } else if component == "protocol" && value == "ipv6-icmp" {
                "icmpv6".to_owned()
            } else {
                value.to_owned()
            };
            format!("{op}{value}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// ExaBGP's names of ICMP types (IPv4's, and ICMPv6's echo).
fn icmp_type(name: &str) -> Option<u8> {
    Some(match name {
        "echo-reply" => 0,
        "unreachable" => 3,
        "source-quench" => 4,
        "redirect" => 5,
        "echo-request" => 8,
        "router-advertisement" => 9,
        "router-solicit" => 10,
        "time-exceeded" => 11,
        "parameter-problem" => 12,
        "timestamp" => 13,
        "timestamp-reply" => 14,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"{ "exabgp": "4.0.1", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 17, "type": "update", "neighbor": { "address": { "local": "198.18.100.1", "peer": "198.18.100.2" }, "asn": { "local": 65001, "peer": 65002 } , "direction": "receive", "message": { "update": "#;

    fn update(body: &str) -> String {
        format!("{HEAD}{body} }} }} }}")
    }

    #[test]
    fn announcements_withdrawals_and_states() {
        // As ExaBGP 4.2 printed GoBGP's announcements.
        let line = update(
            r#"{ "attribute": { "origin": "incomplete", "extended-community": [ { "value": 1, "string": "rate-limit:1000" } ] }, "announce": { "ipv4 flow": { "no-nexthop": [ { "destination-ipv4": [ "198.18.3.9/32" ], "source-ipv4": [ "198.18.1.0/24" ], "protocol": [ "=tcp" ], "port": [ ">=1024&<=2048" ], "tcp-flags": [ "=syn" ], "packet-length": [ ">1000" ], "fragment": [ "is-fragment" ], "string": "flow destination-ipv4 198.18.3.9/32" } ] } } }"#,
        );
        let FeedEvent::Announce { session, routes } = parse_line(&line).unwrap() else {
            panic!("an announcement");
        };
        assert_eq!(session, "198.18.100.2");
        assert_eq!(routes[0].0, "flow destination-ipv4 198.18.3.9/32");
        assert_eq!(
            routes[0].1.as_ref().unwrap().to_string(),
            "destination 198.18.3.9/32 source 198.18.1.0/24 protocol =tcp port >=1024&<=2048 \
             tcp-flags =syn packet-length >1000 fragment is-fragment then rate-limit 1000 bytes"
        );
        let line = update(
            r#"{ "attribute": { "extended-community": [ { "value": 1, "string": "rate-limit:0" } ] }, "announce": { "ipv6 flow": { "no-nexthop": [ { "destination-ipv6": [ "2001:2::/48/0" ], "next-header": [ "=udp" ], "destination-port": [ ">1000&<2000", "=3000" ], "icmp-type": [ "=unknown icmp type type 128" ], "string": "k" } ] } } }"#,
        );
        let FeedEvent::Announce { routes, .. } = parse_line(&line).unwrap() else {
            panic!("an announcement");
        };
        assert_eq!(
            routes[0].1.as_ref().unwrap().to_string(),
            "destination 2001:2::/48 protocol =udp destination-port >1000&<2000|=3000 \
             icmp-type =128 then drop"
        );
        let line = update(
            r#"{ "attribute": { "extended-community": [ { "value": 1, "string": "mark 10" } ] }, "announce": { "ipv4 flow": { "no-nexthop": [ { "destination-ipv4": [ "198.18.3.7/32" ], "icmp-type": [ "=echo-request" ], "string": "m" }, { "destination-ipv6": [ "2001:2::/48/8" ], "string": "o" } ] } } }"#,
        );
        let FeedEvent::Announce { routes, .. } = parse_line(&line).unwrap() else {
            panic!("an announcement");
        };
        assert_eq!(
            routes[0].1.as_ref().unwrap().to_string(),
            "destination 198.18.3.7/32 icmp-type =8 then remark 10"
        );
        assert!(matches!(
            routes[1].1,
            Err(FeedError::Offset(_)) | Err(FeedError::Rule(_))
        ));
        let line = update(
            r#"{ "attribute": { "extended-community": [ { "value": 1, "string": "redirect:65000:1" } ] }, "announce": { "ipv4 flow": { "no-nexthop": [ { "destination-ipv4": [ "198.18.3.3/32" ], "string": "r" } ] } } }"#,
        );
        let FeedEvent::Announce { routes, .. } = parse_line(&line).unwrap() else {
            panic!("an announcement");
        };
        assert!(matches!(routes[0].1, Err(FeedError::Action(_))));

        let line = update(
            r#"{ "withdraw": { "ipv4 flow": [ { "destination-ipv4": [ "198.18.3.0/24" ], "string": "flow destination-ipv4 198.18.3.0/24" } ] } }"#,
        );
        assert_eq!(
            parse_line(&line).unwrap(),
            FeedEvent::Withdraw {
                session: "198.18.100.2".to_owned(),
                keys: vec!["flow destination-ipv4 198.18.3.0/24".to_owned()],
            }
        );
        let state = r#"{ "exabgp": "4.0.1", "type": "state", "neighbor": { "address": { "local": "198.18.100.1", "peer": "198.18.100.2" }, "state": "down", "reason": "peer reset" } }"#;
        assert_eq!(
            parse_line(state).unwrap(),
            FeedEvent::Down {
                session: "198.18.100.2".to_owned()
            }
        );
        assert!(matches!(parse_line("{"), Err(FeedError::Json(_))));
        assert!(matches!(parse_line("{}"), Err(FeedError::Shape(_))));
    }
}
