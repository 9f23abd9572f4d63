use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use pop_dataplane::{
    dataplane::AttachMode,
    run::{RunOptions, run},
    stats,
    trace::{self, Probe, Protocol},
};

/// XDP router dataplane for Point-of-Presence hosts.
#[derive(Parser)]
#[command(name = "pop-dataplane", version)]
struct Cli {
    /// Where the dataplane's maps are pinned (a directory on a bpf filesystem).
    #[arg(
        long,
        global = true,
        env = "POP_DATAPLANE_PIN_DIR",
        default_value = "/sys/fs/bpf/pop-dataplane"
    )]
    pin_dir: PathBuf,

    /// The daemon's runtime directory: its lock, and the names of its interfaces.
    #[arg(
        long,
        global = true,
        env = "POP_DATAPLANE_RUN_DIR",
        default_value = "/run/pop-dataplane"
    )]
    run_dir: PathBuf,

    /// Log level: error, warn, info, debug or trace. `debug` also turns on the XDP program's
    /// own (rare) log records.
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, fill its maps from the config, attach, and forward until
    /// SIGINT or SIGTERM.
    Run {
        /// The routing config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// native: driver mode only; generic: skb mode; auto: native, else generic with a
        /// warning.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
    },
    /// Show the per-interface counters of the running dataplane.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the loaded XDP program on one packet (BPF_PROG_TEST_RUN; nothing is sent) and
    /// show what it does: action, matched route, next hop, egress, rewritten headers.
    Trace {
        /// The interface the packet arrives on (a port, or a VLAN device on one).
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
        /// Add a VLAN tag (on top of the interface's own, if it is a VLAN device).
        #[arg(long)]
        vlan: Option<u16>,
        /// TTL or hop limit.
        #[arg(long, default_value_t = 64)]
        ttl: u8,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
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
    match cli.command {
        Command::Run { config, xdp_mode } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run(RunOptions {
                config,
                xdp_mode,
                pin_dir: cli.pin_dir,
                run_dir: cli.run_dir,
                log_level: cli.log_level,
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
        Command::Stats { json } => {
            let stats = stats::read(&cli.pin_dir, &cli.run_dir)?;
            if json {
                let json = serde_json::json!({ "interfaces": stats });
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                print!("{}", stats::render(&stats));
            }
            Ok(())
        }
    }
}
