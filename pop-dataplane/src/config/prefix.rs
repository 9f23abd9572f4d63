//! IP prefixes as operators write them: `203.0.113.0/24`, `2001:db8::/32`.

use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "{0:?} is not an IP prefix (expected ADDRESS/LENGTH, e.g. 203.0.113.0/24 or 2001:db8::/32)"
    )]
    NotAPrefix(String),
    #[error("{text} has host bits set (the prefix is {network})")]
    HostBits { text: String, network: IpNet },
}

/// Parses an IPv4 or IPv6 prefix in CIDR form, refusing host bits (a typo more often than
/// intent).
pub fn parse_prefix(text: &str) -> Result<IpNet, PrefixError> {
    let bad = || PrefixError::NotAPrefix(text.to_owned());
    // The standard library's address parser: several times ipnet's, which counts in a
    // million-line file.
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix = IpNet::new(addr, len.parse().map_err(|_| bad())?).map_err(|_| bad())?;
    if prefix.addr() != prefix.network() {
        return Err(PrefixError::HostBits {
            text: text.to_owned(),
            network: prefix.trunc(),
        });
    }
    Ok(prefix)
}
