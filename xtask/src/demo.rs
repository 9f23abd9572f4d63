//! `cargo xtask demo`: pop-dataplane forwarding real traffic between two hosts, with the
//! router's kernel forwarding off, and its counters to show it.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use pop_dataplane_tests::lab::{HOST_A, HOST_B, Lab, ROUTER_A, ROUTER_B};
use serde_json::Value;

use crate::output;

pub(crate) fn run(binary: &Path, xdp_mode: &str, seconds: u32) -> anyhow::Result<()> {
    // Ctrl-C stops the step under way (its processes get the signal too); the lab is then
    // dropped, which deletes the namespaces, their interfaces and processes, and the pins.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("handling Ctrl-C")?;
    let check = || -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted; lab removed");
        }
        Ok(())
    };

    let lab = Lab::new("pdp-demo")?;
    println!();
    println!("Lab: three network namespaces joined by veth pairs");
    println!(
        "  host A {}/{} ({})  <->  ({}) router ({})  <->  ({}) host B {}/{}",
        HOST_A.ipv4,
        HOST_A.prefix_len,
        HOST_A.ifname,
        ROUTER_A.ifname,
        lab.router.name(),
        ROUTER_B.ifname,
        HOST_B.ipv4,
        HOST_B.prefix_len
    );
    println!("  router: net.ipv4.ip_forward=0, so only XDP can forward between A and B");
    println!();
    println!(
        "Router config ({}):",
        lab.dir().join("router.toml").display()
    );
    for line in lab.router_config().lines().filter(|l| !l.is_empty()) {
        println!("  {line}");
    }
    println!();

    let mut daemon = lab.start_dataplane(binary, &lab.router_config(), xdp_mode)?;
    println!("pop-dataplane run --xdp-mode {xdp_mode}: started");
    check()?;
    let before = Counts::take(&lab, binary)?;

    let ping = lab
        .a
        .exec("ping", &["-c", "5", "-i", "0.2", "-W", "2", HOST_B.ipv4])
        .context("ping from A to B")?;
    let summary: Vec<&str> = ping
        .lines()
        .filter(|l| l.contains("packets transmitted") || l.starts_with("rtt"))
        .collect();
    println!("ping {} from A: {}", HOST_B.ipv4, summary.join("; "));
    check()?;

    let secs = seconds.to_string();
    let tcp = lab.iperf3(&["-t", &secs]).context("iperf3 TCP")?;
    println!(
        "TCP (iperf3, {seconds} s): {:.2} Gbit/s received",
        tcp["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9
    );
    check()?;

    let udp = lab
        .iperf3(&["-u", "-b", "500M", "-l", "1400", "-t", &secs])
        .context("iperf3 UDP")?;
    println!(
        "UDP (iperf3, {seconds} s at 500 Mbit/s): {} datagrams sent, {} lost",
        udp["end"]["sum"]["packets"], udp["end"]["sum"]["lost_packets"]
    );
    check()?;
    std::thread::sleep(Duration::from_millis(200));
    let after = Counts::take(&lab, binary)?;

    println!();
    println!("pop-dataplane stats:");
    let table = output(lab.dataplane_command(binary).arg("stats"))?;
    for line in table.lines() {
        println!("  {line}");
    }
    println!();
    let forwarded = |port: &str| after.forwarded(port) - before.forwarded(port);
    println!(
        "A sent {} frames; the XDP program on {} forwarded {} of them; B received {}.",
        after.a_sent - before.a_sent,
        ROUTER_A.ifname,
        forwarded(ROUTER_A.ifname),
        after.b_received - before.b_received
    );
    println!(
        "B sent {} frames; the XDP program on {} forwarded {} of them; A received {}.",
        after.b_sent - before.b_sent,
        ROUTER_B.ifname,
        forwarded(ROUTER_B.ifname),
        after.a_received - before.a_received
    );

    let status = daemon.stop()?;
    println!();
    println!("pop-dataplane stopped ({status}); removing the lab");
    drop(lab);
    let left = output(Command::new("ip").args(["netns", "list"]))?;
    if left.lines().any(|l| l.starts_with("pdp-demo")) {
        bail!("namespaces left behind:\n{left}");
    }
    println!("done: nothing left behind");
    Ok(())
}

/// The hosts' kernel packet counters and the dataplane's counters at one moment.
struct Counts {
    a_sent: u64,
    a_received: u64,
    b_sent: u64,
    b_received: u64,
    stats: Value,
}

impl Counts {
    fn take(lab: &Lab, binary: &Path) -> anyhow::Result<Self> {
        let (a_received, a_sent) = lab.a.link_packets(HOST_A.ifname)?;
        let (b_received, b_sent) = lab.b.link_packets(HOST_B.ifname)?;
        Ok(Self {
            a_sent,
            a_received,
            b_sent,
            b_received,
            stats: lab.stats(binary)?,
        })
    }

    fn forwarded(&self, port: &str) -> u64 {
        self.stats["interfaces"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == port))
            .and_then(|i| i["forwarded_packets"].as_u64())
            .unwrap_or(0)
    }
}
