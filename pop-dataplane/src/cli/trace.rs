//! `pop-dataplane trace`: one probe from the flags, or many from a file (`--batch`), through
//! the loaded program.

use std::{
    io::{BufRead as _, Write as _},
    net::IpAddr,
    path::Path,
};

use anyhow::{Context as _, bail};
use clap::Parser as _;

use crate::observe::trace::{self, Probe, Protocol, Tracer};

/// A probe's flags: on the command line, or as a line of a `--batch` file.
#[derive(clap::Args, Clone, Debug)]
pub(super) struct ProbeArgs {
    /// The interface the packet arrives on (a port, or a VLAN sub-interface).
    #[arg(long = "in", value_name = "IFACE")]
    ingress: Option<String>,
    /// Destination address.
    #[arg(long)]
    dst: Option<IpAddr>,
    /// Source address (default 198.18.0.1 or 2001:2::1).
    #[arg(long)]
    src: Option<IpAddr>,
    #[arg(long, value_enum, default_value_t = Protocol::Udp)]
    proto: Protocol,
    #[arg(long, default_value_t = 49152)]
    sport: u16,
    #[arg(long, default_value_t = 443)]
    dport: u16,
    /// Add a VLAN tag (on top of the interface's own, if it is a VLAN sub-interface).
    #[arg(long)]
    vlan: Option<u16>,
    /// TTL or hop limit.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
}

impl ProbeArgs {
    fn probe(self) -> anyhow::Result<Probe> {
        let Some(ingress) = self.ingress else {
            bail!("--in IFACE is required (the interface the packet arrives on)");
        };
        let Some(dst) = self.dst else {
            bail!("--dst ADDR is required");
        };
        Ok(Probe {
            ingress,
            dst,
            src: self.src,
            protocol: self.proto,
            sport: self.sport,
            dport: self.dport,
            vlan: self.vlan,
            ttl: self.ttl,
        })
    }
}

/// One line of a `--batch` file: the flags of one probe.
#[derive(clap::Parser)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct ProbeLine {
    #[command(flatten)]
    probe: ProbeArgs,
}

pub(super) fn trace(
    pin_dir: &Path,
    run_dir: &Path,
    probe: ProbeArgs,
    batch: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let Some(batch) = batch else {
        let probe = probe.probe()?;
        let trace = trace::trace(pin_dir, run_dir, &probe)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&trace)?);
        } else {
            print!("{}", trace::render(&probe, &trace));
        }
        return Ok(());
    };
    let input: Box<dyn std::io::BufRead> = if batch == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(batch).with_context(|| format!("opening {}", batch.display()))?,
        ))
    };
    let tracer = Tracer::open(pin_dir, run_dir)?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0usize;
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", batch.display()))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let result = ProbeLine::try_parse_from(&words)
            .map_err(|err| anyhow::anyhow!("{}", err.to_string().lines().next().unwrap_or("")))
            .and_then(|parsed| parsed.probe.probe())
            .and_then(|probe| tracer.trace(&probe));
        let record = match result {
            Ok(trace) => serde_json::json!({ "line": n + 1, "probe": line, "trace": trace }),
            Err(err) => {
                failed += 1;
                serde_json::json!({ "line": n + 1, "probe": line, "error": format!("{err:#}") })
            }
        };
        writeln!(out, "{record}")?;
    }
    out.flush()?;
    if failed > 0 {
        bail!(
            "{}: {failed} probes could not be traced (see their lines)",
            batch.display()
        );
    }
    Ok(())
}
