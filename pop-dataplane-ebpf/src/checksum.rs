//! Internet checksum arithmetic (RFC 1071, RFC 1624), on 16-bit words in network byte order.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// True when the 20-byte IPv4 header (checksum field included) sums to 0xffff, i.e. its
/// checksum is right.
#[inline(always)]
pub(crate) fn ipv4_header_valid(header: &[u8; 20]) -> bool {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([header[i], header[i + 1]]));
        i += 2;
    }
    fold(sum) == 0xffff
}

/// The checksum after one 16-bit word of the covered data changes from `old` to `new`:
/// RFC 1624 equation 3, HC' = ~(~HC + ~m + m'), exact for a header that was valid.
#[inline(always)]
pub(crate) fn replace_word(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}
