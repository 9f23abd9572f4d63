/// Room for reasons in [`InterfaceCounters`]. Fixed so that adding a reason keeps the layout of
/// the pinned counter map that a running dataplane hands to its next version.
pub const MAX_REASONS: usize = 24;

/// Per-interface counters, one entry per interface slot and CPU in `COUNTERS`; userspace sums
/// the CPUs. Every received packet is counted in `rx_*` and in exactly one outcome: forwarded,
/// one `to_kernel` reason or one `dropped` reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Frames received on this interface (the program saw them).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames received here and redirected to an egress interface.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Frames redirected out of this interface (counted when the program redirects them).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received here and handed to the kernel (`XDP_PASS`), by [`PassReason`].
    pub to_kernel: [u64; MAX_REASONS],
    /// Frames received here and dropped, by [`DropReason`].
    pub dropped: [u64; MAX_REASONS],
}

/// Why a frame went to the kernel instead of being forwarded by XDP.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PassReason {
    /// Neither IPv4 nor IPv6: ARP, LLDP and any other EtherType.
    NonIp = 0,
    /// Unicast to another host's MAC: not addressed to this router at L2.
    OtherHost = 1,
    /// Broadcast or multicast destination MAC.
    LinkMulticast = 2,
    /// IPv4 header with options; the kernel processes them.
    IpOptions = 3,
    /// IP multicast destination (224.0.0.0/4, ff00::/8).
    IpMulticast = 4,
    /// Link-local destination or source (169.254.0.0/16, fe80::/10): never forwarded.
    LinkLocal = 5,
    /// TTL or hop limit <= 1: the kernel answers ICMP time exceeded.
    TtlExceeded = 6,
    /// No route matches the destination.
    NoRoute = 7,
    /// The route says so.
    KernelRoute = 8,
    /// The next hop's MAC is unknown: the kernel resolves it.
    Unresolved = 9,
    /// Larger than the egress MTU: the kernel fragments or answers "fragmentation needed".
    MtuExceeded = 10,
    /// Addressed to one of the router's own addresses.
    Local = 11,
    /// IPv6 hop-by-hop options: the kernel processes them.
    HopByHop = 12,
    /// Arrived on a VLAN, or the untagged side of a port, that is not a configured
    /// interface, or with more than two VLAN tags.
    NotRouted = 13,
    /// A destination that is never forwarded: 0.0.0.0/8, 127.0.0.0/8, 240.0.0.0/4 (limited
    /// broadcast included), ::, ::1.
    Reserved = 14,
}

/// Why a frame was dropped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Truncated or inconsistent headers: shorter than its headers, wrong IP version, IHL < 5,
    /// IPv4 total length or IPv6 payload length outside the frame.
    Malformed = 0,
    /// IPv4 header checksum wrong (RFC 1812 5.2.2: a router must discard it).
    BadChecksum = 1,
    /// The route is a blackhole.
    Blackhole = 2,
    /// The egress interface has no devmap entry: the redirect failed.
    NoEgress = 3,
    /// The frame could not be grown or shrunk for the next hop's VLAN tags.
    RewriteFailed = 4,
    /// The source matched a deny rule of the ACL (`acl add deny src ...`).
    AclDeny = 5,
    /// A martian source (RFC 1812 5.3.7: this network, loopback, multicast, class E and
    /// limited broadcast, or one of the router's own addresses), when source checks are on.
    MartianSource = 6,
    /// The source failed the ingress interface's reverse-path check (uRPF, RFC 3704): no
    /// route back to it, a blackhole route (source-based RTBH, RFC 5635), only the default
    /// route where it does not count, or, in strict mode, a route that does not leave
    /// through this interface.
    Urpf = 7,
    /// A flow rule whose action is drop matched it (`flow add ... then drop`, or a FlowSpec
    /// route with traffic-rate 0).
    Flow = 8,
    /// A rate-limited flow rule matched it beyond its rate.
    FlowRateLimit = 9,
}

impl PassReason {
    pub const ALL: [Self; 15] = [
        Self::NonIp,
        Self::OtherHost,
        Self::LinkMulticast,
        Self::IpOptions,
        Self::IpMulticast,
        Self::LinkLocal,
        Self::TtlExceeded,
        Self::NoRoute,
        Self::KernelRoute,
        Self::Unresolved,
        Self::MtuExceeded,
        Self::Local,
        Self::HopByHop,
        Self::NotRouted,
        Self::Reserved,
    ];

    /// The stable name used in `stats`, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NonIp => "non_ip",
            Self::OtherHost => "other_host",
            Self::LinkMulticast => "link_multicast",
            Self::IpOptions => "ip_options",
            Self::IpMulticast => "ip_multicast",
            Self::LinkLocal => "link_local",
            Self::TtlExceeded => "ttl_exceeded",
            Self::NoRoute => "no_route",
            Self::KernelRoute => "kernel_route",
            Self::Unresolved => "unresolved",
            Self::MtuExceeded => "mtu_exceeded",
            Self::Local => "local",
            Self::HopByHop => "hop_by_hop",
            Self::NotRouted => "not_routed",
            Self::Reserved => "reserved",
        }
    }
}

impl DropReason {
    pub const ALL: [Self; 10] = [
        Self::Malformed,
        Self::BadChecksum,
        Self::Blackhole,
        Self::NoEgress,
        Self::RewriteFailed,
        Self::AclDeny,
        Self::MartianSource,
        Self::Urpf,
        Self::Flow,
        Self::FlowRateLimit,
    ];

    /// The stable name used in `stats`, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadChecksum => "bad_checksum",
            Self::Blackhole => "blackhole",
            Self::NoEgress => "no_egress",
            Self::RewriteFailed => "rewrite_failed",
            Self::AclDeny => "acl_deny",
            Self::MartianSource => "martian_source",
            Self::Urpf => "urpf",
            Self::Flow => "flow",
            Self::FlowRateLimit => "flow_rate_limit",
        }
    }
}

const _: () = assert!(PassReason::ALL.len() <= MAX_REASONS);

// The layout pinned maps carry from one version to the next on take-over.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<InterfaceCounters>() == 48 + 2 * 8 * MAX_REASONS);
    assert!(offset_of!(InterfaceCounters, to_kernel) == 48);
    assert!(offset_of!(InterfaceCounters, dropped) == 48 + 8 * MAX_REASONS);
};
const _: () = assert!(DropReason::ALL.len() <= MAX_REASONS);
