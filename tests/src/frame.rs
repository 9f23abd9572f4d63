//! Builds test frames byte by byte: Ethernet, IPv4 (with options), UDP, TCP, ICMP. Written
//! from the RFCs, independently of the XDP program, so that tests can state what a correct
//! router must output.

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ETH_HLEN: usize = 14;

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = match chunk {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            [hi] => u16::from_be_bytes([*hi, 0]),
            _ => unreachable!(),
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (octet, part) in mac.iter_mut().zip(text.split(':')) {
        *octet = u8::from_str_radix(part, 16).expect("hex octet");
    }
    mac
}

/// An Ethernet II frame.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// An Ethernet II frame with VLAN tags `(TPID, VLAN id)`, outermost first.
pub fn ethernet_tagged(
    dst: [u8; 6],
    src: [u8; 6],
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + 4 * tags.len() + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    for (tpid, vid) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet, with the fields a test may want to vary.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub protocol: u8,
    pub tos: u8,
    pub id: u16,
    /// Flags (top 3 bits) and fragment offset.
    pub flags_fragment: u16,
    /// Options, a multiple of 4 bytes.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            protocol,
            tos: 0,
            id: 0x1234,
            flags_fragment: 0x4000,
            options: Vec::new(),
        }
    }

    pub fn header_len(&self) -> usize {
        20 + self.options.len()
    }

    /// The header (checksum computed) followed by `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0, "options must fill 32-bit words");
        let header_len = self.header_len();
        let total_len = (header_len + payload.len()) as u16;
        let mut packet = Vec::with_capacity(total_len as usize);
        packet.push(0x40 | (header_len / 4) as u8);
        packet.push(self.tos);
        packet.extend_from_slice(&total_len.to_be_bytes());
        packet.extend_from_slice(&self.id.to_be_bytes());
        packet.extend_from_slice(&self.flags_fragment.to_be_bytes());
        packet.push(self.ttl);
        packet.push(self.protocol);
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(&self.src);
        packet.extend_from_slice(&self.dst);
        packet.extend_from_slice(&self.options);
        let check = internet_checksum(&packet[..header_len]);
        packet[10..12].copy_from_slice(&check.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    /// A UDP datagram in this packet, checksummed over the pseudo-header.
    pub fn udp(&self, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
        let mut udp = Vec::with_capacity(8 + data.len());
        udp.extend_from_slice(&src_port.to_be_bytes());
        udp.extend_from_slice(&dst_port.to_be_bytes());
        udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(data);
        let check = self.l4_checksum(&udp);
        udp[6..8].copy_from_slice(&(if check == 0 { 0xffff } else { check }).to_be_bytes());
        self.packet(&udp)
    }

    /// A TCP segment (ACK) in this packet.
    pub fn tcp(&self, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20 + data.len());
        tcp.extend_from_slice(&src_port.to_be_bytes());
        tcp.extend_from_slice(&dst_port.to_be_bytes());
        tcp.extend_from_slice(&1000u32.to_be_bytes());
        tcp.extend_from_slice(&2000u32.to_be_bytes());
        tcp.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(data);
        let check = self.l4_checksum(&tcp);
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        self.packet(&tcp)
    }

    /// An ICMP echo request in this packet.
    pub fn icmp_echo(&self, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(data);
        let check = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        self.packet(&icmp)
    }

    fn l4_checksum(&self, segment: &[u8]) -> u16 {
        let mut pseudo = Vec::with_capacity(12 + segment.len());
        pseudo.extend_from_slice(&self.src);
        pseudo.extend_from_slice(&self.dst);
        pseudo.push(0);
        pseudo.push(self.protocol);
        pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(segment);
        internet_checksum(&pseudo)
    }
}

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// An IPv6 extension header: its type and its bytes after the next-header field (the length
/// byte included, which [`Ipv6::packet`] leaves as given).
#[derive(Clone, Debug)]
pub struct Extension {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Extension {
    /// Hop-by-hop or destination options: one 8-byte unit of PadN.
    pub fn options(kind: u8) -> Self {
        Self {
            kind,
            body: vec![0, 1, 4, 0, 0, 0, 0],
        }
    }

    /// A type 0 routing header with no addresses left: one 8-byte unit.
    pub fn routing() -> Self {
        Self {
            kind: IPPROTO_ROUTING,
            body: vec![0, 0, 0, 0, 0, 0, 0],
        }
    }

    /// A fragment header.
    pub fn fragment(offset_units: u16, more: bool, id: u32) -> Self {
        let field = (offset_units << 3) | u16::from(more);
        let mut body = vec![0];
        body.extend_from_slice(&field.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        Self {
            kind: IPPROTO_FRAGMENT,
            body,
        }
    }

    /// An authentication header with a 4-byte ICV: length field 2 ((2 + 2) * 4 = 16 bytes).
    pub fn auth() -> Self {
        let mut body = vec![2, 0, 0];
        body.extend_from_slice(&[0; 12]);
        Self {
            kind: IPPROTO_AH,
            body,
        }
    }
}

/// An IPv6 packet.
#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub hop_limit: u8,
    pub flow_label: u32,
    pub extensions: Vec<Extension>,
}

impl Ipv6 {
    pub fn new(src: [u8; 16], dst: [u8; 16]) -> Self {
        Self {
            src,
            dst,
            hop_limit: 64,
            flow_label: 0x12345,
            extensions: Vec::new(),
        }
    }

    /// The header, the extension headers, then `payload` of protocol `protocol`.
    pub fn packet(&self, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, extension) in self.extensions.iter().enumerate() {
            let next = self.extensions.get(i + 1).map_or(protocol, |e| e.kind);
            chain.push(next);
            chain.extend_from_slice(&extension.body);
        }
        let first = self.extensions.first().map_or(protocol, |e| e.kind);
        let payload_len = (chain.len() + payload.len()) as u16;
        let mut packet = Vec::with_capacity(40 + usize::from(payload_len));
        packet.extend_from_slice(&((6u32 << 28) | (self.flow_label & 0xf_ffff)).to_be_bytes());
        packet.extend_from_slice(&payload_len.to_be_bytes());
        packet.push(first);
        packet.push(self.hop_limit);
        packet.extend_from_slice(&self.src);
        packet.extend_from_slice(&self.dst);
        packet.extend_from_slice(&chain);
        packet.extend_from_slice(payload);
        packet
    }

    pub fn udp(&self, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
        let mut udp = Vec::with_capacity(8 + data.len());
        udp.extend_from_slice(&src_port.to_be_bytes());
        udp.extend_from_slice(&dst_port.to_be_bytes());
        udp.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(data);
        let check = self.l4_checksum(IPPROTO_UDP, &udp);
        udp[6..8].copy_from_slice(&(if check == 0 { 0xffff } else { check }).to_be_bytes());
        self.packet(IPPROTO_UDP, &udp)
    }

    pub fn tcp(&self, src_port: u16, dst_port: u16, data: &[u8]) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20 + data.len());
        tcp.extend_from_slice(&src_port.to_be_bytes());
        tcp.extend_from_slice(&dst_port.to_be_bytes());
        tcp.extend_from_slice(&1000u32.to_be_bytes());
        tcp.extend_from_slice(&2000u32.to_be_bytes());
        tcp.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(data);
        let check = self.l4_checksum(IPPROTO_TCP, &tcp);
        tcp[16..18].copy_from_slice(&check.to_be_bytes());
        self.packet(IPPROTO_TCP, &tcp)
    }

    pub fn icmp_echo(&self, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut icmp = vec![128, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(data);
        let check = self.l4_checksum(IPPROTO_ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        self.packet(IPPROTO_ICMPV6, &icmp)
    }

    fn l4_checksum(&self, protocol: u8, segment: &[u8]) -> u16 {
        let mut pseudo = Vec::with_capacity(40 + segment.len());
        pseudo.extend_from_slice(&self.src);
        pseudo.extend_from_slice(&self.dst);
        pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        pseudo.extend_from_slice(segment);
        internet_checksum(&pseudo)
    }
}

/// An ARP request (Ethernet/IPv4) for `target_ip`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&src_mac);
    arp.extend_from_slice(&src_ip);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target_ip);
    ethernet([0xff; 6], src_mac, ETH_P_ARP, &arp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn ipv4_header_checks_out() {
        let packet = Ipv4::new([198, 18, 1, 2], [198, 18, 2, 2], IPPROTO_UDP).udp(1, 2, b"hi");
        assert_eq!(internet_checksum(&packet[..20]), 0);
        assert_eq!(packet.len(), 20 + 8 + 2);
    }
}
