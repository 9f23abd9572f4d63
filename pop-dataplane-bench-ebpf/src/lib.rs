//! The contract between the benchmark's XDP programs (the `pop-dataplane-bench-xdp` object:
//! a traffic generator, a sink and a no-lookup redirect, in `main.rs`) and
//! `pop-dataplane-bench`. None of it is part of the router.
#![no_std]

/// `ARRAY`, one entry: the frame's headers ([`GEN_HEADER_LEN_V4`] or [`GEN_HEADER_LEN_V6`]
/// bytes of Ethernet, IP and UDP), written over every generated frame before its flow's fields.
pub const GEN_TEMPLATE: &str = "GEN_TEMPLATE";

/// `ARRAY`: flow index -> [`GenFlow`].
pub const GEN_FLOWS: &str = "GEN_FLOWS";

/// `PERCPU_ARRAY`, one entry: frames generated so far; picks the next frame's flow.
pub const GEN_SEQUENCE: &str = "GEN_SEQUENCE";

/// Global (set at load): the number of flows in `GEN_FLOWS`, at least 1.
pub const GEN_FLOW_COUNT: &str = "GEN_FLOW_COUNT";

/// Global (set at load): 1 when the template is IPv6, 0 for IPv4.
pub const GEN_IPV6: &str = "GEN_IPV6";

/// `PERCPU_ARRAY`, one entry: [`SinkCounters`].
pub const SINK_COUNTERS: &str = "SINK_COUNTERS";

/// Global (set at load): the UDP destination port of the frames the sink counts and drops.
pub const SINK_UDP_PORT: &str = "SINK_UDP_PORT";

/// `DEVMAP`, one entry: where the no-lookup redirect sends every frame.
pub const CEILING_EGRESS: &str = "CEILING_EGRESS";

/// Flows the generator can cycle through.
pub const MAX_GEN_FLOWS: u32 = 65_536;

/// Room in `GEN_TEMPLATE`.
pub const GEN_TEMPLATE_LEN: usize = 64;

/// Ethernet, IPv4 without options, UDP.
pub const GEN_HEADER_LEN_V4: usize = 14 + 20 + 8;

/// Ethernet, IPv6 without extension headers, UDP.
pub const GEN_HEADER_LEN_V6: usize = 14 + 40 + 8;

/// What differs between the generator's flows, with the checksums that go with it, all
/// precomputed in userspace so that the program only copies bytes. Multi-byte fields are in
/// network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenFlow {
    /// The destination address; an IPv4 address in the first 4 bytes.
    pub dst: [u8; 16],
    pub udp_src_port: [u8; 2],
    /// The IPv4 header checksum (unused for IPv6).
    pub ip_checksum: [u8; 2],
    pub udp_checksum: [u8; 2],
    pub _pad: [u8; 2],
}

/// What the sink has counted (and dropped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<GenFlow>() == 24);
    assert!(size_of::<SinkCounters>() == 16);
};

/// `DEVMAP_HASH`, ifindex -> ifindex: the ports `bench_fib_forward` may send out of.
pub const FIB_FORWARD_PORTS: &str = "FIB_FORWARD_PORTS";

/// Offsets into a generated frame, by family: where [`GenFlow`]'s fields go.
pub mod offsets {
    pub const V4_CHECKSUM: usize = 14 + 10;
    pub const V4_DST: usize = 14 + 16;
    pub const V4_UDP: usize = 14 + 20;
    pub const V6_DST: usize = 14 + 24;
    pub const V6_UDP: usize = 14 + 40;
    /// From the start of the UDP header.
    pub const UDP_SRC_PORT: usize = 0;
    pub const UDP_CHECKSUM: usize = 6;
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers and byte arrays only, with explicit padding fields, so every
// bit pattern is a valid value.
unsafe impl aya::Pod for GenFlow {}

#[cfg(feature = "user")]
// SAFETY: as for `GenFlow`.
unsafe impl aya::Pod for SinkCounters {}
