//! Kernel nexthop objects (`ip nexthop`, what FRR's zebra installs routes through): read
//! whole, then followed from `RTNLGRP_NEXTHOP`, on a netlink socket of their own (the
//! rtnetlink crate has no nexthop messages; the layout is `linux/nexthop.h`'s).
//!
//! A route that names an object (`RTA_NH_ID`) forwards by it, whatever expanded gateways
//! the message also carries (`net.ipv4.nexthop_compat_mode=1`): a change of the object then
//! moves every route using it at once, in the kernel and in the dataplane.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use netlink_sys::{AsyncSocket as _, AsyncSocketExt as _, SocketAddr, TokioSocket, protocols};

/// `RTM_NEWNEXTHOP`, `RTM_DELNEXTHOP`, `RTM_GETNEXTHOP`.
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
/// The multicast group of nexthop events.
const RTNLGRP_NEXTHOP: u32 = 32;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HEADER_LEN: usize = 16;
/// `struct nhmsg`: family, scope, protocol, reserved, flags (u32).
const NHMSG_LEN: usize = 8;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_FDB: u16 = 11;
const NHA_RES_GROUP: u16 = 12;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `RTNH_F_DEAD`, `RTNH_F_LINKDOWN`: the kernel does not forward by it.
const RTNH_F_DEAD: u32 = 1;
const RTNH_F_LINKDOWN: u32 = 16;

/// What a nexthop object forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// Through a gateway on an interface.
    Gateway {
        ifindex: u32,
        gateway: IpAddr,
    },
    /// Onto an interface, no gateway: each destination its own neighbour.
    Device(u32),
    Blackhole,
    /// A group of other objects (ids, weights 1 to 65536): ECMP.
    Group(Vec<(u32, u32)>),
    /// Something the fast path does not do (an encapsulation, a resilient group, an FDB
    /// nexthop, a dead one): routes through it are the kernel's.
    Kernel,
}

/// A nexthop event or dump entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectEvent {
    Set(u32, ObjectKind),
    Removed(u32),
}

/// Why a nexthop message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectParseError {
    #[error("nexthop message of {0} bytes, shorter than its header")]
    Short(usize),
    #[error("nexthop attribute {kind} of {len} bytes overruns the message")]
    Attribute { kind: u16, len: usize },
    #[error("nexthop message without an id")]
    NoId,
    #[error("nexthop group entry list of {0} bytes is not a whole number of entries")]
    Group(usize),
}

/// The event of one netlink message of type `kind` whose payload (after the netlink header)
/// is `payload`; `None` for other message types.
pub fn parse_message(kind: u16, payload: &[u8]) -> Result<Option<ObjectEvent>, ObjectParseError> {
    let removed = match kind {
        RTM_NEWNEXTHOP => false,
        RTM_DELNEXTHOP => true,
        _ => return Ok(None),
    };
    if payload.len() < NHMSG_LEN {
        return Err(ObjectParseError::Short(payload.len()));
    }
    let family = payload[0];
    let flags = u32::from_ne_bytes(payload[4..8].try_into().expect("4 bytes"));
    let mut id = None;
    let mut group = None;
    let mut oif = None;
    let mut gateway = None;
    let mut blackhole = false;
    let mut kernel_only = flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0;
    let mut rest = &payload[NHMSG_LEN..];
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        // The nested and byte-order flags are not part of the type.
        let attribute = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return Err(ObjectParseError::Attribute {
                kind: attribute,
                len,
            });
        }
        let value = &rest[4..len];
        match attribute {
            NHA_ID if value.len() == 4 => {
                id = Some(u32::from_ne_bytes(value.try_into().expect("4 bytes")));
            }
            NHA_GROUP => group = Some(parse_group(value)?),
            NHA_BLACKHOLE => blackhole = true,
            NHA_OIF if value.len() == 4 => {
                oif = Some(u32::from_ne_bytes(value.try_into().expect("4 bytes")));
            }
            NHA_GATEWAY => {
                gateway = match (family, value.len()) {
                    (AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(value).expect("4"))),
                    (AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(value).expect("16"))),
                    _ => {
                        kernel_only = true;
                        None
                    }
                }
            }
            NHA_ENCAP_TYPE | NHA_FDB | NHA_RES_GROUP => kernel_only = true,
            _ => {}
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    let id = id.ok_or(ObjectParseError::NoId)?;
    if removed {
        return Ok(Some(ObjectEvent::Removed(id)));
    }
    let kind = if kernel_only {
        ObjectKind::Kernel
    } else if let Some(members) = group {
        ObjectKind::Group(members)
    } else if blackhole {
        ObjectKind::Blackhole
    } else {
        match (oif, gateway) {
            (Some(ifindex), Some(gateway)) => ObjectKind::Gateway { ifindex, gateway },
            (Some(ifindex), None) => ObjectKind::Device(ifindex),
            _ => ObjectKind::Kernel,
        }
    };
    Ok(Some(ObjectEvent::Set(id, kind)))
}

/// `struct nexthop_grp` entries: id (u32), weight - 1 (u8), its high byte (u8, newer
/// kernels; zero before), reserved (u16).
fn parse_group(value: &[u8]) -> Result<Vec<(u32, u32)>, ObjectParseError> {
    if !value.len().is_multiple_of(8) {
        return Err(ObjectParseError::Group(value.len()));
    }
    Ok(value
        .as_chunks::<8>()
        .0
        .iter()
        .map(|entry| {
            let id = u32::from_ne_bytes(entry[..4].try_into().expect("4 bytes"));
            let weight = (u32::from(entry[5]) << 8 | u32::from(entry[4])) + 1;
            (id, weight)
        })
        .collect())
}

/// What a route through an object does, resolved through its group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Through these gateways (interface index, address), sorted; several for a group.
    Via(Vec<(u32, IpAddr)>),
    Blackhole,
    /// Unknown, on-link, or something only the kernel does.
    Kernel,
}

/// The kernel's nexthop objects, by id.
#[derive(Debug, Default)]
pub struct KernelObjects {
    objects: BTreeMap<u32, ObjectKind>,
}

impl KernelObjects {
    pub fn apply(&mut self, event: ObjectEvent) {
        match event {
            ObjectEvent::Set(id, kind) => self.objects.insert(id, kind),
            ObjectEvent::Removed(id) => self.objects.remove(&id),
        };
    }

    /// The ids whose resolution a change of object `id` may change: it, and the groups
    /// holding it.
    pub fn affected(&self, id: u32) -> Vec<u32> {
        let mut affected = vec![id];
        affected.extend(self.objects.iter().filter_map(|(&group, kind)| match kind {
            ObjectKind::Group(members) if members.iter().any(|&(m, _)| m == id) => Some(group),
            _ => None,
        }));
        affected
    }

    pub fn contains(&self, id: u32) -> bool {
        self.objects.contains_key(&id)
    }

    /// Every object's id.
    pub fn ids(&self) -> Vec<u32> {
        self.objects.keys().copied().collect()
    }

    /// What a route through object `id` does. A group forwards by its members that have
    /// gateways; one that is only the kernel's makes the whole group the kernel's (the fast
    /// path would otherwise send its share elsewhere). Weights are not kept: members share
    /// the buckets evenly.
    pub fn resolve(&self, id: u32) -> Resolved {
        match self.objects.get(&id) {
            Some(ObjectKind::Gateway { ifindex, gateway }) => {
                Resolved::Via(vec![(*ifindex, *gateway)])
            }
            Some(ObjectKind::Blackhole) => Resolved::Blackhole,
            Some(ObjectKind::Group(members)) => {
                let mut via = Vec::with_capacity(members.len());
                for &(member, _) in members {
                    match self.objects.get(&member) {
                        Some(ObjectKind::Gateway { ifindex, gateway }) => {
                            via.push((*ifindex, *gateway));
                        }
                        // Deleted: the kernel takes it out of the group, and tells so next.
                        None => {}
                        Some(_) => return Resolved::Kernel,
                    }
                }
                via.sort_unstable();
                via.dedup();
                if via.is_empty() {
                    Resolved::Kernel
                } else {
                    Resolved::Via(via)
                }
            }
            Some(ObjectKind::Device(_) | ObjectKind::Kernel) | None => Resolved::Kernel,
        }
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// A netlink socket joined to the nexthop events.
pub struct ObjectSocket {
    socket: TokioSocket,
    buffer: Vec<u8>,
}

/// What a read of the socket gave.
pub enum ObjectRead {
    Events(Vec<ObjectEvent>),
    /// The kernel dropped events: read the objects whole again.
    Overrun,
}

impl ObjectSocket {
    /// Opens the socket and joins the events; they queue until read.
    pub fn open() -> anyhow::Result<Self> {
        let mut socket = route_socket()?;
        socket
            .socket_mut()
            .add_membership(RTNLGRP_NEXTHOP)
            .context("joining the nexthop events (RTNLGRP_NEXTHOP)")?;
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(1 << 16),
        })
    }

    /// Every object now, read with a dump on a socket of its own (the events socket keeps
    /// its queue: events after the dump began are read there as well, and applying one
    /// twice is harmless).
    pub async fn dump() -> anyhow::Result<Vec<ObjectEvent>> {
        let socket = route_socket()?;
        let mut request = Vec::with_capacity(NLMSG_HEADER_LEN + NHMSG_LEN);
        request.extend(((NLMSG_HEADER_LEN + NHMSG_LEN) as u32).to_ne_bytes());
        request.extend(RTM_GETNEXTHOP.to_ne_bytes());
        request.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request.extend(1u32.to_ne_bytes());
        request.extend(0u32.to_ne_bytes());
        request.extend([0u8; NHMSG_LEN]);
        socket
            .send_to(&request, &SocketAddr::new(0, 0))
            .await
            .context("asking the kernel for its nexthop objects")?;
        let mut events = Vec::new();
        let mut buffer = Vec::with_capacity(1 << 16);
        loop {
            buffer.clear();
            socket
                .recv(&mut buffer)
                .await
                .context("reading the nexthop objects")?;
            let mut done = false;
            for_each_message(&buffer, |kind, payload| {
                match kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                        if code != 0 {
                            // EOPNOTSUPP and the like: no nexthop objects on this kernel.
                            done = true;
                        }
                    }
                    _ => events.extend(parse_message(kind, payload)?),
                }
                Ok(())
            })?;
            if done {
                return Ok(events);
            }
        }
    }

    /// The events of the next datagram.
    pub async fn next(&mut self) -> anyhow::Result<ObjectRead> {
        self.buffer.clear();
        if let Err(err) = self.socket.recv(&mut self.buffer).await {
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(ObjectRead::Overrun);
            }
            return Err(err).context("reading nexthop events");
        }
        let mut events = Vec::new();
        let mut overrun = false;
        for_each_message(&self.buffer, |kind, payload| {
            if kind == NLMSG_OVERRUN {
                overrun = true;
            } else {
                events.extend(parse_message(kind, payload)?);
            }
            Ok(())
        })?;
        Ok(if overrun {
            ObjectRead::Overrun
        } else {
            ObjectRead::Events(events)
        })
    }
}

/// A bound rtnetlink socket of its own.
fn route_socket() -> anyhow::Result<TokioSocket> {
    let mut socket = TokioSocket::new(protocols::NETLINK_ROUTE)
        .context("opening a netlink socket for nexthop objects")?;
    socket
        .socket_mut()
        .bind_auto()
        .context("binding the nexthop socket")?;
    Ok(socket)
}

/// Calls `each` with the type and payload of every netlink message in a datagram.
fn for_each_message(
    mut datagram: &[u8],
    mut each: impl FnMut(u16, &[u8]) -> Result<(), ObjectParseError>,
) -> anyhow::Result<()> {
    while datagram.len() >= NLMSG_HEADER_LEN {
        let len = u32::from_ne_bytes(datagram[..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        anyhow::ensure!(
            (NLMSG_HEADER_LEN..=datagram.len()).contains(&len),
            "netlink message of {len} bytes in a datagram of {}",
            datagram.len()
        );
        each(kind, &datagram[NLMSG_HEADER_LEN..len])?;
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nexthop message payload as the kernel writes it: nhmsg, then attributes.
    fn message(family: u8, flags: u32, attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = vec![family, 0, 11, 0];
        bytes.extend(flags.to_ne_bytes());
        for (kind, value) in attributes {
            bytes.extend(((4 + value.len()) as u16).to_ne_bytes());
            bytes.extend(kind.to_ne_bytes());
            bytes.extend(value);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
        }
        bytes
    }

    fn u32_value(value: u32) -> Vec<u8> {
        value.to_ne_bytes().to_vec()
    }

    #[test]
    fn objects_of_every_kind_are_read() {
        let gateway = message(
            AF_INET,
            0,
            &[
                (NHA_ID, u32_value(10)),
                (NHA_GATEWAY, vec![198, 18, 2, 2]),
                (NHA_OIF, u32_value(3)),
            ],
        );
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &gateway),
            Ok(Some(ObjectEvent::Set(
                10,
                ObjectKind::Gateway {
                    ifindex: 3,
                    gateway: "198.18.2.2".parse().unwrap()
                }
            )))
        );
        let v6: std::net::Ipv6Addr = "2001:2:0:2::2".parse().unwrap();
        let gateway6 = message(
            AF_INET6,
            0,
            &[
                (NHA_ID, u32_value(11)),
                (NHA_GATEWAY, v6.octets().to_vec()),
                (NHA_OIF, u32_value(4)),
            ],
        );
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &gateway6),
            Ok(Some(ObjectEvent::Set(
                11,
                ObjectKind::Gateway {
                    ifindex: 4,
                    gateway: v6.into()
                }
            )))
        );
        // Group entries: id, weight - 1, weight's high byte, reserved.
        let mut entries = Vec::new();
        entries.extend(10u32.to_ne_bytes());
        entries.extend([0, 0, 0, 0]);
        entries.extend(12u32.to_ne_bytes());
        entries.extend([2, 1, 0, 0]);
        let group = message(0, 0, &[(NHA_ID, u32_value(20)), (NHA_GROUP, entries)]);
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &group),
            Ok(Some(ObjectEvent::Set(
                20,
                ObjectKind::Group(vec![(10, 1), (12, 259)])
            )))
        );
        let blackhole = message(0, 0, &[(NHA_ID, u32_value(30)), (NHA_BLACKHOLE, vec![])]);
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &blackhole),
            Ok(Some(ObjectEvent::Set(30, ObjectKind::Blackhole)))
        );
        let device = message(
            AF_INET,
            0,
            &[(NHA_ID, u32_value(31)), (NHA_OIF, u32_value(3))],
        );
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &device),
            Ok(Some(ObjectEvent::Set(31, ObjectKind::Device(3))))
        );
        // The kernel's alone: dead (its link down), encapsulated, FDB.
        let dead = message(
            AF_INET,
            RTNH_F_DEAD | RTNH_F_LINKDOWN,
            &[
                (NHA_ID, u32_value(32)),
                (NHA_GATEWAY, vec![198, 18, 2, 2]),
                (NHA_OIF, u32_value(3)),
            ],
        );
        let encap = message(
            AF_INET,
            0,
            &[
                (NHA_ID, u32_value(33)),
                (NHA_GATEWAY, vec![198, 18, 2, 2]),
                (NHA_OIF, u32_value(3)),
                (NHA_ENCAP_TYPE, 1u16.to_ne_bytes().to_vec()),
            ],
        );
        for (id, bytes) in [(32, dead), (33, encap)] {
            assert_eq!(
                parse_message(RTM_NEWNEXTHOP, &bytes),
                Ok(Some(ObjectEvent::Set(id, ObjectKind::Kernel)))
            );
        }
        let removed = message(AF_INET, 0, &[(NHA_ID, u32_value(10))]);
        assert_eq!(
            parse_message(RTM_DELNEXTHOP, &removed),
            Ok(Some(ObjectEvent::Removed(10)))
        );
        assert_eq!(parse_message(24, &removed), Ok(None), "a route message");
    }

    #[test]
    fn broken_messages_are_refused() {
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &[0; 4]),
            Err(ObjectParseError::Short(4))
        );
        let mut overrun = message(AF_INET, 0, &[(NHA_ID, u32_value(10))]);
        overrun[8] = 40;
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &overrun),
            Err(ObjectParseError::Attribute {
                kind: NHA_ID,
                len: 40
            })
        );
        let no_id = message(AF_INET, 0, &[(NHA_OIF, u32_value(3))]);
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &no_id),
            Err(ObjectParseError::NoId)
        );
        let odd_group = message(0, 0, &[(NHA_ID, u32_value(1)), (NHA_GROUP, vec![0; 6])]);
        assert_eq!(
            parse_message(RTM_NEWNEXTHOP, &odd_group),
            Err(ObjectParseError::Group(6))
        );
    }

    #[test]
    fn groups_resolve_through_their_members() {
        let mut objects = KernelObjects::default();
        let gateway = |ifindex, addr: &str| ObjectKind::Gateway {
            ifindex,
            gateway: addr.parse().unwrap(),
        };
        objects.apply(ObjectEvent::Set(1, gateway(3, "198.18.2.2")));
        objects.apply(ObjectEvent::Set(2, gateway(4, "198.18.3.2")));
        objects.apply(ObjectEvent::Set(5, ObjectKind::Group(vec![(2, 1), (1, 1)])));
        objects.apply(ObjectEvent::Set(6, ObjectKind::Blackhole));
        let via = |hops: &[(u32, &str)]| {
            Resolved::Via(hops.iter().map(|(i, a)| (*i, a.parse().unwrap())).collect())
        };
        assert_eq!(objects.resolve(1), via(&[(3, "198.18.2.2")]));
        assert_eq!(
            objects.resolve(5),
            via(&[(3, "198.18.2.2"), (4, "198.18.3.2")])
        );
        assert_eq!(objects.resolve(6), Resolved::Blackhole);
        assert_eq!(objects.resolve(7), Resolved::Kernel, "unknown");
        // A member changes: the group is among the affected.
        assert_eq!(objects.affected(2), vec![2, 5]);
        objects.apply(ObjectEvent::Set(2, gateway(4, "198.18.3.3")));
        assert_eq!(
            objects.resolve(5),
            via(&[(3, "198.18.2.2"), (4, "198.18.3.3")])
        );
        // A member the fast path cannot take makes the group the kernel's.
        objects.apply(ObjectEvent::Set(2, ObjectKind::Device(4)));
        assert_eq!(objects.resolve(5), Resolved::Kernel);
        // A member deleted: the others carry the group until the kernel says more.
        objects.apply(ObjectEvent::Removed(2));
        assert!(!objects.contains(2));
        assert_eq!(objects.resolve(5), via(&[(3, "198.18.2.2")]));
    }
}
