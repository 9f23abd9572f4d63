use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use pop_dataplane::{
    dataplane::AttachMode,
    run::{RunOptions, run},
    stats,
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

    /// The daemon's runtime directory (its lock).
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
        Command::Stats { json } => {
            let stats = stats::read(&cli.pin_dir)?;
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
