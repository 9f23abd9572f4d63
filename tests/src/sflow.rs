//! sFlow v5 for the tests: a decoder of the datagrams (written from the sFlow v5
//! specification, sharing nothing with the daemon's encoder), a UDP receiver in a namespace,
//! and `sfacctd` (pmacct's sFlow collector) writing what it decodes to JSON files.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::netns::Netns;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub agent: IpAddr,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub flows: Vec<FlowSample>,
    pub counters: Vec<CounterSample>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSample {
    pub sequence: u32,
    pub source_type: u32,
    pub source_index: u32,
    pub sampling_rate: u32,
    pub sample_pool: u32,
    pub drops: u32,
    pub input: u32,
    /// As sent: the format in the top two bits (1: discarded, with the reason below).
    pub output: u32,
    pub header_protocol: u32,
    pub frame_length: u32,
    pub stripped: u32,
    pub header: Vec<u8>,
    /// Extended router data: next hop, source and destination prefix lengths.
    pub router: Option<(IpAddr, u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSample {
    pub sequence: u32,
    pub source_index: u32,
    pub generic: Option<GenericCounters>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenericCounters {
    pub ifindex: u32,
    pub if_type: u32,
    pub status: u32,
    pub in_octets: u64,
    pub in_unicast: u32,
    pub out_octets: u64,
    pub out_unicast: u32,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> anyhow::Result<u32> {
        let word = self
            .bytes
            .get(self.at..self.at + 4)
            .context("datagram ends inside a word")?;
        self.at += 4;
        Ok(u32::from_be_bytes(word.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    fn bytes(&mut self, len: usize) -> anyhow::Result<&'a [u8]> {
        let padded = len.div_ceil(4) * 4;
        let bytes = self
            .bytes
            .get(self.at..self.at + len)
            .context("datagram ends inside opaque data")?;
        ensure!(
            self.at + padded <= self.bytes.len(),
            "opaque data not padded"
        );
        self.at += padded;
        Ok(bytes)
    }

    fn address(&mut self) -> anyhow::Result<IpAddr> {
        Ok(match self.u32()? {
            1 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.bytes(4)?).expect("4"),
            )),
            2 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.bytes(16)?).expect("16"),
            )),
            other => bail!("address type {other}"),
        })
    }

    /// A sub-reader over the next `len` bytes.
    fn record(&mut self, len: usize) -> anyhow::Result<Reader<'a>> {
        let bytes = self.bytes(len)?;
        Ok(Reader { bytes, at: 0 })
    }

    fn done(&self) -> anyhow::Result<()> {
        ensure!(
            self.at == self.bytes.len(),
            "{} bytes left over in a record",
            self.bytes.len() - self.at
        );
        Ok(())
    }
}

/// Decodes one datagram; every length in it must add up.
pub fn decode(bytes: &[u8]) -> anyhow::Result<Datagram> {
    let mut r = Reader { bytes, at: 0 };
    ensure!(r.u32()? == 5, "not sFlow version 5");
    let agent = r.address()?;
    let _sub_agent = r.u32()?;
    let sequence = r.u32()?;
    let uptime_ms = r.u32()?;
    let samples = r.u32()?;
    let mut datagram = Datagram {
        agent,
        sequence,
        uptime_ms,
        flows: Vec::new(),
        counters: Vec::new(),
    };
    for _ in 0..samples {
        let format = r.u32()?;
        let len = r.u32()? as usize;
        let mut s = r.record(len)?;
        match format {
            1 => {
                let sequence = s.u32()?;
                let source = s.u32()?;
                let mut flow = FlowSample {
                    sequence,
                    source_type: source >> 24,
                    source_index: source & 0xff_ffff,
                    sampling_rate: s.u32()?,
                    sample_pool: s.u32()?,
                    drops: s.u32()?,
                    input: s.u32()?,
                    output: s.u32()?,
                    header_protocol: 0,
                    frame_length: 0,
                    stripped: 0,
                    header: Vec::new(),
                    router: None,
                };
                let records = s.u32()?;
                for _ in 0..records {
                    let format = s.u32()?;
                    let len = s.u32()? as usize;
                    let mut f = s.record(len)?;
                    match format {
                        1 => {
                            flow.header_protocol = f.u32()?;
                            flow.frame_length = f.u32()?;
                            flow.stripped = f.u32()?;
                            let header_len = f.u32()? as usize;
                            flow.header = f.bytes(header_len)?.to_vec();
                        }
                        1002 => {
                            let next_hop = f.address()?;
                            flow.router = Some((next_hop, f.u32()?, f.u32()?));
                        }
                        other => bail!("flow record format {other}"),
                    }
                    f.done()?;
                }
                datagram.flows.push(flow);
            }
            2 => {
                let sequence = s.u32()?;
                let source = s.u32()?;
                let mut counters = CounterSample {
                    sequence,
                    source_index: source & 0xff_ffff,
                    generic: None,
                };
                for _ in 0..s.u32()? {
                    let format = s.u32()?;
                    let len = s.u32()? as usize;
                    let mut c = s.record(len)?;
                    if format == 1 {
                        let ifindex = c.u32()?;
                        let if_type = c.u32()?;
                        let _speed = c.u64()?;
                        let _direction = c.u32()?;
                        let status = c.u32()?;
                        let in_octets = c.u64()?;
                        let in_unicast = c.u32()?;
                        for _ in 0..5 {
                            c.u32()?;
                        }
                        let out_octets = c.u64()?;
                        let out_unicast = c.u32()?;
                        for _ in 0..5 {
                            c.u32()?;
                        }
                        c.done()?;
                        counters.generic = Some(GenericCounters {
                            ifindex,
                            if_type,
                            status,
                            in_octets,
                            in_unicast,
                            out_octets,
                            out_unicast,
                        });
                    }
                }
                datagram.counters.push(counters);
            }
            other => bail!("sample format {other}"),
        }
        s.done()?;
    }
    r.done()?;
    Ok(datagram)
}

/// A UDP socket in a namespace that keeps every datagram it receives, decoded.
pub struct Receiver {
    datagrams: Arc<Mutex<Vec<Datagram>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn bind(ns: &Netns, addr: &str) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = ns.path();
        let addr = addr.to_owned();
        let (d, e, s) = (datagrams.clone(), errors.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let socket = (|| -> anyhow::Result<UdpSocket> {
                let file = fs::File::open(&path)?;
                // SAFETY: setns on a namespace descriptor we own, for this thread only.
                if unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                } != 0
                {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                let socket = UdpSocket::bind(&addr)?;
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(socket)
            })();
            let socket = match socket {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match socket.recv(&mut buf) {
                    Ok(n) => match decode(&buf[..n]) {
                        Ok(datagram) => d.lock().unwrap().push(datagram),
                        Err(err) => e.lock().unwrap().push(format!("{err:#}")),
                    },
                    Err(_) => continue,
                }
            }
        });
        ready_rx
            .recv()
            .context("receiver thread")?
            .context("binding the sFlow receiver")?;
        Ok(Self {
            datagrams,
            errors,
            stop,
            thread: Some(thread),
        })
    }

    pub fn datagrams(&self) -> Vec<Datagram> {
        self.datagrams.lock().unwrap().clone()
    }

    /// Datagrams that did not decode, with why.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `sfacctd` running in a namespace: flows aggregated by the fields the tests check
/// (un-renormalised: one packet per sample) to `flows.json`, counter samples to
/// `counters.json`, one JSON object per line.
pub struct Sfacctd {
    child: Child,
    pub dir: PathBuf,
}

impl Sfacctd {
    pub fn start(ns: &Netns, dir: &Path, ip: &str, port: u16) -> anyhow::Result<Self> {
        let dir = dir.join("sfacctd");
        fs::create_dir_all(&dir)?;
        let config = dir.join("sfacctd.conf");
        fs::write(
            &config,
            format!(
                "daemonize: false\n\
                 sfacctd_ip: {ip}\n\
                 sfacctd_port: {port}\n\
                 sfacctd_renormalize: false\n\
                 sfacctd_pipe_size: 4194304\n\
                 sfacctd_counter_file: {counters}\n\
                 sfacctd_counter_output: json\n\
                 plugins: print\n\
                 aggregate: src_host, dst_host, src_port, dst_port, proto, in_iface, \
                 out_iface, src_mask, dst_mask, sampling_rate\n\
                 print_output: json\n\
                 print_output_file: {flows}\n\
                 print_output_file_append: true\n\
                 print_refresh_time: 1\n",
                counters = dir.join("counters.json").display(),
                flows = dir.join("flows.json").display(),
            ),
        )?;
        let log = fs::File::create(dir.join("sfacctd.log"))?;
        let child = ns
            .command("sfacctd")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sfacctd")?;
        let sfacctd = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns
            .exec("ss", &["-Hlun", &format!("sport = :{port}")])?
            .trim()
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("sfacctd did not listen within 10 s:\n{}", sfacctd.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sfacctd)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sfacctd.log")).unwrap_or_default()
    }

    fn lines(&self, name: &str) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// What the print plugin wrote so far: one object per aggregate and interval.
    pub fn flows(&self) -> Vec<serde_json::Value> {
        self.lines("flows.json")
    }

    /// The counter samples it wrote so far.
    pub fn counters(&self) -> Vec<serde_json::Value> {
        self.lines("counters.json")
    }
}

impl Drop for Sfacctd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
