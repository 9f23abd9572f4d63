//! `pop-dataplane-bench`: the benchmark's tools. `cargo xtask bench` drives them in network
//! namespaces; on a real host they can be used by hand (a generator host, a sink host).

use std::{
    io::BufRead as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use pop_dataplane::{dataplane::Pinned, mac::MacAddr};
use pop_dataplane_bench::{
    FibForward, Generator, Redirect, SendLimit, Sink, TrafficSpec, ifindex, lookup_cost,
};

/// Traffic generator, sink, no-lookup redirect and lookup micro-benchmark for pop-dataplane.
#[derive(Parser)]
#[command(name = "pop-dataplane-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Traffic {
    /// Source address (its family is the traffic's).
    #[arg(long)]
    src: IpAddr,
    /// Destination addresses; flows go to each in turn.
    #[arg(long, num_args = 1.., required_unless_present = "dst_file")]
    dst: Vec<IpAddr>,
    /// A file of destination addresses, one per line.
    #[arg(long, conflicts_with = "dst")]
    dst_file: Option<PathBuf>,
    /// Flows per destination, each with its own UDP source port.
    #[arg(long, default_value_t = 1)]
    ports: u16,
    /// The first UDP source port.
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    /// The UDP destination port (the sink counts this one).
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
    /// Frame size on the wire, FCS included.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Destination MAC: the next hop's (the router's port).
    #[arg(long)]
    dst_mac: MacAddr,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    src_mac: Option<MacAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Send UDP traffic out of an interface with the XDP generator (BPF_PROG_TEST_RUN live
    /// frames); prints what was sent as JSON.
    Generate {
        /// The interface to send from.
        #[arg(long)]
        dev: String,
        #[command(flatten)]
        traffic: Traffic,
        /// Frames to send.
        #[arg(long, required_unless_present = "seconds", conflicts_with = "seconds")]
        count: Option<u64>,
        /// Seconds to send for (about: the rate is measured on the first 262,144 frames).
        #[arg(long)]
        seconds: Option<f64>,
        /// With --count: frames per BPF_PROG_TEST_RUN call (each call ends with an RCU grace
        /// period). Bursts of 64 or fewer are received by a veth peer before the next.
        #[arg(long, requires = "count")]
        burst: Option<u64>,
        /// Run on this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Count and drop the generator's packets arriving on an interface. Prints "ready", then a
    /// JSON line of counters for every line read on stdin; ends at end of input.
    Sink {
        #[arg(long)]
        dev: String,
        /// The UDP destination port to count.
        #[arg(long, default_value_t = 9)]
        port: u16,
    },
    /// The ceiling: redirect every frame from one interface to another, with no lookup.
    /// Prints "ready"; ends at end of input.
    Redirect {
        #[arg(long = "in")]
        ingress: String,
        #[arg(long = "out")]
        egress: String,
    },
    /// The kernel-FIB XDP router: forwards by this namespace's kernel FIB and neighbours
    /// (`bpf_fib_lookup`), attached to every `--dev`, sending out of any of them. Prints
    /// "ready"; ends at end of input.
    FibForward {
        #[arg(long = "dev", required = true)]
        devs: Vec<String>,
    },
    /// Cost of a program per packet, over many distinct packets (BPF_PROG_TEST_RUN; nothing
    /// is sent): the running dataplane's, or with `--fib-forward DEV...` the kernel-FIB XDP
    /// router's, against this namespace's kernel FIB. Prints JSON.
    Lookup {
        /// The kernel-FIB router instead, sending out of these interfaces.
        #[arg(long = "fib-forward", num_args = 1..)]
        fib_forward: Vec<String>,
        /// Where the dataplane is pinned.
        #[arg(long, default_value = "/sys/fs/bpf/pop-dataplane")]
        pin_dir: PathBuf,
        /// The port the packets arrive on.
        #[arg(long = "in")]
        ingress: String,
        #[command(flatten)]
        traffic: Traffic,
        /// Run on this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate {
            dev,
            traffic,
            count,
            seconds,
            burst,
            cpu,
        } => {
            pin_to_cpu(cpu)?;
            let spec = traffic_spec(&traffic, &dev)?;
            let generator = Generator::new(&dev, &spec)?;
            let limit = match (count, seconds) {
                (Some(frames), _) => SendLimit::Count {
                    frames,
                    burst: burst.unwrap_or(u64::MAX),
                },
                (None, Some(seconds)) => SendLimit::Duration(Duration::from_secs_f64(seconds)),
                (None, None) => bail!("give --count or --seconds"),
            };
            let sent = generator.send(limit)?;
            println!("{}", serde_json::to_string(&sent)?);
        }
        Command::Sink { dev, port } => {
            let sink = Sink::attach(&dev, port)?;
            println!("ready");
            for line in std::io::stdin().lock().lines() {
                line.context("reading stdin")?;
                println!("{}", serde_json::to_string(&counters_json(&sink)?)?);
            }
        }
        Command::Redirect { ingress, egress } => {
            let _redirect = Redirect::attach(&ingress, &egress)?;
            println!("ready");
            for line in std::io::stdin().lock().lines() {
                line.context("reading stdin")?;
            }
        }
        Command::FibForward { devs } => {
            let mut forward = FibForward::load(&devs)?;
            forward.attach(&devs)?;
            println!("ready");
            for line in std::io::stdin().lock().lines() {
                line.context("reading stdin")?;
            }
        }
        Command::Lookup {
            fib_forward,
            pin_dir,
            ingress,
            traffic,
            cpu,
        } => {
            pin_to_cpu(cpu)?;
            let spec = traffic_spec(&traffic, &ingress)?;
            let frames = spec.frames()?;
            let cost = if fib_forward.is_empty() {
                let pinned = Pinned::open(&pin_dir)?;
                lookup_cost(pinned.program(), ifindex(&ingress)?, &frames)?
            } else {
                let mut forward = FibForward::load(&fib_forward)?;
                lookup_cost(forward.program(), ifindex(&ingress)?, &frames)?
            };
            println!("{}", serde_json::to_string(&cost)?);
        }
    }
    Ok(())
}

fn counters_json(sink: &Sink) -> anyhow::Result<serde_json::Value> {
    let counters = sink.counters()?;
    Ok(serde_json::json!({ "packets": counters.packets, "bytes": counters.bytes }))
}

fn traffic_spec(traffic: &Traffic, ifname: &str) -> anyhow::Result<TrafficSpec> {
    let destinations = match &traffic.dst_file {
        Some(path) => read_addresses(path)?,
        None => traffic.dst.clone(),
    };
    let src_mac = match traffic.src_mac {
        Some(mac) => mac,
        None => interface_mac(ifname)?,
    };
    Ok(TrafficSpec {
        src_mac,
        dst_mac: traffic.dst_mac,
        src: traffic.src,
        destinations,
        ports_per_destination: traffic.ports,
        src_port: traffic.src_port,
        dst_port: traffic.dst_port,
        frame_size: traffic.size,
    })
}

fn read_addresses(path: &Path) -> anyhow::Result<Vec<IpAddr>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            line.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}:{}: {:?} is not an IP address",
                    path.display(),
                    number + 1,
                    line.trim()
                )
            })
        })
        .collect()
}

fn interface_mac(ifname: &str) -> anyhow::Result<MacAddr> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (no interface {ifname}?)"))?;
    text.trim()
        .parse()
        .map_err(|err: String| anyhow::anyhow!("{path}: {err}"))
}

fn pin_to_cpu(cpu: Option<usize>) -> anyhow::Result<()> {
    let Some(cpu) = cpu else {
        return Ok(());
    };
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it for cpu < 1024.
    let result = unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            bail!("CPU {cpu} out of range");
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        bail!("running on CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
