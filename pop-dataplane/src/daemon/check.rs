//! `pop-dataplane config check`: a config (and a route file) validated as `run` and `reload`
//! would take them, on this host, without a daemon, maps or root: the same checks, the same
//! messages.

use std::path::Path;

use anyhow::Context as _;

use super::sampling::open_agent;
use crate::{
    config::{Config, route_spec},
    control::{
        plan::Adopted,
        rib::Source,
        router::{Mode, Router},
    },
    host::Host,
};

/// What `config check` found; `Err` with the first problem, as the daemon would say it.
pub(crate) async fn check(
    config_path: &Path,
    routes_path: Option<&Path>,
    on_host: bool,
) -> anyhow::Result<String> {
    let file = config_path.display().to_string();
    let config = Config::load(config_path)?;
    let mut summary = format!(
        "{file}: {} interfaces, {} next hops, {} routes, {} deny rules, {} flow rules",
        config.interfaces.len(),
        config.nexthops.len(),
        config.routes.len(),
        config.acl.len(),
        config.flows.len()
    );
    if !on_host {
        return Ok(summary + " (not checked against this host)");
    }
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    let host = Host::read(&handle).await?;
    let mut router = Router::new(&host, Adopted::default(), &[]);
    router.apply_config_with(&config, &file, &host, None)?;
    if let Some(agent) = open_agent(&config, &file).await? {
        summary += &format!("; sFlow to {}", agent.collectors().join(", "));
    }
    if let Some(path) = routes_path {
        let (name, text) = route_spec::read_file(&path.display().to_string())?;
        let routes = route_spec::parse_lines(&name, &text, &mut |_| {})?;
        if routes.is_empty() {
            anyhow::bail!("{name}: no routes");
        }
        router
            .set_routes(&routes, Source::Cli, Mode::Replace, &mut |_| {})
            .map_err(|error| anyhow::anyhow!("{}", error.in_file(&name)))?;
        summary += &format!("; {name}: {} routes", routes.len());
    }
    Ok(summary + "; good on this host")
}
