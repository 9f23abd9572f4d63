//! `pop-dataplane route`: the RIB's routes, listed, looked up, added, replaced, deleted and
//! loaded from files.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::reply::{done, table, unexpected};
use crate::{
    api::{self, Reply, Request},
    config::route_spec::RouteSpec,
    control::{
        rib::Source,
        router::{Mode, RouteInfo},
    },
};

#[derive(Subcommand)]
pub(super) enum RouteCommand {
    /// Add a route: [vrf NAME] PREFIX via ADDR dev IFACE [via ADDR dev IFACE ...] | PREFIX
    /// blackhole | PREFIX kernel. Fails if the CLI already has a route for PREFIX.
    Add {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        route: Vec<String>,
    },
    /// Add a route, or replace the CLI's route for its prefix.
    Replace {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        route: Vec<String>,
    },
    /// Delete the CLI's routes for these prefixes: [vrf NAME] PREFIX [PREFIX ...].
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
        /// Only the routes of this VRF (`default`: the default VRF).
        #[arg(long)]
        vrf: Option<String>,
    },
    /// The route the dataplane uses for an address, and its next hops.
    Get {
        addr: std::net::IpAddr,
        #[arg(long)]
        json: bool,
        /// Look in this VRF's table (default: the default VRF's).
        #[arg(long)]
        vrf: Option<String>,
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

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum SourceArg {
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

pub(super) fn route(socket: &std::path::Path, command: RouteCommand) -> anyhow::Result<()> {
    match command {
        RouteCommand::Add { route } | RouteCommand::Replace { route }
            if route.iter().any(|w| w.contains('\n')) =>
        {
            bail!("a route is one line")
        }
        RouteCommand::Add { route } => set(socket, &route, Mode::Add),
        RouteCommand::Replace { route } => set(socket, &route, Mode::Replace),
        RouteCommand::Del { prefixes } => {
            let (vrf, prefixes) = match prefixes.as_slice() {
                [vrf, name, rest @ ..] if vrf == "vrf" => (Some(name.clone()), rest),
                [vrf] if vrf == "vrf" => bail!("route del: `vrf` needs a VRF's name after it"),
                all => (None, all),
            };
            if prefixes.is_empty() {
                bail!("route del: no prefix given");
            }
            let prefixes = prefixes
                .iter()
                .map(|p| crate::config::parse_prefix(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| anyhow::anyhow!("route del: {err}"))?;
            done(api::request(socket, &Request::RouteDel { prefixes, vrf })?)
        }
        RouteCommand::Flush => done(api::request(socket, &Request::RouteFlush)?),
        RouteCommand::List { json, source, vrf } => {
            match api::request(
                socket,
                &Request::RouteList {
                    source: source.map(Source::from),
                    vrf,
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
        RouteCommand::Get { addr, json, vrf } => {
            match api::request(socket, &Request::RouteGet { addr, vrf })? {
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
            let (name, text) = crate::config::route_spec::read_file(&file)?;
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

fn render_routes(routes: &[RouteInfo]) -> String {
    let header = ["PREFIX", "SOURCE", "", "ROUTE", "NEXT HOPS"].map(str::to_owned);
    let row = |route: &RouteInfo| {
        let states: Vec<String> = route.nexthops.iter().map(|n| n.state.to_string()).collect();
        [
            route.prefix.to_string(),
            route.source.name().to_owned(),
            if route.selected {
                "*".to_owned()
            } else {
                String::new()
            },
            route.target.clone(),
            states.join(", "),
        ]
    };
    // A VRF column only where some route is in another VRF than the default.
    if routes
        .iter()
        .all(|r| r.vrf == crate::control::vrf::DEFAULT_VRF_NAME)
    {
        let rows: Vec<[String; 5]> = std::iter::once(header)
            .chain(routes.iter().map(row))
            .collect();
        return table(&rows);
    }
    let with_vrf = |vrf: String, [a, b, c, d, e]: [String; 5]| [vrf, a, b, c, d, e];
    let rows: Vec<[String; 6]> = std::iter::once(with_vrf("VRF".to_owned(), header))
        .chain(routes.iter().map(|r| with_vrf(r.vrf.clone(), row(r))))
        .collect();
    table(&rows)
}
