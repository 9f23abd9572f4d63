//! The command line: every verb, its flags, and how its answer is shown.

mod acl;
mod flow;
mod flowspec;
mod reply;
mod route;
mod sflow;
mod top;
mod trace;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory as _, Parser, Subcommand};
use pop_dataplane_common::fib::FibMode;

use self::{
    acl::{AclCommand, acl},
    flow::{FlowCommand, flow},
    reply::{done, unexpected},
    route::{RouteCommand, route},
    sflow::{SflowCommand, sflow},
    top::top,
    trace::{ProbeArgs, trace},
};
use crate::{
    api::{self, Reply, Request},
    daemon::{RunOptions, check_config, run},
    dataplane::AttachMode,
    observe::stats,
};

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
        #[command(flatten)]
        probe: ProbeArgs,
        /// Many probes, one per line of FILE (`-`: stdin) in the words of these flags
        /// (`--in ra --dst 198.18.2.2 --proto tcp`); one JSON line each.
        #[arg(long, value_name = "FILE")]
        batch: Option<PathBuf>,
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
    /// Flow rules: FlowSpec matches (RFC 8955/8956) with drop, rate-limit, remark or accept,
    /// checked after the route lookup on routes their destinations overlap.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Run by ExaBGP as an API process (encoder json): keeps the daemon's flow rules equal
    /// to the FlowSpec routes each BGP session announced (see the README).
    FlowspecFeed,
    /// Packet sampling: the sFlow agent's state, and rates at run time.
    Sflow {
        #[command(subcommand)]
        command: SflowCommand,
    },
    /// Shell completions for SHELL (bash, zsh, fish, elvish, powershell), on stdout.
    Completions { shell: clap_complete::Shell },
    /// Man pages of every command into DIR (for packaging).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// Live view of the traffic, estimated from the samples: top destination prefixes
    /// (routes matched), source prefixes, next hops and protocols by bit rate, refreshed
    /// every second. Needs sampling on (`[sflow] sampling_rate`, or `sflow rate`).
    Top {
        /// Print one JSON line a second instead.
        #[arg(long)]
        json: bool,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u64>,
        /// Rows per table.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Save the CLI's routes to the saved-routes file, so that they survive a restart.
    Save,
    /// Validate a config file (and a route file) as `run` and `reload` would take them on
    /// this host: the same checks and messages, with no daemon and no root needed. Exits
    /// non-zero on the first problem.
    Check {
        /// The config file.
        file: PathBuf,
        /// A route file too, as `route load` would take it (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        routes: Option<PathBuf>,
        /// Only what needs no host: not the interfaces, the routes' next hops or the
        /// collectors (for checking on another machine than the router).
        #[arg(long)]
        no_host: bool,
    },
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
        Command::Trace { probe, batch, json } => {
            trace(&cli.pin_dir, &cli.run_dir, probe, batch.as_deref(), json)
        }
        Command::Stats { json, watch } => {
            if watch {
                return stats::watch(&cli.pin_dir, &cli.run_dir, json, Duration::from_secs(1));
            }
            let stats = stats::read(&cli.pin_dir, &cli.run_dir)?;
            let nexthops = stats::read_nexthops(&cli.pin_dir, &cli.run_dir)?;
            if json {
                let json = serde_json::json!({ "interfaces": stats, "nexthops": nexthops });
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                print!("{}", stats::render(&stats));
                print!("{}", stats::render_nexthops(&nexthops));
            }
            Ok(())
        }
        Command::Route { command } => route(&socket, command),
        Command::Acl { command } => acl(&socket, command),
        Command::Flow { command } => flow(&socket, command),
        Command::FlowspecFeed => flowspec::flowspec_feed(&socket),
        Command::Sflow { command } => sflow(&socket, command),
        Command::Top { json, count, limit } => top(&socket, json, count, limit),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "pop-dataplane", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir)?;
            clap_mangen::generate_to(Cli::command(), &dir)?;
            Ok(())
        }
        Command::Reload => done(api::request(&socket, &Request::Reload)?),
        Command::Config {
            command: ConfigCommand::Save,
        } => done(api::request(&socket, &Request::ConfigSave)?),
        Command::Config {
            command:
                ConfigCommand::Check {
                    file,
                    routes,
                    no_host,
                },
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let summary = runtime.block_on(check_config(&file, routes.as_deref(), !no_host))?;
            println!("{summary}");
            Ok(())
        }
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
