//! What the dataplane needs to know about a host interface: index, MAC address, MTU. Looked up
//! in the calling thread's network namespace.

use std::{ffi::CString, io, mem, net::Ipv4Addr, os::fd::AsRawFd as _};

use crate::mac::MacAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetDevice {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    pub mtu: u32,
}

impl NetDevice {
    /// Looks up the interface called `name`.
    pub fn by_name(name: &str) -> io::Result<Self> {
        let c_name =
            CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;

        let mut request = ifreq(name);
        ioctl(&socket, libc::SIOCGIFHWADDR, &mut request)?;
        // SAFETY: SIOCGIFHWADDR filled in the hardware address member of the union.
        let hwaddr = unsafe { request.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (octet, byte) in mac.iter_mut().zip(hwaddr.sa_data) {
            *octet = byte as u8;
        }

        let mut request = ifreq(name);
        ioctl(&socket, libc::SIOCGIFMTU, &mut request)?;
        // SAFETY: SIOCGIFMTU filled in the MTU member of the union.
        let mtu = unsafe { request.ifr_ifru.ifru_mtu };

        Ok(Self {
            name: name.to_owned(),
            ifindex,
            mac: MacAddr(mac),
            mtu: mtu as u32,
        })
    }
}

/// The name of the interface with index `ifindex`, if there is one.
pub fn name_of(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has the IF_NAMESIZE bytes if_indextoname writes at most.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated string into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Every IPv4 address configured on any interface of this network namespace: the router's
/// own addresses, whose packets belong to the kernel.
pub fn local_ipv4_addresses() -> io::Result<Vec<Ipv4Addr>> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr; we read the family first.
            let family = unsafe { (*entry.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                found.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found.sort();
    found.dedup();
    Ok(found)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request
}

fn ioctl(
    socket: &std::net::UdpSocket,
    request: libc::Ioctl,
    ifreq: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: both requests take a pointer to an ifreq, which outlives the call.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), request, ifreq as *mut libc::ifreq) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        let lo = NetDevice::by_name("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert!(lo.mac.is_zero());
        assert!(lo.mtu >= 1500);
        assert_eq!(name_of(1).as_deref(), Some("lo"));
    }

    #[test]
    fn loopback_address_is_local() {
        assert!(
            local_ipv4_addresses()
                .unwrap()
                .contains(&Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn missing() {
        let err = NetDevice::by_name("pdp-no-such0").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
