//! Per-interface counters of a running dataplane, read from its pinned maps and summed over
//! CPUs, as a table for people or JSON for scripts.

use std::{borrow::Borrow, fmt::Write as _, path::Path};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use pop_dataplane_common::{
    DropReason, Interface, InterfaceCounters, InterfaceKey, PassReason,
    flow::{self, FlowHits},
    maps,
};
use serde::Serialize;

use crate::{
    control::topology::{NamedInterface, interface_name},
    dataplane::{Dataplane, nexthop_traffic, open_pinned, samples_lost},
    host::Host,
    observe::names,
};

/// The counters of one interface, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    /// Interface name (a port, or a VLAN device on one), or `if<index>[.<vlan>]` when the
    /// host no longer has it.
    pub name: String,
    /// The port's ifindex.
    pub ifindex: u32,
    /// Outer and inner VLAN ids, 0 when untagged.
    pub vlan: [u16; 2],
    pub slot: u32,
    /// Configured for routing (else only counted).
    pub routed: bool,
    /// The VRF its frames are routed in (`default` for the default VRF).
    pub vrf: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// All packets handed to the kernel; by reason in `to_kernel`.
    pub to_kernel_packets: u64,
    /// All packets dropped; by reason in `dropped`.
    pub dropped_packets: u64,
    /// Every reason, zero or not, so that scripts can rely on the keys.
    pub to_kernel: std::collections::BTreeMap<&'static str, u64>,
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
    /// sFlow samples of frames received here that the ring had no room for.
    pub samples_lost: u64,
}

impl InterfaceStats {
    fn new(name: String, ifindex: u32, slot: u32, c: &InterfaceCounters) -> Self {
        let to_kernel: std::collections::BTreeMap<_, _> = PassReason::ALL
            .iter()
            .map(|r| (r.name(), c.to_kernel[*r as usize]))
            .collect();
        let dropped: std::collections::BTreeMap<_, _> = DropReason::ALL
            .iter()
            .map(|r| (r.name(), c.dropped[*r as usize]))
            .collect();
        Self {
            name,
            ifindex,
            vlan: [0, 0],
            slot,
            routed: true,
            vrf: crate::control::vrf::DEFAULT_VRF_NAME.to_owned(),
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            forwarded_packets: c.forwarded_packets,
            forwarded_bytes: c.forwarded_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            to_kernel_packets: to_kernel.values().sum(),
            dropped_packets: dropped.values().sum(),
            to_kernel,
            dropped,
            samples_lost: 0,
        }
    }
}

/// Reads the counters of every interface of the dataplane pinned under `pin_dir`, in slot
/// order; the names come from the daemon's run directory `run_dir`, else from the host.
pub fn read(pin_dir: &Path, run_dir: &Path) -> anyhow::Result<Vec<InterfaceStats>> {
    let interfaces = HashMap::try_from(Map::HashMap(open_pinned(pin_dir, maps::INTERFACES)?))?;
    let counters = PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, maps::COUNTERS)?))?;
    let saved = names::load(run_dir);
    let host = Host::read_now()?;
    let mut stats = collect(&interfaces, &counters, |slot, key| {
        interface_name(&saved, &host, key, slot)
    })?;
    let slots: Vec<u32> = stats.iter().map(|s| s.slot).collect();
    for (row, lost) in stats.iter_mut().zip(samples_lost(pin_dir, &slots)?) {
        row.samples_lost = lost;
        if let Some(vrf) = saved
            .iter()
            .find(|n| n.slot == row.slot)
            .and_then(|n| n.vrf.clone())
        {
            row.vrf = vrf;
        }
    }
    Ok(stats)
}

/// What the dataplane sent to one next hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NexthopStats {
    /// Its `[[nexthop]]` name, else its neighbour's address (or MAC).
    pub name: String,
    /// The interface it is on.
    pub dev: String,
    pub id: u32,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// The traffic of every next hop the daemon named in its run directory `run_dir`, read from
/// the dataplane pinned under `pin_dir`; in name order.
pub fn read_nexthops(pin_dir: &Path, run_dir: &Path) -> anyhow::Result<Vec<NexthopStats>> {
    let names = names::load_nexthops(run_dir);
    let ids: Vec<u32> = names.iter().map(|n| n.id).collect();
    let traffic = nexthop_traffic(pin_dir, &ids)?;
    let mut stats: Vec<NexthopStats> = names
        .into_iter()
        .zip(traffic)
        .map(|(n, t)| NexthopStats {
            name: n.name,
            dev: n.dev,
            id: n.id,
            tx_packets: t.packets,
            tx_bytes: t.bytes,
        })
        .collect();
    stats.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(stats)
}

/// The counters of flow rules `ids` in the dataplane pinned under `pin_dir`, summed over
/// CPUs.
pub fn flow_hits(pin_dir: &Path, ids: &[u32]) -> anyhow::Result<Vec<FlowHits>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let hits: PerCpuArray<_, FlowHits> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, flow::FLOW_HITS)?))?;
    ids.iter()
        .map(|id| {
            let values = hits.get(id, 0)?;
            Ok(values
                .iter()
                .fold(FlowHits::default(), |sum, cpu| sum + *cpu))
        })
        .collect()
}

/// The counters of every interface of `dataplane`, loaded in this process (tests), named
/// from `names` and the host.
pub fn of_loaded(
    dataplane: &Dataplane,
    names: &[NamedInterface],
    host: &Host,
) -> anyhow::Result<Vec<InterfaceStats>> {
    let interfaces = HashMap::try_from(dataplane.map(maps::INTERFACES)?)?;
    let counters = PerCpuArray::try_from(dataplane.map(maps::COUNTERS)?)?;
    collect(&interfaces, &counters, |slot, key| {
        interface_name(names, host, key, slot)
    })
}

/// The counters of every interface in `interfaces`, in slot order, named by `name`.
fn collect<T: Borrow<MapData>>(
    interfaces: &HashMap<T, InterfaceKey, Interface>,
    counters: &PerCpuArray<T, InterfaceCounters>,
    name: impl Fn(u32, &InterfaceKey) -> String,
) -> anyhow::Result<Vec<InterfaceStats>> {
    let mut stats = Vec::new();
    for entry in interfaces.iter() {
        let (key, interface) = entry.context("reading INTERFACES")?;
        let ifindex = key.ifindex;
        let per_cpu = counters
            .get(&interface.slot, 0)
            .with_context(|| format!("reading COUNTERS[{}]", interface.slot))?;
        let sum = per_cpu
            .iter()
            .fold(InterfaceCounters::default(), |sum, c| add(&sum, c));
        let mut row =
            InterfaceStats::new(name(interface.slot, &key), ifindex, interface.slot, &sum);
        row.vlan = [key.vlan_outer, key.vlan_inner];
        row.routed = interface.is_routed();
        stats.push(row);
    }
    stats.sort_by_key(|s| s.slot);
    Ok(stats)
}

/// Rates of one interface between two readings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    pub name: String,
    pub rx_pps: f64,
    pub rx_bps: f64,
    pub forwarded_pps: f64,
    pub to_kernel_pps: f64,
    pub dropped_pps: f64,
    pub tx_pps: f64,
    pub tx_bps: f64,
}

/// The rates between readings `before` and `after`, `seconds` apart.
pub fn rates(before: &[InterfaceStats], after: &[InterfaceStats], seconds: f64) -> Vec<Rates> {
    after
        .iter()
        .map(|now| {
            let then = before
                .iter()
                .find(|b| b.slot == now.slot && b.name == now.name);
            let per_second = |pick: fn(&InterfaceStats) -> u64| {
                then.map_or(0.0, |then| {
                    pick(now).saturating_sub(pick(then)) as f64 / seconds
                })
            };
            Rates {
                name: now.name.clone(),
                rx_pps: per_second(|s| s.rx_packets),
                rx_bps: per_second(|s| s.rx_bytes) * 8.0,
                forwarded_pps: per_second(|s| s.forwarded_packets),
                to_kernel_pps: per_second(|s| s.to_kernel_packets),
                dropped_pps: per_second(|s| s.dropped_packets),
                tx_pps: per_second(|s| s.tx_packets),
                tx_bps: per_second(|s| s.tx_bytes) * 8.0,
            }
        })
        .collect()
}

/// `stats --watch`: rates every `every`, as a table redrawn in place (or JSON lines).
pub fn watch(
    pin_dir: &Path,
    run_dir: &Path,
    json: bool,
    every: std::time::Duration,
) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    let mut before = read(pin_dir, run_dir)?;
    let mut nexthops_before = read_nexthops(pin_dir, run_dir)?;
    let mut at = std::time::Instant::now();
    let terminal = std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(every);
        let now = read(pin_dir, run_dir)?;
        let nexthops_now = read_nexthops(pin_dir, run_dir)?;
        let elapsed = at.elapsed().as_secs_f64();
        at = std::time::Instant::now();
        let rates = rates(&before, &now, elapsed);
        let nexthop_rates = nexthop_rates(&nexthops_before, &nexthops_now, elapsed);
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({ "interfaces": rates, "nexthops": nexthop_rates })
            )?;
        } else {
            if terminal {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{}", render_rates(&rates))?;
            writeln!(out)?;
            write!(out, "{}", render_nexthop_rates(&nexthop_rates))?;
            writeln!(out)?;
            write!(out, "{}", render(&now))?;
        }
        out.flush()?;
        before = now;
        nexthops_before = nexthops_now;
    }
}

/// Rates of one next hop between two readings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NexthopRates {
    pub name: String,
    pub dev: String,
    pub tx_pps: f64,
    pub tx_bps: f64,
}

/// The next hops' rates between readings `before` and `after`, `seconds` apart (a next hop
/// whose id changed meaning counts from its new start).
pub fn nexthop_rates(
    before: &[NexthopStats],
    after: &[NexthopStats],
    seconds: f64,
) -> Vec<NexthopRates> {
    after
        .iter()
        .map(|now| {
            let then = before.iter().find(|b| b.id == now.id && b.name == now.name);
            let per_second = |pick: fn(&NexthopStats) -> u64| {
                then.map_or(0.0, |then| {
                    pick(now).saturating_sub(pick(then)) as f64 / seconds
                })
            };
            NexthopRates {
                name: now.name.clone(),
                dev: now.dev.clone(),
                tx_pps: per_second(|s| s.tx_packets),
                tx_bps: per_second(|s| s.tx_bytes) * 8.0,
            }
        })
        .collect()
}

/// The next hops' traffic as a table; nothing when there are none.
pub fn render_nexthops(stats: &[NexthopStats]) -> String {
    if stats.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 4]> = stats
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.dev.clone(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
            ]
        })
        .collect();
    format!(
        "\n{}",
        table(&["NEXT HOP", "DEV", "TX PKTS", "TX BYTES"], &rows)
    )
}

fn render_nexthop_rates(rates: &[NexthopRates]) -> String {
    let rows: Vec<[String; 4]> = rates
        .iter()
        .map(|r| [r.name.clone(), r.dev.clone(), si(r.tx_pps), si(r.tx_bps)])
        .collect();
    table(&["NEXT HOP", "DEV", "TX PPS", "TX BIT/S"], &rows)
}

/// Rates as a table, in packets and bits per second with k, M, G.
pub fn render_rates(rates: &[Rates]) -> String {
    let headers = [
        "INTERFACE",
        "RX PPS",
        "RX BIT/S",
        "FWD PPS",
        "KERNEL PPS",
        "DROP PPS",
        "TX PPS",
        "TX BIT/S",
    ];
    let rows: Vec<[String; 8]> = rates
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                si(r.rx_pps),
                si(r.rx_bps),
                si(r.forwarded_pps),
                si(r.to_kernel_pps),
                si(r.dropped_pps),
                si(r.tx_pps),
                si(r.tx_bps),
            ]
        })
        .collect();
    table(&headers, &rows)
}

fn si(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn add(a: &InterfaceCounters, b: &InterfaceCounters) -> InterfaceCounters {
    let mut sum = *a;
    sum.rx_packets += b.rx_packets;
    sum.rx_bytes += b.rx_bytes;
    sum.forwarded_packets += b.forwarded_packets;
    sum.forwarded_bytes += b.forwarded_bytes;
    sum.tx_packets += b.tx_packets;
    sum.tx_bytes += b.tx_bytes;
    for (s, x) in sum.to_kernel.iter_mut().zip(b.to_kernel) {
        *s += x;
    }
    for (s, x) in sum.dropped.iter_mut().zip(b.dropped) {
        *s += x;
    }
    sum
}

/// The counters as a table: one row per interface, then the non-zero reasons.
pub fn render(stats: &[InterfaceStats]) -> String {
    let headers = [
        "INTERFACE",
        "RX PKTS",
        "RX BYTES",
        "FORWARDED",
        "TO KERNEL",
        "DROPPED",
        "TX PKTS",
        "TX BYTES",
    ];
    let rows: Vec<[String; 8]> = stats
        .iter()
        .map(|s| {
            [
                // An interface of another VRF than the default says which.
                if s.vrf == crate::control::vrf::DEFAULT_VRF_NAME {
                    s.name.clone()
                } else {
                    format!("{} (vrf {})", s.name, s.vrf)
                },
                s.rx_packets.to_string(),
                s.rx_bytes.to_string(),
                s.forwarded_packets.to_string(),
                s.to_kernel_packets.to_string(),
                s.dropped_packets.to_string(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
            ]
        })
        .collect();
    let mut out = table(&headers, &rows);

    let mut reasons: Vec<Vec<String>> = Vec::new();
    for (kind, pick) in [
        (
            "to kernel",
            (|s: &InterfaceStats| s.to_kernel.clone()) as fn(&InterfaceStats) -> _,
        ),
        ("dropped", |s: &InterfaceStats| s.dropped.clone()),
    ] {
        let per_interface: Vec<_> = stats.iter().map(pick).collect();
        let Some(first) = per_interface.first() else {
            continue;
        };
        for reason in first.keys() {
            if per_interface.iter().all(|m| m[reason] == 0) {
                continue;
            }
            let mut row = vec![format!("{kind}: {reason}")];
            row.extend(per_interface.iter().map(|m| m[reason].to_string()));
            reasons.push(row);
        }
    }
    if !reasons.is_empty() {
        let mut headers = vec!["REASON".to_owned()];
        headers.extend(stats.iter().map(|s| s.name.clone()));
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        out.push('\n');
        out.push_str(&table(&headers, &reasons));
    }
    out
}

/// Left-aligns the first column and right-aligns the others.
fn table<R: AsRef<[String]>>(headers: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<w$}");
            } else {
                let _ = write!(text, "  {cell:>w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_between_readings() {
        let counters = |rx: u64| InterfaceCounters {
            rx_packets: rx,
            rx_bytes: rx * 100,
            ..Default::default()
        };
        let before = [InterfaceStats::new("ra".into(), 3, 0, &counters(1_000))];
        let after = [InterfaceStats::new("ra".into(), 3, 0, &counters(3_000_000))];
        let rates = rates(&before, &after, 2.0);
        assert_eq!(rates[0].rx_pps, 1_499_500.0);
        assert_eq!(rates[0].rx_bps, 1_199_600_000.0);
        let table = render_rates(&rates);
        assert!(
            table.contains("1.50M") && table.contains("1.20G"),
            "{table}"
        );
    }

    #[test]
    fn renders_a_table() {
        let mut a = InterfaceCounters {
            rx_packets: 12,
            rx_bytes: 1176,
            forwarded_packets: 10,
            forwarded_bytes: 980,
            ..Default::default()
        };
        a.to_kernel[PassReason::NonIp as usize] = 2;
        let b = InterfaceCounters {
            tx_packets: 10,
            tx_bytes: 980,
            ..Default::default()
        };
        let stats = [
            InterfaceStats::new("ra".into(), 3, 0, &a),
            InterfaceStats::new("rb".into(), 4, 1, &add(&b, &InterfaceCounters::default())),
        ];
        assert_eq!(
            render(&stats),
            "\
INTERFACE  RX PKTS  RX BYTES  FORWARDED  TO KERNEL  DROPPED  TX PKTS  TX BYTES
ra              12      1176         10          2        0        0         0
rb               0         0          0          0        0       10       980

REASON             ra  rb
to kernel: non_ip   2   0
"
        );
        let json = serde_json::to_value(&stats[0]).unwrap();
        assert_eq!(json["to_kernel"]["non_ip"], 2);
        assert_eq!(json["to_kernel"]["no_route"], 0);
        assert_eq!(json["dropped_packets"], 0);
    }
}
