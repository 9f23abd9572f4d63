//! The kernel's packet generator, through its /proc interface (Documentation/networking/
//! pktgen.rst): where a kernel has pktgen (`CONFIG_NET_PKTGEN`), the benchmark uses it as the
//! generator, as a PoP operator would. pktgen is per network namespace: its files are those
//! of the namespace the writer is in.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

/// pktgen's control directory.
pub const PROC_DIR: &str = "/proc/net/pktgen";

/// One pktgen run: UDP from `src` to every address in `dst_min..=dst_max` (at random) and
/// source ports `udp_src_min..=udp_src_max`, out of `dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub dev: String,
    /// Frames; 0 sends until stopped.
    pub count: u64,
    /// On the wire, FCS included (pktgen's `pkt_size` leaves the FCS out).
    pub frame_size: usize,
    pub dst_mac: String,
    pub src: IpAddr,
    pub dst_min: IpAddr,
    pub dst_max: IpAddr,
    pub udp_src_min: u16,
    pub udp_src_max: u16,
    pub udp_dst: u16,
}

/// Whether `netns`'s kernel has pktgen.
pub fn available(netns: &Netns) -> bool {
    netns.exec("test", &["-d", PROC_DIR]).is_ok()
}

/// The writes that set `job` up, in order: (file under [`PROC_DIR`], command).
pub fn setup_commands(job: &Job) -> Vec<(String, String)> {
    let thread = "kpktgend_0".to_owned();
    let dev = job.dev.clone();
    let v6 = job.src.is_ipv6();
    let (src_min, src_max, dst_min, dst_max) = if v6 {
        ("src6", "src6", "dst6_min", "dst6_max")
    } else {
        ("src_min", "src_max", "dst_min", "dst_max")
    };
    let mut commands = vec![
        (thread.clone(), "rem_device_all".to_owned()),
        (thread, format!("add_device {}", job.dev)),
        (dev.clone(), format!("count {}", job.count)),
        (dev.clone(), format!("pkt_size {}", job.frame_size - 4)),
        (dev.clone(), "delay 0".to_owned()),
        // Each skb sent once: a clone per frame would send the same flow many times.
        (dev.clone(), "clone_skb 0".to_owned()),
        (dev.clone(), format!("dst_mac {}", job.dst_mac)),
        (dev.clone(), format!("{src_min} {}", job.src)),
    ];
    if !v6 {
        commands.push((dev.clone(), format!("{src_max} {}", job.src)));
    }
    commands.extend([
        (dev.clone(), format!("{dst_min} {}", job.dst_min)),
        (dev.clone(), format!("{dst_max} {}", job.dst_max)),
        (dev.clone(), format!("udp_src_min {}", job.udp_src_min)),
        (dev.clone(), format!("udp_src_max {}", job.udp_src_max)),
        (dev.clone(), format!("udp_dst_min {}", job.udp_dst)),
        (dev.clone(), format!("udp_dst_max {}", job.udp_dst)),
        (dev.clone(), "flag IPDST_RND".to_owned()),
        (dev, "flag UDPSRC_RND".to_owned()),
    ]);
    commands
}

/// Writes `command` to pktgen's `file` inside `netns`.
fn write(netns: &Netns, file: &str, command: &str) -> anyhow::Result<()> {
    run(netns.command("sh").args([
        "-c",
        "printf '%s\\n' \"$1\" > \"$2\"",
        "sh",
        command,
        &format!("{PROC_DIR}/{file}"),
    ]))
    .with_context(|| format!("pktgen: {command:?} > {file}"))?;
    Ok(())
}

/// Runs `job` (for `duration` when its count is 0); returns (frames sent, seconds).
pub fn send(netns: &Netns, job: &Job, duration: Option<Duration>) -> anyhow::Result<(u64, f64)> {
    for (file, command) in setup_commands(job) {
        write(netns, &file, &command)?;
    }
    // `start` returns when the job is done, or stopped.
    let mut start = netns
        .command("sh")
        .args(["-c", &format!("echo start > {PROC_DIR}/pgctrl")])
        .spawn()
        .context("pktgen: start")?;
    if let Some(duration) = duration {
        std::thread::sleep(duration);
        write(netns, "pgctrl", "stop")?;
    }
    let status = start.wait()?;
    if !status.success() {
        bail!("pktgen: start failed ({status})");
    }
    let report = run(netns.command("cat").arg(format!("{PROC_DIR}/{}", job.dev)))?;
    parse_report(&report)
}

/// (frames sent, seconds) from pktgen's device file after a run.
pub fn parse_report(report: &str) -> anyhow::Result<(u64, f64)> {
    let number_after = |key: &str| -> Option<u64> {
        let at = report.find(key)? + key.len();
        report[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let sent = number_after("pkts-sofar:").context("pktgen report: no pkts-sofar")?;
    let usec = number_after("Result: OK:").with_context(|| {
        format!(
            "pktgen report: no result ({})",
            report
                .lines()
                .find(|l| l.starts_with("Result"))
                .unwrap_or("")
        )
    })?;
    Ok((sent, usec as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_becomes_pktgen_commands() {
        let job = Job {
            dev: "a0".into(),
            count: 1000,
            frame_size: 64,
            dst_mac: "02:00:00:01:00:01".into(),
            src: "198.18.1.2".parse().unwrap(),
            dst_min: "198.19.0.0".parse().unwrap(),
            dst_max: "198.19.255.255".parse().unwrap(),
            udp_src_min: 1024,
            udp_src_max: 1027,
            udp_dst: 9,
        };
        let commands: Vec<String> = setup_commands(&job)
            .into_iter()
            .map(|(file, command)| format!("{file}: {command}"))
            .collect();
        assert_eq!(
            commands,
            [
                "kpktgend_0: rem_device_all",
                "kpktgend_0: add_device a0",
                "a0: count 1000",
                "a0: pkt_size 60",
                "a0: delay 0",
                "a0: clone_skb 0",
                "a0: dst_mac 02:00:00:01:00:01",
                "a0: src_min 198.18.1.2",
                "a0: src_max 198.18.1.2",
                "a0: dst_min 198.19.0.0",
                "a0: dst_max 198.19.255.255",
                "a0: udp_src_min 1024",
                "a0: udp_src_max 1027",
                "a0: udp_dst_min 9",
                "a0: udp_dst_max 9",
                "a0: flag IPDST_RND",
                "a0: flag UDPSRC_RND",
            ]
        );
        let v6 = Job {
            src: "2001:2:0:1::2".parse().unwrap(),
            dst_min: "2001:2:0:8000::".parse().unwrap(),
            dst_max: "2001:2:0:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            frame_size: 78,
            ..job
        };
        let commands: Vec<String> = setup_commands(&v6)
            .into_iter()
            .map(|(_, command)| command)
            .collect();
        assert!(commands.contains(&"pkt_size 74".to_owned()));
        assert!(commands.contains(&"src6 2001:2:0:1::2".to_owned()));
        assert!(commands.contains(&"dst6_min 2001:2:0:8000::".to_owned()));
        assert!(!commands.iter().any(|c| c.starts_with("src_m")));
    }

    #[test]
    fn reports_are_read() {
        // The shape of pktgen's device file after a run (Documentation/networking/pktgen.rst).
        let report = "\
Params: count 10000000  min_pkt_size: 60  max_pkt_size: 60
     frags: 0  delay: 0  clone_skb: 0  ifname: a0
Current:
     pkts-sofar: 10000000  errors: 0
     started: 1372713893256505us  stopped: 1372713903224467us idle: 40us
Result: OK: 9967962(c9967922+d40) usec, 10000000 (60byte,0frags)
  1003214pps 481Mb/sec (481542720bps) errors: 0
";
        let (sent, seconds) = parse_report(report).unwrap();
        assert_eq!(sent, 10_000_000);
        assert!((seconds - 9.967962).abs() < 1e-9);
        assert!(parse_report("Params: count 0\nResult: Idle\n").is_err());
    }
}
