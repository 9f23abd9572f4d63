//! Kernel nexthop object messages (`RTM_NEWNEXTHOP`, `RTM_DELNEXTHOP`), as the daemon reads
//! them from its nexthop socket: a message type (2 bytes) and a payload (the rest), parsed
//! and applied to an object table, which then resolves every object. Must never panic, and
//! a gateway object read must resolve to its gateway.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pop_dataplane::host::kernel_nexthops::{
    KernelObjects, ObjectEvent, ObjectKind, Resolved, parse_message,
};

fuzz_target!(|data: &[u8]| {
    let mut objects = KernelObjects::default();
    // Several messages: each a type, a length byte and that many payload bytes.
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = u16::from_ne_bytes([rest[0], rest[1]]);
        let len = usize::from(rest[2]).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let Ok(Some(event)) = parse_message(kind, payload) else {
            continue;
        };
        if let ObjectEvent::Set(id, ObjectKind::Gateway { ifindex, gateway }) = &event {
            let (id, hop) = (*id, (*ifindex, *gateway));
            objects.apply(event);
            assert_eq!(objects.resolve(id), Resolved::Via(vec![hop]));
        } else {
            objects.apply(event);
        }
    }
    for id in objects.ids() {
        let _ = objects.affected(id);
        let _ = objects.resolve(id);
    }
});
