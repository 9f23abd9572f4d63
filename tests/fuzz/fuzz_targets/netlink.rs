//! rtnetlink messages, as the daemon receives them from the kernel: any bytes, decoded by
//! netlink-packet-route, then read by the daemon (links, addresses, neighbours, routes of
//! the tables it follows). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use pop_dataplane::{host, host::kernel_routes};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
        return;
    };
    let NetlinkPayload::InnerMessage(message) = message.payload else {
        return;
    };
    let _ = host::event(&message);
    match &message {
        RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route) => {
            if let Some(route) = kernel_routes::parse_route(route, &[254, 100]) {
                assert!(route.prefix == route.prefix.trunc());
            }
        }
        RouteNetlinkMessage::NewNeighbour(neighbour)
        | RouteNetlinkMessage::DelNeighbour(neighbour) => {
            let _ = host::parse_neighbour(neighbour);
        }
        _ => {}
    }
});
