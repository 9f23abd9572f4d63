//! The host's events over rtnetlink: addresses, links and neighbours as they change, the
//! neighbour refresh that keeps next hops resolved, and a full re-read after lost events.

use std::{collections::HashSet, net::IpAddr, os::fd::AsRawFd as _};

use futures_util::TryStreamExt as _;
use log::{debug, error, info, warn};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    RouteNetlinkMessage,
    neighbour::{NeighbourFlags, NeighbourState},
};
use rtnetlink::Handle;

use super::{EVENT_BUFFER_BYTES, handlers::Daemon};
use crate::{
    control::router::Router,
    dataplane::Dataplane,
    host::{self, Host, HostEvent},
};

impl Daemon<'_> {
    pub(super) async fn host_event(&mut self, message: RouteNetlinkMessage) -> anyhow::Result<()> {
        // A link going down or away: the kernel flushes the routes and nexthop objects on it
        // and says nothing of it (IPv4 routes, objects, groups' members). Followed tables
        // are read again.
        let mut flushed = false;
        let writes = match &message {
            RouteNetlinkMessage::NewNeighbour(neighbour)
            | RouteNetlinkMessage::DelNeighbour(neighbour) => {
                let Some((ifindex, addr, mac)) = host::parse_neighbour(neighbour) else {
                    return Ok(());
                };
                let mac = if matches!(message, RouteNetlinkMessage::DelNeighbour(_)) {
                    None
                } else {
                    mac
                };
                debug!("neighbour {addr} on {ifindex}: {mac:?}");
                self.router.neighbour(ifindex, addr, mac)
            }
            _ => match host::event(&message) {
                Some(HostEvent::AddressAdded(address)) => self.router.local_address_added(address),
                Some(HostEvent::AddressRemoved(address)) => {
                    self.router.local_address_removed(address)
                }
                Some(HostEvent::LinkChanged(link)) if self.router.recreated(&link) => {
                    // An interface of the config is back under a new ifindex: place it again
                    // and attach to it.
                    info!("{}: created again (ifindex {})", link.name, link.ifindex);
                    let config = self.config.clone();
                    if let Err(err) = self.apply_config(config).await {
                        error!("{}: cannot take the interface back: {err}", link.name);
                    }
                    return Ok(());
                }
                Some(HostEvent::LinkChanged(link)) => {
                    let (name, up) = (link.name.clone(), link.up);
                    flushed = self.router.link_up(link.ifindex) && !up;
                    let writes = self.router.link_changed(link);
                    if !writes.is_empty() {
                        info!("{name}: link {}", if up { "up" } else { "down" });
                    }
                    writes
                }
                Some(HostEvent::LinkRemoved(ifindex)) => {
                    flushed = true;
                    if let Some(port) = self
                        .router
                        .topology()
                        .ports
                        .iter()
                        .find(|p| p.ifindex == ifindex)
                    {
                        warn!(
                            "{}: deleted; its next hops are down until it is created again",
                            port.name
                        );
                        self.dataplane.detach(ifindex);
                    }
                    self.router.link_removed(ifindex)
                }
                None => return Ok(()),
            },
        };
        if !writes.is_empty() {
            self.dataplane.apply(&writes)?;
            self.publish();
        }
        if flushed && let Some(sync) = &mut self.kernel {
            let count = sync
                .read_tables(&self.handle, &mut self.router, &mut self.dataplane)
                .await?;
            info!("a link went down: kernel tables read again ({count} routes)");
            self.publish();
        }
        Ok(())
    }

    pub(super) async fn refresh_neighbours(&mut self) -> anyhow::Result<()> {
        refresh_neighbours(&self.handle, &mut self.router, &mut self.dataplane).await?;
        self.publish();
        Ok(())
    }

    /// After lost events: reads links, addresses and neighbours again, and applies them.
    pub(super) async fn resync(&mut self) -> anyhow::Result<()> {
        let host = Host::read(&self.handle).await?;
        let mut writes = Vec::new();
        for link in host.links.clone() {
            writes.extend(self.router.link_changed(link));
        }
        writes.extend(self.router.set_local_addresses(&host.addresses));
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(message) = dump.try_next().await? {
            if let Some((ifindex, addr, mac)) = host::parse_neighbour(&message) {
                writes.extend(self.router.neighbour(ifindex, addr, mac));
            }
        }
        self.dataplane.apply(&writes)?;
        if let Some(sync) = &mut self.kernel {
            let count = sync
                .read_tables(&self.handle, &mut self.router, &mut self.dataplane)
                .await?;
            info!("kernel tables read again: {count} routes");
        }
        self.publish();
        Ok(())
    }
}

pub(super) fn is_route_event(
    message: &netlink_packet_core::NetlinkMessage<RouteNetlinkMessage>,
) -> bool {
    matches!(
        message.payload,
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_)
        )
    )
}

/// See [`EVENT_BUFFER_BYTES`]; `POP_DATAPLANE_EVENT_BUFFER` (bytes) sets another size. Root
/// may go beyond `net.core.rmem_max`.
pub(super) fn enlarge_receive_buffer(socket: &mut rtnetlink::sys::Socket) {
    let size: libc::c_int = match std::env::var("POP_DATAPLANE_EVENT_BUFFER") {
        Ok(text) => match text.parse() {
            Ok(size) => size,
            Err(_) => {
                warn!("POP_DATAPLANE_EVENT_BUFFER={text:?} is not a number of bytes; ignored");
                EVENT_BUFFER_BYTES
            }
        },
        Err(_) => EVENT_BUFFER_BYTES,
    };
    // SAFETY: the fd is an open socket, and the option's value a c_int living through the
    // call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        warn!(
            "enlarging the rtnetlink event buffer: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Brings the next hops' neighbours up to date, and keeps them so: reads the kernel's
/// neighbour table (an entry already reachable or permanent when a next hop appears sends no
/// event), then asks the kernel to resolve, or keep resolved, each next hop's neighbour: an
/// NTF_USE update starts resolution as a packet would, and counts as use. Static entries
/// (permanent, noarp) are left alone: the kernel turns a permanent entry that gets NTF_USE
/// into a dynamic one.
pub(super) async fn refresh_neighbours(
    handle: &Handle,
    router: &mut Router,
    dataplane: &mut Dataplane,
) -> anyhow::Result<()> {
    let mut wanted: HashSet<(u32, IpAddr)> = router.kernel_neighbours().into_iter().collect();
    let mut writes = Vec::new();
    let mut dump = handle.neighbours().get().execute();
    while let Some(message) = dump.try_next().await? {
        // Every entry, for next hops to come too.
        if let Some((ifindex, addr, mac)) = host::parse_neighbour(&message) {
            writes.extend(router.neighbour(ifindex, addr, mac));
            if matches!(
                message.header.state,
                NeighbourState::Permanent | NeighbourState::Noarp
            ) {
                wanted.remove(&(ifindex, addr));
            }
        }
    }
    if !writes.is_empty() {
        dataplane.apply(&writes)?;
    }
    for (ifindex, addr) in wanted {
        let request = handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace();
        if let Err(err) = request.execute().await {
            debug!("asking the kernel to resolve {addr} on ifindex {ifindex}: {err}");
        }
    }
    Ok(())
}
