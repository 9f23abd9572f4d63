//! The command line: every verb, its flags, and how its answer is shown.

use std::{io::Read as _, path::PathBuf, process::ExitCode, time::Duration};

use crate::{
    api::{self, Reply, Request},
    config::DenyRule,
    config::route_spec::RouteSpec,
    control::rib::Source,
    control::router::{Mode, RouteInfo},
    daemon::{RunOptions, run},
    dataplane::AttachMode,
    observe::stats,
    observe::trace::{self, Probe, Protocol},
};
use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pop_dataplane_common::fib::FibMode;

const MIB: f64 = (1 << 20) as f64;

/// The route lookup `run --fib` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Fib {
    Compiled,
    LpmTrie,
}

impl From<Fib> for FibMode {
    fn from(fib: Fib) -> Self {
        match fib {
            Fib::Compiled => FibMode::Compiled,
            Fib::LpmTrie => FibMode::LpmTrie,
        }
    }
}

/// XDP router dataplane for Point-of-Presence hosts.
#[derive(Parser)]
#[command(name = "pop-dataplane", version)]
struct Cli {
    /// Where the dataplane's program, maps and links are pinned (on a bpf filesystem).
    #[arg(
        long,
        global = true,
        env = "POP_DATAPLANE_PIN_DIR",
        default_value = "/sys/fs/bpf/pop-dataplane"
    )]
    pin_dir: PathBuf,

    /// The daemon's runtime directory: its lock, control socket and interface names.
    #[arg(
        long,
        global = true,
        env = "POP_DATAPLANE_RUN_DIR",
        default_value = "/run/pop-dataplane"
    )]
    run_dir: PathBuf,

    /// The control socket (default: control.sock in the run directory).
    #[arg(long, global = true, env = "POP_DATAPLANE_SOCKET")]
    socket: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace. `debug` also turns on the XDP program's
    /// own (rare) log records.
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load (or take over) the XDP dataplane, fill its maps from the config,
    /// attach, and keep it current until SIGINT or SIGTERM. SIGHUP reloads the config.
    Run {
        /// The routing config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// native: driver mode only; generic: skb mode; auto: native, else generic with a
        /// warning.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
        /// When stopped, leave the dataplane forwarding on its pinned state; the next `run`
        /// takes it over without a packet lost.
        #[arg(long)]
        keep_on_exit: bool,
        /// Serve the counters in Prometheus text format at http://ADDR:PORT/metrics.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Route lookup: compiled (multibit tables, the same cost at any table size) or
        /// lpm-trie (the kernel's BPF LPM trie, slower as the table grows).
        #[arg(long, value_enum, default_value_t = Fib::Compiled)]
        fib: Fib,
        /// Follow this kernel routing table (`main`, a number, or a name in
        /// /etc/iproute2/rt_tables) into the dataplane: what BIRD or FRR installs there.
        /// Repeatable; adds to `[daemon] sync_kernel_tables`.
        #[arg(long, value_name = "TABLE", value_parser = crate::config::kernel_table::parse_table)]
        sync_kernel_table: Vec<u32>,
    },
    /// Show the per-interface counters of the running dataplane.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh every second, with rates (packets and bits per second).
        #[arg(long)]
        watch: bool,
    },
    /// Run the loaded XDP program on one packet (BPF_PROG_TEST_RUN; nothing is sent) and
    /// show what it does: action, matched route, next hop, egress, rewritten headers.
    Trace {
        /// The interface the packet arrives on (a port, or a VLAN sub-interface).
        #[arg(long = "in", value_name = "IFACE")]
        ingress: String,
        /// Destination address.
        #[arg(long)]
        dst: std::net::IpAddr,
        /// Source address (default 198.18.0.1 or 2001:2::1).
        #[arg(long)]
        src: Option<std::net::IpAddr>,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Routes of the running daemon (iproute2 syntax).
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Re-read the config file and move to it at once (as SIGHUP does); a config that fails
    /// validation changes nothing.
    Reload,
    /// The config's runtime companions.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// What the daemon runs: ports, route and next-hop counts, files.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The ingress source filter: deny rules checked before the route lookup, and the
    /// martian source checks (`[filter] martian_sources`).
    Acl {
        #[command(subcommand)]
        command: AclCommand,
    },
}

#[derive(Subcommand)]
enum AclCommand {
    /// Drop (and count) packets from a source prefix: deny src PREFIX [dev IFACE]. Without
    /// dev, on every routed interface. Lasts until the daemon stops; put permanent rules in
    /// the config's [[acl]].
    Add {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// Delete a rule added with `acl add`: deny src PREFIX [dev IFACE].
    Del {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// The rules, where each comes from, and what each dropped.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Add a route: PREFIX via ADDR dev IFACE [via ADDR dev IFACE ...] | PREFIX blackhole |
    /// PREFIX kernel. Fails if the CLI already has a route for PREFIX.
    Add {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        route: Vec<String>,
    },
    /// Add a route, or replace the CLI's route for its prefix.
    Replace {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        route: Vec<String>,
    },
    /// Delete the CLI's routes for these prefixes.
    Del {
        #[arg(required = true)]
        prefixes: Vec<String>,
    },
    /// List the routes: every source, the selected one marked.
    List {
        #[arg(long)]
        json: bool,
        /// Only the routes from this source.
        #[arg(long, value_enum)]
        source: Option<SourceArg>,
    },
    /// The route the dataplane uses for an address, and its next hops.
    Get {
        addr: std::net::IpAddr,
        #[arg(long)]
        json: bool,
    },
    /// Delete every route the CLI added.
    Flush,
    /// Add (or replace) the routes of a file, one per line in `route add` syntax (`-`:
    /// standard input). One bad line and nothing changes.
    Load {
        file: String,
        /// The file holds the whole table: CLI routes not in it are removed, and the new
        /// table replaces the old one in one step.
        #[arg(long)]
        replace_all: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Save the CLI's routes to the saved-routes file, so that they survive a restart.
    Save,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SourceArg {
    Local,
    Cli,
    Config,
    Kernel,
}

impl From<SourceArg> for Source {
    fn from(source: SourceArg) -> Self {
        match source {
            SourceArg::Local => Self::Local,
            SourceArg::Cli => Self::Cli,
            SourceArg::Config => Self::Config,
            SourceArg::Kernel => Self::Kernel,
        }
    }
}

/// Parses the command line and runs the command; what `pop-dataplane` does.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_default_env()
        .init();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pop-dataplane: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| cli.run_dir.join("control.sock"));
    match cli.command {
        Command::Run {
            config,
            xdp_mode,
            keep_on_exit,
            metrics_listen,
            fib,
            sync_kernel_table,
        } => {
            // The daemon's own loop runs on this thread; control connections on a worker, so
            // that a long request can report progress while the loop works on it.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(run(RunOptions {
                config,
                xdp_mode,
                pin_dir: cli.pin_dir,
                run_dir: cli.run_dir,
                socket,
                log_level: cli.log_level,
                keep_on_exit,
                metrics_listen,
                fib: fib.into(),
                sync_kernel_tables: sync_kernel_table,
            }))
        }
        Command::Trace {
            ingress,
            dst,
            src,
            proto,
            sport,
            dport,
            vlan,
            ttl,
            json,
        } => {
            let probe = Probe {
                ingress,
                dst,
                src,
                protocol: proto,
                sport,
                dport,
                vlan,
                ttl,
            };
            let trace = trace::trace(&cli.pin_dir, &cli.run_dir, &probe)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                print!("{}", trace::render(&probe, &trace));
            }
            Ok(())
        }
        Command::Stats { json, watch } => {
            if watch {
                return stats::watch(&cli.pin_dir, &cli.run_dir, json, Duration::from_secs(1));
            }
            let stats = stats::read(&cli.pin_dir, &cli.run_dir)?;
            if json {
                let json = serde_json::json!({ "interfaces": stats });
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                print!("{}", stats::render(&stats));
            }
            Ok(())
        }
        Command::Route { command } => route(&socket, command),
        Command::Acl { command } => acl(&socket, command),
        Command::Reload => done(api::request(&socket, &Request::Reload)?),
        Command::Config {
            command: ConfigCommand::Save,
        } => done(api::request(&socket, &Request::ConfigSave)?),
        Command::Status { json } => match api::request(&socket, &Request::Status)? {
            Reply::Status { status } if json => {
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
            Reply::Status { status } => {
                println!("pid:          {}", status.pid);
                println!("config:       {}", status.config);
                println!("saved routes: {}", status.saved_routes_file);
                let ports: Vec<String> = status
                    .ports
                    .iter()
                    .map(|(p, m)| format!("{p} ({m})"))
                    .collect();
                println!("ports:        {}", ports.join(", "));
                println!(
                    "routes:       {} IPv4, {} IPv6 ({} from the CLI, {} from the kernel)",
                    status.routes_v4, status.routes_v6, status.cli_routes, status.kernel_routes
                );
                if !status.sync_kernel_tables.is_empty() {
                    println!("kernel sync:  tables {:?}", status.sync_kernel_tables);
                }
                println!(
                    "next hops:    {} ({} unresolved or down), {} ECMP groups",
                    status.nexthops, status.nexthops_unresolved, status.groups
                );
                println!(
                    "route tables: {}, {:.1} MiB of kernel memory (IPv4 {:.1}, IPv6 {:.1})",
                    status.fib,
                    status.table_memory.total() as f64 / MIB,
                    status.table_memory.v4_bytes as f64 / MIB,
                    status.table_memory.v6_bytes as f64 / MIB
                );
                Ok(())
            }
            other => unexpected(other),
        },
    }
}

fn route(socket: &std::path::Path, command: RouteCommand) -> anyhow::Result<()> {
    match command {
        RouteCommand::Add { route } | RouteCommand::Replace { route }
            if route.iter().any(|w| w.contains('\n')) =>
        {
            bail!("a route is one line")
        }
        RouteCommand::Add { route } => set(socket, &route, Mode::Add),
        RouteCommand::Replace { route } => set(socket, &route, Mode::Replace),
        RouteCommand::Del { prefixes } => {
            let prefixes = prefixes
                .iter()
                .map(|p| crate::config::parse_prefix(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| anyhow::anyhow!("route del: {err}"))?;
            done(api::request(socket, &Request::RouteDel { prefixes })?)
        }
        RouteCommand::Flush => done(api::request(socket, &Request::RouteFlush)?),
        RouteCommand::List { json, source } => {
            match api::request(
                socket,
                &Request::RouteList {
                    source: source.map(Source::from),
                },
            )? {
                Reply::Routes { routes } if json => {
                    println!("{}", serde_json::to_string_pretty(&routes)?);
                    Ok(())
                }
                Reply::Routes { routes } => {
                    print!("{}", render_routes(&routes));
                    Ok(())
                }
                other => unexpected(other),
            }
        }
        RouteCommand::Get { addr, json } => {
            match api::request(socket, &Request::RouteGet { addr })? {
                Reply::Route { route } if json => {
                    println!("{}", serde_json::to_string_pretty(&route)?);
                    Ok(())
                }
                Reply::Route { route: Some(route) } => {
                    print!("{}", render_routes(std::slice::from_ref(&route)));
                    for nexthop in &route.nexthops {
                        println!(
                            "  next hop {}: {} dev {}, mac {}, {}",
                            nexthop.id,
                            nexthop
                                .via
                                .map_or_else(|| "-".to_owned(), |v| format!("via {v}")),
                            nexthop.dev,
                            nexthop.mac.as_deref().unwrap_or("unknown"),
                            nexthop.state
                        );
                    }
                    Ok(())
                }
                Reply::Route { route: None } => {
                    bail!("no route for {addr}: the dataplane hands it to the kernel")
                }
                other => unexpected(other),
            }
        }
        RouteCommand::Load { file, replace_all } => {
            let (name, bytes) = if file == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading standard input")?;
                ("stdin".to_owned(), bytes)
            } else {
                let bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
                (file.clone(), bytes)
            };
            let text = String::from_utf8(bytes).map_err(|err| {
                let line = err.as_bytes()[..err.utf8_error().valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                anyhow::anyhow!("{name}:{line}: not UTF-8 text")
            })?;
            // The daemon checks every line (naming the bad ones) before it changes anything,
            // and tells how far it got: a bar on a terminal.
            let bar = ProgressBar::new(0);
            let spinner = ProgressStyle::with_template("{msg:>17} {spinner}").expect("valid");
            let counting = ProgressStyle::with_template("{msg:>17} [{bar:40}] {pos}/{len}")
                .expect("valid")
                .progress_chars("=> ");
            bar.set_style(spinner.clone());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.set_message("sending routes");
            let reply = api::request_with_progress(
                socket,
                &Request::RouteLoad {
                    name,
                    text,
                    replace_all,
                },
                &mut |phase, done, total| {
                    bar.set_style(if total == 0 {
                        spinner.clone()
                    } else {
                        counting.clone()
                    });
                    bar.set_message(phase.to_owned());
                    bar.set_length(total);
                    bar.set_position(done);
                },
            );
            bar.finish_and_clear();
            done(reply?)
        }
    }
}

fn acl(socket: &std::path::Path, command: AclCommand) -> anyhow::Result<()> {
    let rule =
        |words: &[String]| DenyRule::parse(words).map_err(|err| anyhow::anyhow!("acl: {err}"));
    match command {
        AclCommand::Add { rule: words } => done(api::request(
            socket,
            &Request::AclAdd {
                rule: rule(&words)?,
            },
        )?),
        AclCommand::Del { rule: words } => done(api::request(
            socket,
            &Request::AclDel {
                rule: rule(&words)?,
            },
        )?),
        AclCommand::List { json } => match api::request(socket, &Request::AclList)? {
            Reply::Acl { rules } if json => {
                println!("{}", serde_json::to_string_pretty(&rules)?);
                Ok(())
            }
            Reply::Acl { rules } => {
                let mut rows = vec![[
                    "ID".to_owned(),
                    "RULE".to_owned(),
                    "FROM".to_owned(),
                    "PACKETS".to_owned(),
                    "BYTES".to_owned(),
                ]];
                for info in &rules {
                    rows.push([
                        info.id.to_string(),
                        info.rule.to_string(),
                        info.origin.name().to_owned(),
                        info.packets.to_string(),
                        info.bytes.to_string(),
                    ]);
                }
                print!("{}", table(&rows));
                Ok(())
            }
            other => unexpected(other),
        },
    }
}

fn set(socket: &std::path::Path, words: &[String], mode: Mode) -> anyhow::Result<()> {
    let spec = RouteSpec::parse(&words.join(" ")).map_err(|err| anyhow::anyhow!("route: {err}"))?;
    done(api::request(
        socket,
        &Request::RouteSet {
            routes: vec![(0, spec)],
            mode,
        },
    )?)
}

fn done(reply: Reply) -> anyhow::Result<()> {
    match reply {
        Reply::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => unexpected(other),
    }
}

fn unexpected(reply: Reply) -> anyhow::Result<()> {
    match reply {
        Reply::Error { message } => bail!("{message}"),
        other => bail!("unexpected reply from the daemon: {other:?}"),
    }
}

fn render_routes(routes: &[RouteInfo]) -> String {
    let mut rows = vec![[
        "PREFIX".to_owned(),
        "SOURCE".to_owned(),
        "".to_owned(),
        "ROUTE".to_owned(),
        "NEXT HOPS".to_owned(),
    ]];
    for route in routes {
        let states: Vec<String> = route.nexthops.iter().map(|n| n.state.to_string()).collect();
        rows.push([
            route.prefix.to_string(),
            route.source.name().to_owned(),
            if route.selected {
                "*".to_owned()
            } else {
                String::new()
            },
            route.target.clone(),
            states.join(", "),
        ]);
    }
    table(&rows)
}

/// Rows as left-aligned columns.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
