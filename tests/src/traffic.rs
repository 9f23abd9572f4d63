//! Steady, numbered UDP traffic between lab hosts, for what must be measured packet by packet:
//! loss across a restart, the moment a failover or a reload takes effect. Each datagram
//! carries its sequence number, its flow and the monotonic time it was sent (the clock is the
//! same in every namespace of the machine); receivers note which interface it came in on.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// What a receiver got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub seq: u64,
    pub flow: u32,
    pub sent_ns: u64,
    pub received_ns: u64,
    /// Index into the receivers' devices.
    pub device: usize,
}

/// The machine's monotonic clock in nanoseconds: comparable across namespaces.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// UDP receivers on `port` in a namespace, one per device.
pub struct Receivers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<Vec<Received>>>>,
}

impl Receivers {
    /// Starts receiving on `port` on each of `devices` in `netns`; ready when it returns.
    pub fn start(netns: &Netns, devices: &[&str], port: u16) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready, bound) = std::sync::mpsc::channel();
        for (index, device) in devices.iter().enumerate() {
            let path = netns.path();
            let device = device.to_string();
            let stop = Arc::clone(&stop);
            let ready = ready.clone();
            threads.push(thread::spawn(move || -> anyhow::Result<Vec<Received>> {
                let socket = (|| -> anyhow::Result<UdpSocket> {
                    enter(&path)?;
                    let socket = bound_socket(&device, port)?;
                    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                    Ok(socket)
                })();
                let socket = match socket {
                    Ok(socket) => {
                        let _ = ready.send(Ok(()));
                        socket
                    }
                    Err(err) => {
                        let _ = ready.send(Err(format!("{err:#}")));
                        return Err(err);
                    }
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    if n < 20 {
                        continue;
                    }
                    got.push(Received {
                        seq: u64::from_be_bytes(buf[0..8].try_into().expect("8 bytes")),
                        flow: u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")),
                        sent_ns: u64::from_be_bytes(buf[12..20].try_into().expect("8 bytes")),
                        received_ns: now_ns(),
                        device: index,
                    });
                }
                Ok(got)
            }));
        }
        for _ in devices {
            if let Err(err) = bound.recv().context("a receiver thread died")? {
                bail!("receiver: {err}");
            }
        }
        Ok(Self { stop, threads })
    }

    /// Stops, and returns everything received, in sequence order.
    pub fn stop(self) -> anyhow::Result<Vec<Received>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for thread in self.threads {
            all.extend(thread.join().expect("receiver thread")?);
        }
        all.sort_by_key(|r| r.seq);
        Ok(all)
    }
}

/// A UDP socket on `port`, receiving only what arrives on `device`.
fn bound_socket(device: &str, port: u16) -> anyhow::Result<UdpSocket> {
    // SAFETY: plain socket calls on a descriptor we own; options point at locals.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let socket = <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const one).cast(), 4);
        }
        let rcvbuf: libc::c_int = 8 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf).cast(),
            4,
        );
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as u32,
        ) != 0
        {
            bail!(
                "SO_BINDTODEVICE {device}: {}",
                std::io::Error::last_os_error()
            );
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            bail!(
                "bind :{port} on {device}: {}",
                std::io::Error::last_os_error()
            );
        }
        let _ = socket.as_raw_fd();
        Ok(socket)
    }
}

fn enter(path: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: setns on a namespace file we own.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A steady sender in a namespace: datagrams to `targets` (address and source port, taken in
/// turn, each its own flow) at `rate` per second, until stopped.
pub struct Sender {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<u64>>,
}

impl Sender {
    pub fn start(
        netns: &Netns,
        src: Ipv4Addr,
        targets: Vec<(Ipv4Addr, u16)>,
        port: u16,
        rate: u64,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = netns.path();
        let flag = Arc::clone(&stop);
        let (ready, started) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || -> anyhow::Result<u64> {
            let sockets = (|| -> anyhow::Result<Vec<UdpSocket>> {
                enter(&path)?;
                targets
                    .iter()
                    .map(|(_, sport)| {
                        UdpSocket::bind(SocketAddrV4::new(src, *sport)).map_err(Into::into)
                    })
                    .collect()
            })();
            let sockets = match sockets {
                Ok(sockets) => {
                    let _ = ready.send(Ok(()));
                    sockets
                }
                Err(err) => {
                    let _ = ready.send(Err(format!("{err:#}")));
                    return Err(err);
                }
            };
            let start = Instant::now();
            let mut seq = 0u64;
            let mut payload = [0u8; 20];
            while !flag.load(Ordering::Relaxed) {
                // Keep to the rate: send what is due, then nap.
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while seq < due {
                    let flow = (seq % targets.len() as u64) as usize;
                    payload[0..8].copy_from_slice(&seq.to_be_bytes());
                    payload[8..12].copy_from_slice(&(flow as u32).to_be_bytes());
                    payload[12..20].copy_from_slice(&now_ns().to_be_bytes());
                    let (dst, _) = targets[flow];
                    sockets[flow].send_to(&payload, SocketAddrV4::new(dst, port))?;
                    seq += 1;
                }
                thread::sleep(Duration::from_micros(200));
            }
            Ok(seq)
        });
        match started.recv().context("the sender thread died")? {
            Ok(()) => Ok(Self { stop, thread }),
            Err(err) => bail!("sender: {err}"),
        }
    }

    /// Stops; the number of datagrams sent.
    pub fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sender thread")
    }
}
