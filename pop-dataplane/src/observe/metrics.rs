//! `run --metrics-listen ADDR:PORT`: the counters in Prometheus text format, at `/metrics`.
//! One GET per connection; nothing else is served.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use log::{debug, info};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use pop_dataplane_common::{flow::FlowHits, sample::NexthopTraffic};

use crate::{
    control::nexthops::NamedNexthop,
    dataplane::nexthop_traffic,
    observe::{
        sflow::AgentCounts,
        stats::{self, InterfaceStats},
    },
};

/// Figures only the daemon knows, shared with the endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub routes_v4: u64,
    pub routes_v6: u64,
    pub nexthops: u64,
    pub nexthops_unusable: u64,
    pub groups: u64,
}

/// A flow rule, as its series are labelled: its id (the counters' index), its text and
/// where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FlowLabel {
    pub id: u32,
    pub rule: String,
    pub origin: String,
}

/// The sFlow agent's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SflowFigures {
    /// Samples read from the program's ring.
    pub samples: u64,
    pub counts: AgentCounts,
}

#[derive(Clone, Debug, Default)]
struct Published {
    figures: Figures,
    flows: Vec<FlowLabel>,
    /// Next hops by id, named.
    nexthops: Vec<NamedNexthop>,
    sflow: SflowFigures,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Shared(Arc<Mutex<Published>>);

impl Shared {
    pub(crate) fn set(&self, figures: Figures, flows: Vec<FlowLabel>, nexthops: Vec<NamedNexthop>) {
        let mut published = self.0.lock().expect("not poisoned");
        published.figures = figures;
        published.flows = flows;
        published.nexthops = nexthops;
    }

    pub(crate) fn set_sflow(&self, sflow: SflowFigures) {
        self.0.lock().expect("not poisoned").sflow = sflow;
    }

    fn get(&self) -> Published {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// Listens on `addr` and serves the dataplane pinned under `pin_dir`.
pub(crate) async fn serve(
    addr: SocketAddr,
    pin_dir: PathBuf,
    run_dir: PathBuf,
    shared: Shared,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (pin_dir, run_dir, shared) = (pin_dir.clone(), run_dir.clone(), shared.clone());
            tokio::spawn(async move {
                if let Err(err) = respond(stream, pin_dir, run_dir, shared).await {
                    debug!("metrics connection: {err:#}");
                }
            });
        }
    }))
}

async fn respond(
    mut stream: TcpStream,
    pin_dir: PathBuf,
    run_dir: PathBuf,
    shared: Shared,
) -> anyhow::Result<()> {
    // The request line is all we need; headers are read and ignored (up to 8 KiB).
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = String::from_utf8_lossy(&head);
    let request_line = request_line.lines().next().unwrap_or("");
    let (status, content_type, body) =
        if request_line.starts_with("GET /metrics ") || request_line == "GET /metrics" {
            let published = shared.get();
            let (figures, sflow) = (published.figures, published.sflow);
            let read = tokio::task::spawn_blocking(move || {
                let stats = stats::read(&pin_dir, &run_dir)?;
                let ids: Vec<u32> = published.flows.iter().map(|f| f.id).collect();
                let hits = stats::flow_hits(&pin_dir, &ids)?;
                let ids: Vec<u32> = published.nexthops.iter().map(|n| n.id).collect();
                let traffic = nexthop_traffic(&pin_dir, &ids)?;
                let nexthops: Vec<(NamedNexthop, NexthopTraffic)> =
                    published.nexthops.into_iter().zip(traffic).collect();
                let flows = published.flows.into_iter().zip(hits).collect::<Vec<_>>();
                anyhow::Ok((stats, flows, nexthops))
            })
            .await?;
            match read {
                Ok((stats, flows, nexthops)) => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    render(&stats, figures, &flows, &nexthops, sflow),
                ),
                Err(err) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("{err:#}\n"),
                ),
            }
        } else {
            (
                "404 Not Found",
                "text/plain",
                "only /metrics is served\n".to_owned(),
            )
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(())
}

/// The Prometheus text exposition of `stats`, `figures`, the flow rules' counters, the
/// next hops' traffic (by name) and the sFlow agent's figures.
pub(crate) fn render(
    stats: &[InterfaceStats],
    figures: Figures,
    flows: &[(FlowLabel, FlowHits)],
    nexthops: &[(NamedNexthop, NexthopTraffic)],
    sflow: SflowFigures,
) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: &dyn Fn(&InterfaceStats) -> u64| {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} counter");
        for s in stats {
            let _ = writeln!(
                out,
                "pop_dataplane_{name}{{interface=\"{}\"}} {}",
                s.name,
                value(s)
            );
        }
    };
    counter(
        "rx_packets_total",
        "Frames received by the XDP program.",
        &|s| s.rx_packets,
    );
    counter(
        "rx_bytes_total",
        "Bytes received by the XDP program.",
        &|s| s.rx_bytes,
    );
    counter(
        "forwarded_packets_total",
        "Frames received here and forwarded by XDP.",
        &|s| s.forwarded_packets,
    );
    counter(
        "forwarded_bytes_total",
        "Bytes received here and forwarded by XDP.",
        &|s| s.forwarded_bytes,
    );
    counter(
        "tx_packets_total",
        "Frames XDP redirected out of this interface.",
        &|s| s.tx_packets,
    );
    counter(
        "tx_bytes_total",
        "Bytes XDP redirected out of this interface.",
        &|s| s.tx_bytes,
    );
    counter(
        "sflow_samples_lost_total",
        "sFlow samples of frames received here that the ring had no room for.",
        &|s| s.samples_lost,
    );
    for (name, help, pick) in [
        (
            "to_kernel_packets_total",
            "Frames handed to the kernel, by reason.",
            (|s: &InterfaceStats| s.to_kernel.clone()) as fn(&InterfaceStats) -> _,
        ),
        (
            "dropped_packets_total",
            "Frames dropped, by reason.",
            |s: &InterfaceStats| s.dropped.clone(),
        ),
    ] {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} counter");
        for s in stats {
            for (reason, value) in pick(s) {
                let _ = writeln!(
                    out,
                    "pop_dataplane_{name}{{interface=\"{}\",reason=\"{reason}\"}} {value}",
                    s.name
                );
            }
        }
    }
    // Which VRF each interface routes in, as an info series (Prometheus' join idiom), so
    // that the counters keep their labels.
    let _ = writeln!(
        out,
        "# HELP pop_dataplane_interface_info The VRF each interface routes in."
    );
    let _ = writeln!(out, "# TYPE pop_dataplane_interface_info gauge");
    for s in stats {
        let _ = writeln!(
            out,
            "pop_dataplane_interface_info{{interface=\"{}\",vrf=\"{}\"}} 1",
            s.name, s.vrf
        );
    }
    let mut gauge = |name: &str, help: &str, labels: &str, value: u64| {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} gauge");
        let _ = writeln!(out, "pop_dataplane_{name}{labels} {value}");
    };
    gauge(
        "routes",
        "IPv4 routes in the FIB.",
        "{family=\"ipv4\"}",
        figures.routes_v4,
    );
    let _ = writeln!(
        out,
        "pop_dataplane_routes{{family=\"ipv6\"}} {}",
        figures.routes_v6
    );
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} gauge");
        let _ = writeln!(out, "pop_dataplane_{name} {value}");
    };
    gauge("nexthops", "Next hops in use.", figures.nexthops);
    gauge(
        "nexthops_unusable",
        "Next hops unresolved or on a link that is down.",
        figures.nexthops_unusable,
    );
    gauge("ecmp_groups", "ECMP groups in use.", figures.groups);
    for (name, help, value) in [
        (
            "flow_matched_packets_total",
            "Packets a flow rule matched.",
            (|h: &FlowHits| h.matched_packets) as fn(&FlowHits) -> u64,
        ),
        (
            "flow_matched_bytes_total",
            "Bytes a flow rule matched.",
            |h| h.matched_bytes,
        ),
        (
            "flow_dropped_packets_total",
            "Packets a flow rule dropped (its drop action or over its rate).",
            |h| h.dropped_packets,
        ),
        (
            "flow_dropped_bytes_total",
            "Bytes a flow rule dropped.",
            |h| h.dropped_bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} counter");
        for (label, hits) in flows {
            let _ = writeln!(
                out,
                "pop_dataplane_{name}{{id=\"{}\",rule=\"{}\",origin=\"{}\"}} {}",
                label.id,
                escape(&label.rule),
                escape(&label.origin),
                value(hits)
            );
        }
    }
    for (name, help, value) in [
        (
            "nexthop_tx_packets_total",
            "Frames XDP sent to this next hop.",
            (|t: &NexthopTraffic| t.packets) as fn(&NexthopTraffic) -> u64,
        ),
        (
            "nexthop_tx_bytes_total",
            "Bytes XDP sent to this next hop (as sent, VLAN tags included).",
            |t| t.bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} counter");
        for (nexthop, traffic) in nexthops {
            let _ = writeln!(
                out,
                "pop_dataplane_{name}{{nexthop=\"{}\",dev=\"{}\"}} {}",
                escape(&nexthop.name),
                escape(&nexthop.dev),
                value(traffic)
            );
        }
    }
    for (name, help, value) in [
        (
            "sflow_samples_total",
            "Samples read from the XDP program.",
            sflow.samples,
        ),
        (
            "sflow_flow_samples_sent_total",
            "sFlow flow samples sent.",
            sflow.counts.flow_samples,
        ),
        (
            "sflow_counter_samples_sent_total",
            "sFlow counter samples sent.",
            sflow.counts.counter_samples,
        ),
        (
            "sflow_datagrams_total",
            "sFlow datagrams sent (one per collector).",
            sflow.counts.datagrams,
        ),
        (
            "sflow_send_errors_total",
            "sFlow datagrams a collector's socket refused.",
            sflow.counts.send_errors,
        ),
    ] {
        let _ = writeln!(out, "# HELP pop_dataplane_{name} {help}");
        let _ = writeln!(out, "# TYPE pop_dataplane_{name} counter");
        let _ = writeln!(out, "pop_dataplane_{name} {value}");
    }
    out
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
