//! Attaching the program to ports: bpf_links pinned under the pin directory, so that the
//! dataplane outlives the daemon when asked to, and a new daemon swaps its program into them.

use std::{fs, path::PathBuf};

use anyhow::Context as _;
use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};
use log::{info, warn};

use super::{Dataplane, LINKS_DIR, unpin};

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on any interface, slower.
    Generic,
}

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    Native,
    Generic,
    /// The program swapped into the link a previous daemon left (in that link's mode).
    Replaced,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Replaced => "replaced",
        })
    }
}

/// An XDP link, pinned so that it outlives the daemon when it must.
pub(super) struct AttachedLink {
    ifname: String,
    ifindex: u32,
    /// The pin, or `None` when not pinned.
    pin: Option<PathBuf>,
    link: FdLink,
}

impl Dataplane {
    /// Attaches the program to port `ifname` (`ifindex`), pinning the link. When a pinned
    /// link from a previous daemon is there, the program is swapped into it instead: one
    /// atomic update, no packet misses a program.
    pub fn attach(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> anyhow::Result<AttachedMode> {
        if let Some(pin) = self.link_pin(ifindex)
            && pin.exists()
        {
            match self.replace_in_link(&pin) {
                Ok(id) => {
                    self.keep_link(ifname, ifindex, id, Some(pin))?;
                    info!("{ifname}: program replaced in the running link");
                    return Ok(AttachedMode::Replaced);
                }
                // A link whose interface went away (its namespace deleted, say) is severed
                // for good, and the ifindex may now be another interface's: the pin is
                // dropped and the port attached afresh.
                Err(err) => {
                    warn!(
                        "{ifname}: the link pinned at {} cannot take the program ({err:#});                          removing it and attaching afresh",
                        pin.display()
                    );
                    fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
                }
            }
        }
        let ifname_c = std::ffi::CString::new(ifname)?;
        let native = match mode {
            AttachMode::Generic => None,
            AttachMode::Native | AttachMode::Auto => {
                Some(self.program().attach(ifname_c.as_c_str(), XdpMode::Driver))
            }
        };
        let id = match native {
            Some(Ok(id)) => Some(id),
            Some(Err(err)) if mode == AttachMode::Native => {
                return Err(attach_error(err, ifname, AttachedMode::Native));
            }
            Some(Err(err)) => {
                warn!(
                    "{ifname}: native XDP failed ({}); using generic mode, which is slower",
                    anyhow::Error::from(err)
                );
                None
            }
            None => None,
        };
        let (id, attached) = match id {
            Some(id) => (id, AttachedMode::Native),
            None => {
                let id = self
                    .program()
                    .attach(ifname_c.as_c_str(), XdpMode::Skb)
                    .map_err(|err| attach_error(err, ifname, AttachedMode::Generic))?;
                (id, AttachedMode::Generic)
            }
        };
        let pin = self.link_pin(ifindex);
        self.keep_link(ifname, ifindex, id, pin)?;
        info!("{ifname}: attached ({attached} mode)");
        Ok(attached)
    }

    /// Swaps this program into the XDP link pinned at `pin`.
    fn replace_in_link(&mut self, pin: &std::path::Path) -> anyhow::Result<XdpLinkId> {
        let pinned = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .with_context(|| format!("{} is not an XDP link", pin.display()))?;
        Ok(self.program().attach_to_link(link)?)
    }

    fn link_pin(&self, ifindex: u32) -> Option<PathBuf> {
        self.pin_dir
            .as_ref()
            .map(|dir| dir.join(LINKS_DIR).join(ifindex.to_string()))
    }

    /// Takes the link out of aya's keeping (which would detach it on drop) into ours,
    /// pinned at `pin`.
    fn keep_link(
        &mut self,
        ifname: &str,
        ifindex: u32,
        id: XdpLinkId,
        pin: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let link = self.program().take_link(id)?;
        let link = FdLink::try_from(link).context(
            "the kernel attached XDP without a bpf_link (kernel older than 5.9?): links cannot be \
             pinned, so the dataplane cannot outlive the daemon",
        )?;
        if let Some(path) = &pin
            && !path.exists()
        {
            // Pinning consumes the link; keep a handle by reopening the pin.
            link.pin(path)
                .with_context(|| format!("pinning the XDP link at {}", path.display()))?;
            let link = FdLink::from(PinnedLink::from_pin(path)?);
            self.links.push(AttachedLink {
                ifname: ifname.to_owned(),
                ifindex,
                pin,
                link,
            });
            return Ok(());
        }
        self.links.push(AttachedLink {
            ifname: ifname.to_owned(),
            ifindex,
            pin,
            link,
        });
        Ok(())
    }

    /// Pinned links of ports that are no longer attached by us: (ifindex, pin).
    pub fn stale_links(&self) -> Vec<(u32, PathBuf)> {
        let Some(dir) = &self.pin_dir else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir.join(LINKS_DIR)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let ifindex: u32 = entry.file_name().to_str()?.parse().ok()?;
                (!self.links.iter().any(|l| l.ifindex == ifindex)).then(|| (ifindex, entry.path()))
            })
            .collect()
    }

    /// Detaches from port `ifindex` (ours, or a pinned link a previous daemon left).
    pub fn detach(&mut self, ifindex: u32) {
        if let Some(i) = self.links.iter().position(|l| l.ifindex == ifindex) {
            let link = self.links.remove(i);
            if let Some(pin) = &link.pin {
                let _ = fs::remove_file(pin);
            }
            info!("{}: detached", link.ifname);
            drop(link.link);
        } else if let Some(pin) = self.link_pin(ifindex)
            && fs::remove_file(&pin).is_ok()
        {
            info!("ifindex {ifindex}: detached a link left by a previous daemon");
        }
    }

    /// Detaches from every port and removes every pin: the dataplane stops.
    pub fn stop(mut self) {
        while let Some(link) = self.links.pop() {
            if let Some(pin) = &link.pin {
                let _ = fs::remove_file(pin);
            }
            info!("{}: detached", link.ifname);
        }
        for (ifindex, _) in self.stale_links() {
            self.detach(ifindex);
        }
        if let Some(dir) = self.pin_dir.take()
            && let Err(err) = unpin(&dir)
        {
            warn!("{err:#}");
        }
    }

    /// Leaves the dataplane forwarding on its pinned program, maps and links, for the next
    /// daemon to take over.
    pub fn keep_running(mut self) {
        for link in self.links.drain(..) {
            if link.pin.is_none() {
                warn!(
                    "{}: its link is not pinned; it stops with the daemon",
                    link.ifname
                );
            }
        }
        self.pin_dir = None;
    }
}

/// An attach error, with what to do about the usual ones.
fn attach_error(
    err: aya::programs::ProgramError,
    ifname: &str,
    mode: AttachedMode,
) -> anyhow::Error {
    let errno = match &err {
        aya::programs::ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    let what = match errno {
        Some(libc::EBUSY | libc::EEXIST) => format!(
            "{ifname} already has an XDP program (another pop-dataplane, or another tool): two \
             dataplanes cannot share an interface"
        ),
        Some(libc::EOPNOTSUPP) if mode == AttachedMode::Native => format!(
            "{ifname}'s driver does not support native XDP: run with --xdp-mode generic (or \
             auto, which falls back to generic mode for such interfaces)"
        ),
        _ => format!("attaching to {ifname} in {mode} mode"),
    };
    anyhow::Error::from(err).context(what)
}
