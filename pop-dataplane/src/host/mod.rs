//! The host as rtnetlink shows it: interfaces (with their VLAN stacking) and addresses, read
//! once and then followed through events. Everything here is in the network namespace of the
//! thread that opens the netlink socket.

pub mod kernel_nexthops;
pub mod kernel_routes;

use std::net::IpAddr;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoVlan, InfoVrf, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
        VlanProtocol,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use rtnetlink::Handle;

use crate::mac::MacAddr;

/// A network interface of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Operationally up.
    pub up: bool,
    /// Set for a VLAN device: the tag it adds on top of its parent.
    pub vlan: Option<Vlan>,
    /// The device it is enslaved to (IFLA_MASTER): a bridge, a bond, or a VRF device.
    pub controller: Option<u32>,
    /// Set for a VRF device (l3mdev): the kernel routing table of its VRF.
    pub vrf_table: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// The interface this VLAN device sits on.
    pub parent: u32,
    pub id: u16,
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
}

/// An address configured on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub ifindex: u32,
    pub addr: IpAddr,
    /// The length of the subnet it is on.
    pub prefix_len: u8,
}

impl Address {
    /// The subnet the address is on.
    pub fn subnet(&self) -> ipnet::IpNet {
        ipnet::IpNet::new(self.addr, self.prefix_len)
            .map(|net| net.trunc())
            .unwrap_or_else(|_| ipnet::IpNet::from(self.addr))
    }
}

/// The kernel's counters of an interface (what `ip -s link` shows), with its state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub ifindex: u32,
    pub admin_up: bool,
    pub oper_up: bool,
    pub promiscuous: bool,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_multicast: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

/// The counters of every interface, over `handle`.
pub async fn link_counters(handle: &Handle) -> anyhow::Result<Vec<LinkCounters>> {
    let mut all = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(message) = dump.try_next().await.context("dumping interfaces")? {
        let flags = message.header.flags;
        let mut counters = LinkCounters {
            ifindex: message.header.index,
            admin_up: flags.contains(LinkFlags::Up),
            oper_up: flags.contains(LinkFlags::LowerUp) || flags.contains(LinkFlags::Running),
            promiscuous: flags.contains(LinkFlags::Promisc),
            ..Default::default()
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::Stats64(stats) => {
                    counters.rx_bytes = stats.rx_bytes;
                    counters.rx_packets = stats.rx_packets;
                    counters.rx_multicast = stats.multicast;
                    counters.rx_dropped = stats.rx_dropped;
                    counters.rx_errors = stats.rx_errors;
                    counters.tx_bytes = stats.tx_bytes;
                    counters.tx_packets = stats.tx_packets;
                    counters.tx_dropped = stats.tx_dropped;
                    counters.tx_errors = stats.tx_errors;
                }
                LinkAttribute::OperState(State::Up) => counters.oper_up = true,
                _ => {}
            }
        }
        all.push(counters);
    }
    Ok(all)
}

/// Interfaces and addresses at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
}

impl Host {
    /// Dumps interfaces and addresses over `handle`.
    pub async fn read(handle: &Handle) -> anyhow::Result<Self> {
        let mut links = Vec::new();
        let mut dump = handle.link().get().execute();
        while let Some(message) = dump.try_next().await.context("dumping interfaces")? {
            if let Some(link) = parse_link(&message) {
                links.push(link);
            }
        }
        let mut addresses = Vec::new();
        let mut dump = handle.address().get().execute();
        while let Some(message) = dump.try_next().await.context("dumping addresses")? {
            if let Some(address) = parse_address(&message) {
                addresses.push(address);
            }
        }
        addresses.sort();
        Ok(Self { links, addresses })
    }

    /// [`Host::read`] for callers without a runtime: opens its own netlink socket.
    pub fn read_now() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().context("opening rtnetlink")?;
            tokio::spawn(connection);
            Self::read(&handle).await
        })
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|link| link.name == name)
    }

    pub fn link_by_index(&self, ifindex: u32) -> Option<&Link> {
        self.links.iter().find(|link| link.ifindex == ifindex)
    }

    /// The VRF device (l3mdev) `link` is enslaved to, if any.
    pub fn vrf_device_of(&self, link: &Link) -> Option<&Link> {
        vrf_device_of(link, |ifindex| self.link_by_index(ifindex))
    }
}

/// The VRF device `link` is enslaved to, its controller looked up with `find`.
pub fn vrf_device_of<'a>(link: &Link, find: impl Fn(u32) -> Option<&'a Link>) -> Option<&'a Link> {
    find(link.controller?).filter(|controller| controller.vrf_table.is_some())
}

/// A change the daemon follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    AddressAdded(Address),
    AddressRemoved(Address),
    LinkChanged(Link),
    LinkRemoved(u32),
}

/// The event a netlink notification carries, if it is one we follow.
pub fn event(message: &RouteNetlinkMessage) -> Option<HostEvent> {
    match message {
        RouteNetlinkMessage::NewAddress(message) => {
            parse_address(message).map(HostEvent::AddressAdded)
        }
        RouteNetlinkMessage::DelAddress(message) => {
            parse_address(message).map(HostEvent::AddressRemoved)
        }
        RouteNetlinkMessage::NewLink(message) => parse_link(message).map(HostEvent::LinkChanged),
        RouteNetlinkMessage::DelLink(message) => Some(HostEvent::LinkRemoved(message.header.index)),
        _ => None,
    }
}

fn parse_link(message: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        ifindex: message.header.index,
        name: String::new(),
        mac: MacAddr::default(),
        mtu: 0,
        up: false,
        vlan: None,
        controller: None,
        vrf_table: None,
    };
    let mut parent = None;
    let mut vlan_id = None;
    let mut tpid = 0x8100;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                link.mac.0.copy_from_slice(bytes);
            }
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::OperState(state) => {
                // Virtual devices without carrier reporting say Unknown while they work.
                link.up = matches!(state, State::Up | State::Unknown);
            }
            LinkAttribute::Link(index) => parent = Some(*index),
            LinkAttribute::Controller(index) => link.controller = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Data(InfoData::Vlan(vlan)) => {
                            for item in vlan {
                                match item {
                                    InfoVlan::Id(id) => vlan_id = Some(*id),
                                    InfoVlan::Protocol(VlanProtocol::Ieee8021Ad) => tpid = 0x88a8,
                                    InfoVlan::Protocol(_) => tpid = 0x8100,
                                    _ => {}
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Vrf(vrf)) => {
                            for item in vrf {
                                if let InfoVrf::TableId(table) = item {
                                    link.vrf_table = Some(*table);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(parent), Some(id)) = (parent, vlan_id) {
        link.vlan = Some(Vlan { parent, id, tpid });
    }
    (!link.name.is_empty()).then_some(link)
}

fn parse_address(message: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point
    // links, and the own address otherwise (and for IPv6).
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(addr) => local = Some(*addr),
            AddressAttribute::Address(addr) => address = Some(*addr),
            _ => {}
        }
    }
    local.or(address).map(|addr| Address {
        ifindex: message.header.index,
        addr,
        prefix_len: message.header.prefix_len,
    })
}

/// The neighbour a netlink message describes: interface, address, and its MAC when the
/// entry is usable.
pub fn parse_neighbour(message: &NeighbourMessage) -> Option<(u32, IpAddr, Option<MacAddr>)> {
    let mut addr = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(bytes) if bytes.len() == 6 => {
                mac = Some(MacAddr(bytes.as_slice().try_into().expect("six bytes")));
            }
            _ => {}
        }
    }
    let usable = matches!(
        message.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    Some((message.header.ifindex, addr?, mac.filter(|_| usable)))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Parseable as _;

    use super::*;

    /// A netlink attribute as the kernel encodes it: length, type, value, padded to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    /// An RTM_NEWLINK payload (`struct ifinfomsg`, then attributes), as `ip monitor link`
    /// would receive it from a kernel with VRF devices.
    fn link_message(ifindex: i32, attributes: &[Vec<u8>]) -> LinkMessage {
        // ifi_family, pad, ifi_type (ARPHRD_ETHER), ifi_index, ifi_flags (UP, RUNNING,
        // LOWER_UP), ifi_change.
        let mut bytes = vec![0u8, 0];
        bytes.extend_from_slice(&1u16.to_ne_bytes());
        bytes.extend_from_slice(&ifindex.to_ne_bytes());
        bytes.extend_from_slice(&0x0001_0041u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        for attribute in attributes {
            bytes.extend_from_slice(attribute);
        }
        LinkMessage::parse(&bytes[..]).unwrap()
    }

    // linux/if_link.h
    const IFLA_ADDRESS: u16 = 1;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_MTU: u16 = 4;
    const IFLA_MASTER: u16 = 10;
    const IFLA_OPERSTATE: u16 = 16;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_INFO_SLAVE_KIND: u16 = 4;
    const IFLA_VRF_TABLE: u16 = 1;
    const NLA_F_NESTED: u16 = 1 << 15;
    const IF_OPER_UP: u8 = 6;

    #[test]
    fn vrf_devices_and_their_ports_from_netlink_messages() {
        // `ip link add blue type vrf table 100`: ifindex 7.
        let vrf = link_message(
            7,
            &[
                nla(IFLA_IFNAME, b"blue\0"),
                nla(IFLA_MTU, &65575u32.to_ne_bytes()),
                nla(IFLA_OPERSTATE, &[IF_OPER_UP]),
                nla(IFLA_ADDRESS, &[0x2e, 0x11, 0x22, 0x33, 0x44, 0x55]),
                nla(
                    IFLA_LINKINFO | NLA_F_NESTED,
                    &[
                        nla(IFLA_INFO_KIND, b"vrf\0"),
                        nla(
                            IFLA_INFO_DATA | NLA_F_NESTED,
                            &nla(IFLA_VRF_TABLE, &100u32.to_ne_bytes()),
                        ),
                    ]
                    .concat(),
                ),
            ],
        );
        // `ip link set p1 master blue`: ifindex 3, its controller 7.
        let port = link_message(
            3,
            &[
                nla(IFLA_IFNAME, b"p1\0"),
                nla(IFLA_MTU, &1500u32.to_ne_bytes()),
                nla(IFLA_OPERSTATE, &[IF_OPER_UP]),
                nla(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 3]),
                nla(IFLA_MASTER, &7u32.to_ne_bytes()),
                nla(
                    IFLA_LINKINFO | NLA_F_NESTED,
                    &[
                        nla(IFLA_INFO_KIND, b"veth\0"),
                        nla(IFLA_INFO_SLAVE_KIND, b"vrf\0"),
                    ]
                    .concat(),
                ),
            ],
        );
        let vrf = parse_link(&vrf).unwrap();
        assert_eq!((vrf.name.as_str(), vrf.vrf_table), ("blue", Some(100)));
        assert_eq!(vrf.controller, None);
        let port = parse_link(&port).unwrap();
        assert_eq!((port.name.as_str(), port.controller), ("p1", Some(7)));
        assert_eq!(port.vrf_table, None);
        assert!(port.up && port.vlan.is_none());
        let host = Host {
            links: vec![vrf.clone(), port.clone()],
            addresses: Vec::new(),
        };
        assert_eq!(host.vrf_device_of(&port), Some(&vrf));
        assert_eq!(host.vrf_device_of(&vrf), None);
        // `ip link set p1 nomaster`: no IFLA_MASTER.
        let freed = Link {
            controller: None,
            ..port.clone()
        };
        assert_eq!(host.vrf_device_of(&freed), None);
        // Enslaved to something that is no VRF (a bridge): no VRF either.
        let bridged = Host {
            links: vec![
                Link {
                    vrf_table: None,
                    ..vrf
                },
                port.clone(),
            ],
            addresses: Vec::new(),
        };
        assert_eq!(bridged.vrf_device_of(&port), None);
    }

    #[test]
    fn reads_loopback() {
        let host = Host::read_now().unwrap();
        let lo = host.link("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert!(lo.mac.is_zero());
        assert!(lo.vlan.is_none());
        assert!(host.addresses.contains(&Address {
            ifindex: 1,
            addr: "127.0.0.1".parse().unwrap(),
            prefix_len: 8,
        }));
    }
}
