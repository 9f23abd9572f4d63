//! The benchmark's tools, for hosts with or without pktgen: an XDP traffic generator, a sink
//! that counts what arrives, a no-lookup redirect (the ceiling a forwarder cannot beat), and
//! the lookup micro-benchmark. Their XDP programs are in the `pop-dataplane-bench-xdp` object
//! (`pop-dataplane-bench-ebpf`); `pop-dataplane-bench` is their command line.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, DevMapHash, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use etherparse::PacketBuilder;
use pop_dataplane_bench_ebpf::{
    self as bench, GEN_HEADER_LEN_V4, GEN_HEADER_LEN_V6, GEN_TEMPLATE_LEN, GenFlow, MAX_GEN_FLOWS,
    SinkCounters, offsets,
};
use serde::Serialize;

use pop_dataplane::mac::MacAddr;

/// The benchmark's XDP object, embedded at build time.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pop-dataplane-bench-xdp"));

/// The Ethernet frame check sequence: on the wire, not in the frame XDP sees. Frame sizes are
/// given with it, as pktgen and RFC 2544 give them.
pub const FCS_LEN: usize = 4;

/// What the generator sends.
#[derive(Clone, Debug)]
pub struct TrafficSpec {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: IpAddr,
    /// Flows go to these, in turn.
    pub destinations: Vec<IpAddr>,
    /// Each destination gets this many flows, with source ports from `src_port`.
    pub ports_per_destination: u16,
    pub src_port: u16,
    pub dst_port: u16,
    /// On the wire, FCS included: 64 is the smallest Ethernet frame.
    pub frame_size: usize,
}

impl TrafficSpec {
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    fn header_len(&self) -> usize {
        if self.is_ipv6() {
            GEN_HEADER_LEN_V6
        } else {
            GEN_HEADER_LEN_V4
        }
    }

    /// The smallest frame (FCS included) that holds the headers.
    pub fn min_frame_size(&self) -> usize {
        (self.header_len() + FCS_LEN).max(64)
    }

    fn flow_count(&self) -> usize {
        self.destinations.len() * usize::from(self.ports_per_destination)
    }

    /// Every flow's frame, in order.
    pub fn frames(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        self.validate()?;
        Ok((0..self.flow_count())
            .map(|index| self.frame(index))
            .collect())
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.destinations.is_empty(), "no destinations");
        ensure!(
            self.ports_per_destination > 0,
            "ports per destination must be at least 1"
        );
        for dst in &self.destinations {
            ensure!(
                dst.is_ipv6() == self.is_ipv6(),
                "destination {dst} is not of the source's ({}) family",
                self.src
            );
        }
        ensure!(
            self.frame_size >= self.min_frame_size() && self.frame_size <= 1518,
            "frame size {} out of range {}..=1518 (FCS included)",
            self.frame_size,
            self.min_frame_size()
        );
        Ok(())
    }

    /// Flow `index`'s whole frame (without FCS), checksums included. The spec must be valid.
    fn frame(&self, index: usize) -> Vec<u8> {
        let dst = self.destinations[index % self.destinations.len()];
        let port_step = (index / self.destinations.len()) as u16;
        let src_port = self.src_port.wrapping_add(port_step);
        let builder = PacketBuilder::ethernet2(self.src_mac.0, self.dst_mac.0);
        let payload = vec![0u8; self.frame_size - FCS_LEN - self.header_len()];
        let mut frame = Vec::with_capacity(self.frame_size);
        let written = match (self.src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => builder
                .ipv4(src.octets(), dst.octets(), 64)
                .udp(src_port, self.dst_port)
                .write(&mut frame, &payload),
            (IpAddr::V6(src), IpAddr::V6(dst)) => builder
                .ipv6(src.octets(), dst.octets(), 64)
                .udp(src_port, self.dst_port)
                .write(&mut frame, &payload),
            _ => unreachable!("validated: one family"),
        };
        written.expect("a UDP packet under 1500 bytes always builds");
        frame
    }

    /// What differs between flows, read back from each flow's frame.
    fn flows(&self) -> Vec<GenFlow> {
        (0..self.flow_count())
            .map(|index| {
                let frame = self.frame(index);
                let mut flow = GenFlow::default();
                let (dst_at, dst_len, udp_at) = if self.is_ipv6() {
                    (offsets::V6_DST, 16, offsets::V6_UDP)
                } else {
                    flow.ip_checksum
                        .copy_from_slice(&frame[offsets::V4_CHECKSUM..][..2]);
                    (offsets::V4_DST, 4, offsets::V4_UDP)
                };
                flow.dst[..dst_len].copy_from_slice(&frame[dst_at..][..dst_len]);
                flow.udp_src_port
                    .copy_from_slice(&frame[udp_at + offsets::UDP_SRC_PORT..][..2]);
                flow.udp_checksum
                    .copy_from_slice(&frame[udp_at + offsets::UDP_CHECKSUM..][..2]);
                flow
            })
            .collect()
    }
}

/// Loads the bench object with its globals set.
fn load_object(flow_count: u32, ipv6: bool, sink_port: u16) -> anyhow::Result<Ebpf> {
    let ipv6 = u8::from(ipv6);
    EbpfLoader::new()
        .override_global(bench::GEN_FLOW_COUNT, &flow_count, true)
        .override_global(bench::GEN_IPV6, &ipv6, true)
        .override_global(bench::SINK_UDP_PORT, &sink_port, true)
        .load(BENCH_OBJECT)
        .context("loading the benchmark's XDP object (needs root)")
}

fn load_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("the bench object has no program {name}"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading {name} (verifier)"))?;
    Ok(program)
}

/// The `xdp_md` context of a frame of `len` bytes received on `ifindex`.
fn xdp_context(ifindex: u32, len: usize) -> [u8; 24] {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, ... }
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

fn c_name(ifname: &str) -> anyhow::Result<std::ffi::CString> {
    std::ffi::CString::new(ifname).with_context(|| format!("interface name {ifname:?}"))
}

pub fn ifindex(ifname: &str) -> anyhow::Result<u32> {
    let name = c_name(ifname)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface {ifname} in this network namespace");
    }
    Ok(index)
}

/// The XDP traffic generator: `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` runs
/// `bench_generate` once per frame, and the kernel sends each frame it returns `XDP_TX` for
/// out of the interface. A kernel that refuses live frames (some sandboxed kernels answer
/// EPERM) gets the same frames, flow after flow, from an AF_PACKET socket instead: far fewer
/// a second, said on stderr once.
pub struct Generator {
    ebpf: Ebpf,
    ifindex: u32,
    first_frame: Vec<u8>,
    /// Every flow's frame, for the AF_PACKET fallback.
    frames: Vec<Vec<u8>>,
    /// Set once live frames were refused: the fallback's socket, and the next flow.
    fallback: std::cell::RefCell<Option<(PacketSocket, usize)>>,
}

/// An AF_PACKET socket bound to one interface, sending whole frames past the qdisc.
struct PacketSocket(std::os::fd::OwnedFd);

impl PacketSocket {
    fn open(ifindex: u32) -> anyhow::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain socket calls; the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening an AF_PACKET socket");
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let socket = Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        // SAFETY: an all-zero sockaddr_ll is a valid one, filled in below.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex as i32;
        // SAFETY: a sockaddr_ll of its own size.
        let bound = unsafe {
            libc::bind(
                fd,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound < 0 {
            return Err(std::io::Error::last_os_error())
                .context("binding the AF_PACKET socket to the interface");
        }
        let on: libc::c_int = 1;
        // SAFETY: an int option of its own size. Without it frames go through the qdisc,
        // which may drop them when full; an error leaves that, and only slows the sender.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        Ok(socket)
    }

    /// Sends `frames` whole, retrying a full socket buffer.
    fn send_all(&self, frames: &[&[u8]]) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|frame| libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: an all-zero msghdr is a valid empty one.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_iov = iovec;
                header.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: header,
                    msg_len: 0,
                }
            })
            .collect();
        let mut sent = 0;
        while sent < messages.len() {
            // SAFETY: `messages` point at `iovecs`, which point at `frames`, all alive here.
            let result = unsafe {
                libc::sendmmsg(
                    self.0.as_raw_fd(),
                    messages[sent..].as_mut_ptr(),
                    (messages.len() - sent) as u32,
                    0,
                )
            };
            if result < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOBUFS)
                    || error.kind() == std::io::ErrorKind::WouldBlock
                {
                    std::thread::yield_now();
                    continue;
                }
                return Err(error).context("sending frames on the AF_PACKET socket");
            }
            sent += result as usize;
        }
        Ok(())
    }
}

/// Frames of the first call when sending for a duration: enough to measure the rate.
const CALIBRATION_FRAMES: u32 = 1 << 18;

/// Frames the kernel runs and sends as one batch: its default (a NAPI budget); 256 at most.
const LIVE_BATCH: u32 = 64;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sent {
    /// Frames the program generated and the kernel handed to the interface. A frame the
    /// receiving end had no room for is lost after this point, and counted as loss.
    pub packets: u64,
    pub seconds: f64,
    pub pps: f64,
    /// CPU time the generator's thread ran, in the kernel mostly.
    pub cpu_seconds: f64,
    /// How the frames went: `live_frames`, or `af_packet` where the kernel refuses those.
    pub via: &'static str,
}

impl Generator {
    pub fn new(ifname: &str, spec: &TrafficSpec) -> anyhow::Result<Self> {
        spec.validate()?;
        ensure!(
            spec.flow_count() <= MAX_GEN_FLOWS as usize,
            "{} flows ({} destinations x {} ports): the generator takes at most {MAX_GEN_FLOWS}",
            spec.flow_count(),
            spec.destinations.len(),
            spec.ports_per_destination
        );
        let flows = spec.flows();
        let mut ebpf = load_object(flows.len() as u32, spec.is_ipv6(), spec.dst_port)?;
        let first_frame = spec.frame(0);
        let mut template = [0u8; GEN_TEMPLATE_LEN];
        template[..spec.header_len()].copy_from_slice(&first_frame[..spec.header_len()]);
        let mut templates: Array<_, [u8; GEN_TEMPLATE_LEN]> = Array::try_from(
            ebpf.map_mut(bench::GEN_TEMPLATE)
                .context("no GEN_TEMPLATE map")?,
        )?;
        templates.set(0, &template, 0)?;
        let mut flow_map: Array<_, GenFlow> =
            Array::try_from(ebpf.map_mut(bench::GEN_FLOWS).context("no GEN_FLOWS map")?)?;
        for (index, flow) in flows.iter().enumerate() {
            flow_map.set(index as u32, flow, 0)?;
        }
        load_program(&mut ebpf, "bench_generate")?;
        Ok(Self {
            ebpf,
            ifindex: ifindex(ifname)?,
            first_frame,
            frames: spec.frames()?,
            fallback: std::cell::RefCell::new(None),
        })
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program("bench_generate")
            .context("no bench_generate")?
            .try_into()?)
    }

    /// Sends `frames` frames in one call; returns the time per frame the kernel measured.
    fn send_batch(&self, frames: u32) -> anyhow::Result<Duration> {
        if self.fallback.borrow().is_some() {
            return self.send_packets(frames);
        }
        let ctx = xdp_context(self.ifindex, self.first_frame.len());
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(&self.first_frame),
            ctx_in: Some(&ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
            ..TestRunOptions::default()
        });
        match result {
            Ok(result) => Ok(result.duration),
            Err(err) if refused(&err) => {
                eprintln!(
                    "warning: this kernel refuses BPF_PROG_TEST_RUN with live frames ({err}: EPERM); \
                     sending through an AF_PACKET socket instead, at a far lower rate"
                );
                *self.fallback.borrow_mut() = Some((PacketSocket::open(self.ifindex)?, 0));
                self.send_packets(frames)
            }
            Err(err) => {
                Err(err).context("BPF_PROG_TEST_RUN with live frames (kernel 5.18 or later)")
            }
        }
    }

    /// The fallback: `count` frames, flow after flow, from the AF_PACKET socket; the time per
    /// frame.
    fn send_packets(&self, count: u32) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut fallback = self.fallback.borrow_mut();
        let (socket, next) = fallback.as_mut().expect("set before use");
        let mut left = count as usize;
        while left > 0 {
            let batch: Vec<&[u8]> = (0..left.min(LIVE_BATCH as usize))
                .map(|i| self.frames[(*next + i) % self.frames.len()].as_slice())
                .collect();
            socket.send_all(&batch)?;
            *next = (*next + batch.len()) % self.frames.len();
            left -= batch.len();
        }
        Ok(start.elapsed() / count.max(1))
    }

    /// Sends `count` frames, or for about `duration`, as fast as it can.
    ///
    /// Each `BPF_PROG_TEST_RUN` call costs an RCU grace period (milliseconds) when it ends,
    /// so the frames go in as few calls as possible: one for a count; for a duration, a short
    /// one whose time per frame (the kernel's measure) sizes a second one for the rest.
    pub fn send(&self, limit: SendLimit) -> anyhow::Result<Sent> {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns()?;
        let sent = match limit {
            SendLimit::Count {
                frames: count,
                burst,
            } => {
                let burst = burst.clamp(1, u64::from(u32::MAX));
                let mut sent = 0;
                while sent < count {
                    let frames = (count - sent).min(burst) as u32;
                    self.send_batch(frames)?;
                    sent += u64::from(frames);
                }
                sent
            }
            SendLimit::Duration(duration) => {
                let per_frame = self
                    .send_batch(CALIBRATION_FRAMES)?
                    .max(Duration::from_nanos(1));
                let left = duration.saturating_sub(start.elapsed());
                let rest = left.as_secs_f64() / per_frame.as_secs_f64();
                let rest = rest.min(f64::from(u32::MAX)) as u32;
                if rest > 0 {
                    self.send_batch(rest)?;
                }
                u64::from(CALIBRATION_FRAMES) + u64::from(rest)
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        Ok(Sent {
            packets: sent,
            seconds,
            pps: sent as f64 / seconds,
            cpu_seconds: (thread_cpu_ns()? - cpu_start) as f64 / 1e9,
            via: if self.fallback.borrow().is_some() {
                "af_packet"
            } else {
                "live_frames"
            },
        })
    }
}

/// Whether `err` is the kernel refusing live frames outright (EPERM).
fn refused(err: &aya::programs::ProgramError) -> bool {
    matches!(err, aya::programs::ProgramError::SyscallError(e)
        if e.io_error.raw_os_error() == Some(libc::EPERM))
}

/// How much a generator sends.
#[derive(Clone, Copy, Debug)]
pub enum SendLimit {
    /// `frames` frames, in calls of `burst` (`u64::MAX`: in as few as possible).
    Count {
        frames: u64,
        burst: u64,
    },
    Duration(Duration),
}

/// Nanoseconds the calling thread has run, from the scheduler's own clock.
pub fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .context("/proc/thread-self/schedstat: no run time")
}

/// The sink: counts and drops the generator's packets on an interface.
pub struct Sink {
    ebpf: Ebpf,
    _link: XdpLinkId,
}

impl Sink {
    pub fn attach(ifname: &str, udp_port: u16) -> anyhow::Result<Self> {
        let mut ebpf = load_object(1, false, udp_port)?;
        let program = load_program(&mut ebpf, "bench_sink")?;
        let link = program
            .attach(c_name(ifname)?.as_c_str(), XdpMode::Driver)
            .with_context(|| format!("attaching the sink to {ifname} in native mode"))?;
        Ok(Self { ebpf, _link: link })
    }

    pub fn counters(&self) -> anyhow::Result<SinkCounters> {
        let counters: PerCpuArray<_, SinkCounters> = PerCpuArray::try_from(
            self.ebpf
                .map(bench::SINK_COUNTERS)
                .context("no SINK_COUNTERS map")?,
        )?;
        Ok(counters
            .get(&0, 0)?
            .iter()
            .fold(SinkCounters::default(), |sum, cpu| SinkCounters {
                packets: sum.packets + cpu.packets,
                bytes: sum.bytes + cpu.bytes,
            }))
    }
}

/// The ceiling: every frame arriving on one interface redirected out of another with no
/// parsing, lookup or rewrite.
pub struct Redirect {
    _ebpf: Ebpf,
    _link: XdpLinkId,
}

impl Redirect {
    pub fn attach(ingress: &str, egress: &str) -> anyhow::Result<Self> {
        let mut ebpf = load_object(1, false, 0)?;
        let mut ports = DevMap::try_from(
            ebpf.map_mut(bench::CEILING_EGRESS)
                .context("no CEILING_EGRESS map")?,
        )?;
        ports.set(0, ifindex(egress)?, None, 0)?;
        let program = load_program(&mut ebpf, "bench_redirect")?;
        let link = program
            .attach(c_name(ingress)?.as_c_str(), XdpMode::Driver)
            .with_context(|| format!("attaching the redirect to {ingress} in native mode"))?;
        Ok(Self {
            _ebpf: ebpf,
            _link: link,
        })
    }
}

/// The kernel-FIB XDP router (`bench_fib_forward`): what pop-dataplane is measured against.
/// It forwards by the FIB and neighbour table of the network namespace it is loaded in.
pub struct FibForward {
    ebpf: Ebpf,
    _links: Vec<XdpLinkId>,
}

impl FibForward {
    /// Loads the program, with `ports` (interface names) as the ports it may send out of.
    pub fn load(ports: &[String]) -> anyhow::Result<Self> {
        let mut ebpf = load_object(1, false, 0)?;
        let mut map = DevMapHash::try_from(
            ebpf.map_mut(bench::FIB_FORWARD_PORTS)
                .context("no FIB_FORWARD_PORTS map")?,
        )?;
        for port in ports {
            let index = ifindex(port)?;
            map.insert(index, index, None, 0)
                .with_context(|| format!("adding {port} to the ports"))?;
        }
        load_program(&mut ebpf, "bench_fib_forward")?;
        Ok(Self {
            ebpf,
            _links: Vec::new(),
        })
    }

    /// Attaches the program to each of `ports` in native mode.
    pub fn attach(&mut self, ports: &[String]) -> anyhow::Result<()> {
        for port in ports {
            let link = self
                .program()
                .attach(c_name(port)?.as_c_str(), XdpMode::Driver)
                .with_context(|| format!("attaching the FIB forwarder to {port} in native mode"))?;
            self._links.push(link);
        }
        Ok(())
    }

    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut("bench_fib_forward")
            .expect("loaded")
            .try_into()
            .expect("an XDP program")
    }
}

/// What one program did to a set of frames, and what it cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LookupCost {
    pub packets: u64,
    /// The kernel's measure of one run, minus that of an empty program run the same way, on
    /// average over the frames.
    pub ns_per_packet: f64,
    /// The same for the empty program alone: the cost of a test run.
    pub overhead_ns: f64,
    /// How many frames got each XDP action (by action number).
    pub actions: std::collections::BTreeMap<u32, u64>,
}

/// Runs `program` on each frame once (many distinct packets, not one repeated: a repeated
/// packet finds its path through the table in cache), each run measured by the kernel, and
/// alternated with runs of an empty program whose cost is subtracted.
pub fn lookup_cost(
    program: &Xdp,
    ingress_ifindex: u32,
    frames: &[Vec<u8>],
) -> anyhow::Result<LookupCost> {
    let mut null_object = load_object(1, false, 0)?;
    let null = load_program(&mut null_object, "bench_null")?;
    let mut out = vec![0u8; 2048];
    let mut run = |program: &Xdp, frame: &[u8]| -> anyhow::Result<(u32, u64)> {
        let ctx = xdp_context(ingress_ifindex, frame.len());
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        Ok((result.return_value, result.duration.as_nanos() as u64))
    };
    let mut cost = LookupCost::default();
    let (mut total_ns, mut null_ns) = (0u64, 0u64);
    for frame in frames {
        let (action, ns) = run(program, frame)?;
        total_ns += ns;
        *cost.actions.entry(action).or_default() += 1;
        null_ns += run(null, frame)?.1;
    }
    cost.packets = frames.len() as u64;
    let n = frames.len().max(1) as f64;
    cost.overhead_ns = null_ns as f64 / n;
    cost.ns_per_packet = (total_ns as f64 - null_ns as f64) / n;
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str, destinations: &[&str], frame_size: usize) -> TrafficSpec {
        TrafficSpec {
            src_mac: "02:00:00:01:00:02".parse().unwrap(),
            dst_mac: "02:00:00:01:00:01".parse().unwrap(),
            src: src.parse().unwrap(),
            destinations: destinations.iter().map(|d| d.parse().unwrap()).collect(),
            ports_per_destination: 3,
            src_port: 1000,
            dst_port: 9,
            frame_size,
        }
    }

    /// The program writes the template's header and then the flow's fields over any page;
    /// doing the same here must give exactly the flow's own frame.
    fn assemble(spec: &TrafficSpec, index: usize, garbage: u8) -> Vec<u8> {
        let flows = spec.flows();
        let flow = &flows[index];
        let mut frame = vec![garbage; spec.frame_size - FCS_LEN];
        let payload_start = spec.header_len();
        frame[payload_start..].copy_from_slice(&spec.frame(0)[payload_start..]);
        frame[..spec.header_len()].copy_from_slice(&spec.frame(0)[..spec.header_len()]);
        let udp = if spec.is_ipv6() {
            frame[offsets::V6_DST..][..16].copy_from_slice(&flow.dst);
            offsets::V6_UDP
        } else {
            frame[offsets::V4_DST..][..4].copy_from_slice(&flow.dst[..4]);
            frame[offsets::V4_CHECKSUM..][..2].copy_from_slice(&flow.ip_checksum);
            offsets::V4_UDP
        };
        frame[udp + offsets::UDP_SRC_PORT..][..2].copy_from_slice(&flow.udp_src_port);
        frame[udp + offsets::UDP_CHECKSUM..][..2].copy_from_slice(&flow.udp_checksum);
        frame
    }

    #[test]
    fn every_flow_assembles_to_its_own_valid_frame() {
        for spec in [
            spec("198.18.1.2", &["198.18.9.1", "198.18.9.2"], 64),
            spec("198.18.1.2", &["198.18.9.1"], 1518),
            spec("2001:2:0:1::2", &["2001:2:0:9::1", "2001:2:0:9::2"], 78),
        ] {
            assert_eq!(spec.flows().len(), spec.destinations.len() * 3);
            for index in 0..spec.flow_count() {
                let frame = assemble(&spec, index, 0xa5);
                assert_eq!(frame, spec.frame(index), "flow {index}");
                assert_eq!(frame.len() + FCS_LEN, spec.frame_size);
                let packet = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
                let Some(etherparse::TransportSlice::Udp(udp)) = packet.transport else {
                    panic!("not UDP");
                };
                assert_eq!(
                    udp.source_port(),
                    1000 + (index / spec.destinations.len()) as u16
                );
                let checksum = match packet.net.unwrap() {
                    etherparse::NetSlice::Ipv4(ip) => {
                        let header = ip.header().to_header();
                        assert_eq!(header.header_checksum, header.calc_header_checksum());
                        udp.to_header()
                            .calc_checksum_ipv4(&header, udp.payload())
                            .unwrap()
                    }
                    etherparse::NetSlice::Ipv6(ip) => udp
                        .to_header()
                        .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                        .unwrap(),
                    _ => panic!("not IP"),
                };
                assert_eq!(udp.checksum(), checksum, "flow {index}");
            }
        }
    }

    #[test]
    fn specs_out_of_range_are_refused() {
        assert!(spec("198.18.1.2", &["198.18.9.1"], 63).validate().is_err());
        assert!(
            spec("2001:2:0:1::2", &["2001:2:0:9::1"], 64)
                .validate()
                .is_err()
        );
        assert!(
            spec("198.18.1.2", &["2001:2:0:9::1"], 64)
                .validate()
                .is_err()
        );
        assert!(spec("198.18.1.2", &[], 64).validate().is_err());
        assert!(
            spec("198.18.1.2", &["198.18.9.1"], 1519)
                .validate()
                .is_err()
        );
        assert!(
            spec("198.18.1.2", &["198.18.9.1"; 30_000], 64)
                .validate()
                .is_ok()
        );
    }
}
