//! The daemon's state and its answers to control requests: routes, reload, save, status, the
//! ACL. Every change is all or nothing: a refused request leaves the router as it was.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use log::{error, warn};
use pop_dataplane_common::fib::FibMode;
use rtnetlink::Handle;

use super::{
    RunOptions, files,
    kernel_sync::{KernelSync, install, kernel_tables_to_follow},
    server::Progress,
};
use crate::{
    api::{Reply, Request, Status},
    config::{
        Config, ConfigError,
        route_spec::{self, RouteFileError, RouteSpec},
    },
    control::{
        acl::{AclError, RuleInfo},
        flow::{FlowError, FlowInfo},
        plan::{MapWrite, Update},
        rib::Source,
        router::{BULK_ROUTES, Mode, RouteError, RouteProblem, Router},
        vrf::VrfId,
    },
    dataplane::{AttachedMode, Dataplane},
    host::Host,
    observe::{metrics, names},
};

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A route of a route file, named by the file's name and line.
    #[error("{}", .error.in_file(.file))]
    RouteInFile {
        file: String,
        error: Box<RouteError>,
    },
    #[error(transparent)]
    RouteFile(#[from] RouteFileError),
    #[error("{file}: no routes")]
    NoRoutes { file: String },
    #[error(transparent)]
    Acl(#[from] AclError),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{file}: [daemon] sync_kernel_tables would follow kernel tables {wanted:?} instead of \
         {following:?}; that takes a restart (nothing changed)"
    )]
    KernelTablesChanged {
        file: String,
        wanted: Vec<u32>,
        following: Vec<u32>,
    },
    #[error("writing {path}: {error}")]
    Save { path: String, error: std::io::Error },
    #[error(transparent)]
    Sflow(#[from] super::sampling::SflowError),
    #[error(transparent)]
    SampleRate(#[from] crate::config::sflow::SflowConfigError),
    #[error("dev {dev:?} is not one of the router's interfaces ({known})")]
    UnknownInterface { dev: String, known: String },
    /// A VRF no `[[vrf]]` names.
    #[error("{0}")]
    Vrf(RouteProblem),
    /// The maps or the host did not take a change.
    #[error("{0:#}")]
    System(#[from] anyhow::Error),
}

pub(super) struct Daemon<'a> {
    /// Held while the daemon runs: one daemon per run directory.
    pub(super) _lock: files::InstanceLock,
    pub(super) options: &'a RunOptions,
    /// The config running now (the file may have changed since).
    pub(super) config: Config,
    pub(super) config_file: String,
    pub(super) saved_routes_path: PathBuf,
    pub(super) router: Router,
    pub(super) dataplane: Dataplane,
    pub(super) handle: Handle,
    /// Ports and how they were attached.
    pub(super) attached: Vec<(String, AttachedMode)>,
    pub(super) metrics: Option<metrics::Shared>,
    /// The kernel tables followed, if any.
    pub(super) kernel: Option<KernelSync>,
    pub(super) sampling: super::sampling::Sampling,
    /// The next hops' names last published.
    pub(super) nexthop_names: Vec<crate::control::nexthops::NamedNexthop>,
}

impl Daemon<'_> {
    pub(super) fn ready_line(&self) -> String {
        let (v4, v6) = self.router.route_counts();
        format!(
            "ready: forwarding on {}; {} IPv4 and {} IPv6 routes ({} local), {} next hops, {} ECMP \
             groups",
            self.attached
                .iter()
                .map(|(name, mode)| format!("{name} ({mode})"))
                .collect::<Vec<_>>()
                .join(", "),
            v4,
            v6,
            self.router.local_addresses().len(),
            self.router.nexthop_count(),
            self.router.group_count(),
        )
    }

    /// Shares the figures the metrics endpoint shows.
    pub(super) fn publish(&mut self) {
        let nexthops = self.router.nexthop_names();
        if nexthops != self.nexthop_names {
            // For `stats` and the metrics, which read the maps by id.
            if let Err(err) = names::save_nexthops(&self.options.run_dir, &nexthops) {
                warn!("{err:#}");
            }
            self.nexthop_names = nexthops;
        }
        if let Some(metrics) = &self.metrics {
            let (v4, v6) = self.router.route_counts();
            let unresolved = self.router.unusable_nexthops();
            let flows = self
                .router
                .flow_rules()
                .into_iter()
                .map(|(id, rule, origin, _)| metrics::FlowLabel {
                    id,
                    rule: rule.to_string(),
                    origin: origin.name(),
                })
                .collect();
            metrics.set(
                metrics::Figures {
                    routes_v4: v4 as u64,
                    routes_v6: v6 as u64,
                    nexthops: self.router.nexthop_count() as u64,
                    nexthops_unusable: unresolved as u64,
                    groups: self.router.group_count() as u64,
                },
                flows,
                self.nexthop_names.clone(),
            );
        }
    }

    pub(super) async fn handle(&mut self, request: Request, progress: &mut Progress) -> Reply {
        let result = match request {
            Request::RouteSet { routes, mode } => {
                self.set_routes(&routes, mode, false, Duration::ZERO, progress)
                    .await
            }
            Request::RouteLoad {
                name,
                text,
                replace_all,
            } => {
                let started = Instant::now();
                let lines = text.lines().count();
                let parsed = route_spec::parse_lines(&name, &text, &mut |done| {
                    progress.report("reading routes", done, lines)
                });
                match parsed {
                    Ok(routes) if routes.is_empty() => Err(RequestError::NoRoutes { file: name }),
                    Ok(routes) => self
                        .set_routes(
                            &routes,
                            Mode::Replace,
                            replace_all,
                            started.elapsed(),
                            progress,
                        )
                        .await
                        .map_err(|err| match err {
                            RequestError::Route(error) => RequestError::RouteInFile {
                                file: name,
                                error: Box::new(error),
                            },
                            other => other,
                        }),
                    Err(errors) => Err(errors.into()),
                }
            }
            Request::RouteDel { prefixes, vrf } => match self.router.vrf_id(vrf.as_deref()) {
                Ok(vrf) => {
                    let prefixes: Vec<_> = prefixes.into_iter().map(|p| (vrf, p)).collect();
                    self.remove_routes(&prefixes)
                        .map(|()| format!("{} routes deleted", prefixes.len()))
                }
                Err(problem) => Err(RequestError::Vrf(problem)),
            },
            Request::RouteFlush => {
                let prefixes = self.router.prefixes_of(Source::Cli);
                self.remove_routes(&prefixes)
                    .map(|()| format!("{} CLI routes flushed", prefixes.len()))
            }
            Request::RouteList { source, vrf } => {
                let vrf = match vrf.as_deref().map(|name| self.router.vrf_id(Some(name))) {
                    None => None,
                    Some(Ok(vrf)) => Some(vrf),
                    Some(Err(problem)) => {
                        return Reply::Error {
                            message: RequestError::Vrf(problem).to_string(),
                        };
                    }
                };
                return Reply::Routes {
                    routes: self.router.list(source, vrf),
                };
            }
            Request::RouteGet { addr, vrf } => {
                let vrf = match self.router.vrf_id(vrf.as_deref()) {
                    Ok(vrf) => vrf,
                    Err(problem) => {
                        return Reply::Error {
                            message: RequestError::Vrf(problem).to_string(),
                        };
                    }
                };
                return Reply::Route {
                    route: self.router.get(vrf, addr),
                };
            }
            Request::Reload => self.reload().await,
            Request::ConfigSave => self.save(),
            Request::Status => {
                return Reply::Status {
                    status: self.status(),
                };
            }
            Request::AclAdd { rule } => {
                let message = format!("added {rule}");
                self.router
                    .acl_add(rule)
                    .map_err(RequestError::from)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::AclDel { rule } => {
                let message = format!("deleted {rule}");
                self.router
                    .acl_remove(&rule)
                    .map_err(RequestError::from)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::AclList => {
                return match self.acl_list() {
                    Ok(rules) => Reply::Acl { rules },
                    Err(err) => Reply::Error {
                        message: format!("{err:#}"),
                    },
                };
            }
            Request::FlowAdd { rule } => {
                let message = format!("added {rule}");
                self.router
                    .flow_add(rule)
                    .map_err(RequestError::from)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::FlowDel { rule } => {
                let message = format!("deleted {rule}");
                self.router
                    .flow_remove(&rule)
                    .map_err(RequestError::from)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::FlowSync { session, rules } => {
                let message = format!("session {session}: {} flow rules", rules.len());
                self.router
                    .flow_sync(&session, &rules)
                    .map_err(RequestError::from)
                    .and_then(|writes| self.write(&writes, message))
            }
            Request::FlowList => {
                return match self.flow_list() {
                    Ok(rules) => Reply::Flows { rules },
                    Err(err) => Reply::Error {
                        message: format!("{err:#}"),
                    },
                };
            }
            Request::SflowShow => {
                return match self.sflow_status() {
                    Ok(status) => Reply::Sflow { status },
                    Err(err) => Reply::Error {
                        message: err.to_string(),
                    },
                };
            }
            Request::SflowRate { rate, dev } => self.set_sample_rate(rate, dev),
            Request::Top { limit } => {
                return Reply::Top {
                    top: self.top(limit),
                };
            }
        };
        self.publish();
        match result {
            Ok(message) => Reply::Done { message },
            Err(err) => Reply::Error {
                message: err.to_string(),
            },
        }
    }

    /// Sets `routes` from the CLI, all or none (with `replace_all`, they become all the CLI's
    /// routes); `parsing` is what reading them took.
    pub(super) async fn set_routes(
        &mut self,
        routes: &[(usize, RouteSpec)],
        mode: Mode,
        replace_all: bool,
        parsing: Duration,
        progress: &mut Progress,
    ) -> Result<String, RequestError> {
        let started = Instant::now();
        let mut compile = |done| progress.report("compiling routes", done, routes.len());
        let (writes, removed) = if replace_all {
            self.router
                .replace_routes(routes, Source::Cli, &mut compile)?
        } else {
            let writes = self
                .router
                .set_routes(routes, Source::Cli, mode, &mut compile)?;
            (writes, 0)
        };
        progress.report("building tables", 0, 0);
        let compiled = started.elapsed();
        install(
            &mut self.dataplane,
            &self.router,
            writes,
            replace_all || routes.len() > BULK_ROUTES,
        )?;
        let installed = started.elapsed() - compiled;
        if let Err(err) = self.refresh_neighbours().await {
            warn!("reading the neighbour table: {err:#}");
        }
        let memory = self.dataplane.table_memory();
        let removed = if replace_all {
            format!(", {removed} removed")
        } else {
            String::new()
        };
        Ok(format!(
            "{} routes set{removed} in {:.2} s (parse {:.2} s, RIB and FIB {:.2} s, tables \
             {:.2} s); the route tables use {:.1} MiB of kernel memory",
            routes.len(),
            (parsing + started.elapsed()).as_secs_f64(),
            parsing.as_secs_f64(),
            compiled.as_secs_f64(),
            installed.as_secs_f64(),
            memory.total() as f64 / (1 << 20) as f64
        ))
    }

    pub(super) fn write(
        &mut self,
        writes: &[MapWrite],
        message: String,
    ) -> Result<String, RequestError> {
        self.dataplane.apply(writes)?;
        Ok(message)
    }

    /// Removes the CLI's routes for `prefixes` (each in its VRF), all or none.
    pub(super) fn remove_routes(
        &mut self,
        prefixes: &[(VrfId, IpNet)],
    ) -> Result<(), RequestError> {
        let writes = self.router.remove_routes(prefixes, Source::Cli)?;
        self.dataplane.apply(&writes)?;
        Ok(())
    }

    /// Re-reads the config and moves to it at once; a config that fails changes nothing.
    pub(super) async fn reload(&mut self) -> Result<String, RequestError> {
        let started = Instant::now();
        let config = Config::load(&self.options.config)?;
        let host = Host::read(&self.handle).await?;
        let tables = kernel_tables_to_follow(self.options, &config, &host);
        let following = self.kernel.as_ref().map(|sync| sync.tables.clone());
        if tables != following.clone().unwrap_or_default() {
            return Err(RequestError::KernelTablesChanged {
                file: self.config_file.clone(),
                wanted: tables,
                following: following.unwrap_or_default(),
            });
        }
        // The collectors are checked before anything changes.
        let agent = super::sampling::open_agent(&config, &self.config_file).await?;
        self.apply_config(config).await?;
        self.sampling.reconfigure(&self.config, agent);
        self.apply_sample_rates()?;
        let (v4, v6) = self.router.route_counts();
        Ok(format!(
            "reloaded {} in {:.2?}: {v4} IPv4 and {v6} IPv6 routes",
            self.config_file,
            started.elapsed()
        ))
    }

    /// Moves to `config` on the host as it is now: interfaces placed again (attached to ports
    /// new or re-created, detached from ports gone), tables rebuilt and swapped in whole.
    pub(super) async fn apply_config(&mut self, config: Config) -> Result<(), RequestError> {
        let host = Host::read(&self.handle).await?;
        let update: Update = self
            .router
            .apply_config(&config, &self.config_file, &host)?;
        self.config = config;
        self.dataplane.update(&update)?;
        for port in &update.ports_added {
            match self
                .dataplane
                .attach(&port.name, port.ifindex, self.options.xdp_mode)
            {
                Ok(mode) => self.attached.push((port.name.clone(), mode)),
                Err(err) => error!("{err:#}"),
            }
        }
        for port in &update.ports_removed {
            self.dataplane.detach(port.ifindex);
            self.attached.retain(|(name, _)| *name != port.name);
        }
        names::save(&self.options.run_dir, &self.router.interface_names())?;
        if let Err(err) = self.refresh_neighbours().await {
            warn!("reading the neighbour table: {err:#}");
        }
        Ok(())
    }

    /// Writes the CLI's routes to the saved-routes file, read back at the next start.
    pub(super) fn save(&self) -> Result<String, RequestError> {
        let specs = self.router.specs(Source::Cli);
        let path = &self.saved_routes_path;
        files::write_saved_routes(path, &specs).map_err(|error| RequestError::Save {
            path: path.display().to_string(),
            error,
        })?;
        Ok(format!(
            "{} CLI routes saved to {}",
            specs.len(),
            path.display()
        ))
    }

    pub(super) fn status(&self) -> Status {
        let (routes_v4, routes_v6) = self.router.route_counts();
        Status {
            pid: std::process::id(),
            config: self.config_file.clone(),
            ports: self.attached.clone(),
            routes_v4,
            routes_v6,
            nexthops: self.router.nexthop_count(),
            nexthops_unresolved: self.router.unusable_nexthops(),
            groups: self.router.group_count(),
            cli_routes: self.router.prefixes_of(Source::Cli).len(),
            kernel_routes: self.router.prefixes_of(Source::Kernel).len(),
            sync_kernel_tables: self
                .kernel
                .as_ref()
                .map(|sync| sync.tables.clone())
                .unwrap_or_default(),
            saved_routes_file: self.saved_routes_path.display().to_string(),
            fib: match self.dataplane.fib_mode() {
                FibMode::Compiled => "compiled",
                FibMode::LpmTrie => "lpm-trie",
            }
            .to_owned(),
            table_memory: self.dataplane.table_memory(),
        }
    }

    pub(super) fn acl_list(&self) -> anyhow::Result<Vec<RuleInfo>> {
        self.router
            .acl_rules()
            .map(|(id, rule, origin)| {
                let hits = self.dataplane.acl_hits(id)?;
                Ok(RuleInfo {
                    id,
                    rule: rule.clone(),
                    origin,
                    packets: hits.packets,
                    bytes: hits.bytes,
                })
            })
            .collect()
    }

    pub(super) fn flow_list(&self) -> anyhow::Result<Vec<FlowInfo>> {
        self.router
            .flow_rules()
            .into_iter()
            .map(|(id, rule, origin, order)| {
                let hits = self.dataplane.flow_hits(id)?;
                Ok(FlowInfo {
                    id,
                    rule,
                    origin,
                    order,
                    matched_packets: hits.matched_packets,
                    matched_bytes: hits.matched_bytes,
                    dropped_packets: hits.dropped_packets,
                    dropped_bytes: hits.dropped_bytes,
                })
            })
            .collect()
    }
}
