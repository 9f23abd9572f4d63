//! Moving to a config: checked in full against the new topology first, then taken whole, then
//! the map writes that bring the dataplane to it.

use std::collections::HashMap;

use ipnet::IpNet;
use pop_dataplane_common::Nexthop;

use super::{Router, routes::hop_key};
use crate::{
    config::{
        Config, ConfigError, DenyRule, RouteAction,
        route_spec::{RouteSpec, Target},
    },
    control::{
        acl::{self, Origin},
        flow::{CompiledFlows, FlowOrigin, Flows},
        nexthops::{Neighbour, NexthopKey},
        plan::{MapWrite, Update},
        rib::{Action, Source},
        topology::Topology,
        vrf::{VrfId, Vrfs},
    },
    host::Host,
    mac::MacAddr,
};

/// What a config check found: everything the move needs, nothing changed yet.
struct Checked {
    vrfs: Vrfs,
    topology: Topology,
    acl: acl::Acl,
    flows: Flows,
    compiled_flows: CompiledFlows,
    /// The config's next hops, in `[[nexthop]]` order, with their static MACs.
    nexthop_keys: Vec<(NexthopKey, Option<MacAddr>)>,
}

impl Router {
    /// Moves to `config` (read from `file`), validated first and applied whole: on error
    /// nothing changes. Routes from other sources stay; the route tables are rebuilt, to be
    /// swapped in at once.
    pub fn apply_config(
        &mut self,
        config: &Config,
        file: &str,
        host: &Host,
    ) -> Result<Update, ConfigError> {
        self.apply_config_with(config, file, host, None)
    }

    /// [`Router::apply_config`], with the CLI routes replaced by `cli_routes` (read back from
    /// the saved-routes file at start) when given.
    pub fn apply_config_with(
        &mut self,
        config: &Config,
        file: &str,
        host: &Host,
        cli_routes: Option<&[(usize, RouteSpec)]>,
    ) -> Result<Update, ConfigError> {
        let checked = self.check_config(config, file, host, cli_routes)?;
        // From here on nothing fails: take the new, then let go of the old.
        let old_topology = std::mem::replace(&mut self.topology, checked.topology);
        self.vrfs = checked.vrfs;
        self.acl = checked.acl;
        self.flows = checked.flows;
        // The tables rebuilt below carry the flags: the routes compiled before need none.
        self.fib
            .replace_flow_prefixes(checked.compiled_flows.prefixes());
        let flow_writes = self.flow_writes(&checked.compiled_flows);
        self.martian_sources = config.filter.martian_sources;
        let released = self.take_config_routes(config, &checked.nexthop_keys, cli_routes);
        self.set_local_addresses_in_rib(&host.addresses);

        let usable = self.usable_set();
        let tables = self
            .fib
            .rebuild(self.rib.best().map(|(v, p, _, a)| (v, p, a)), &|id| {
                usable.contains(&id)
            })
            .map_err(|err| whole_file(file, err.to_string()))?;
        let mut update = self.topology_update(&old_topology);
        update.before.extend(flow_writes);
        update.tables = tables;
        let mut cleared = Vec::new();
        for id in released {
            if self.nexthops.release(id) {
                cleared.push(MapWrite::Nexthop(id, Nexthop::default()));
            }
        }
        update.after.extend(self.still_free(cleared));
        self.forget_unused_sets();
        Ok(update)
    }

    /// Everything about `config` that can fail, against the host and the routes of other
    /// sources; changes nothing.
    fn check_config(
        &self,
        config: &Config,
        file: &str,
        host: &Host,
        cli_routes: Option<&[(usize, RouteSpec)]>,
    ) -> Result<Checked, ConfigError> {
        let vrfs = self
            .vrfs
            .renamed(config.vrfs.iter().map(|v| v.name.as_str()))
            .map_err(|err| whole_file(file, err.to_string()))?;
        let topology = Topology::build_after(config, file, host, &vrfs, &self.topology)?;
        match cli_routes {
            // Saved CLI routes must find their VRFs and interfaces in the new topology.
            Some(saved) => {
                for (line, spec) in saved {
                    if let Some(vrf) = &spec.vrf
                        && vrfs.id(vrf).is_none()
                    {
                        return Err(whole_file(
                            file,
                            format!(
                                "saved route on line {line} ({spec}): vrf {vrf:?} is not one of                                  the VRFs ({})",
                                vrfs.names()
                            ),
                        ));
                    }
                    let Target::Via(hops) = &spec.target else {
                        continue;
                    };
                    if let Some(hop) = hops.iter().find(|h| topology.interface(&h.dev).is_none()) {
                        return Err(whole_file(
                            file,
                            format!(
                                "saved route on line {line} ({spec}): dev {:?} is not one of the \
                                 interfaces",
                                hop.dev
                            ),
                        ));
                    }
                }
            }
            // CLI routes must still find their VRFs and interfaces.
            None => {
                for (vrf, prefix, source, action) in self.rib.all() {
                    if source != Source::Cli {
                        continue;
                    }
                    let vrf_name = self.vrf_name(vrf);
                    if !vrf.is_default() && vrfs.id(&vrf_name) != Some(vrf) {
                        return Err(whole_file(
                            file,
                            format!(
                                "vrf {vrf_name:?} is gone from the config but route {prefix}                                  (from the CLI) is in it: delete that route first"
                            ),
                        ));
                    }
                    for id in action.nexthops() {
                        let dev = &self
                            .nexthops
                            .get(*id)
                            .expect("routes hold their next hops")
                            .key
                            .dev;
                        if topology.interface(dev).is_none() {
                            return Err(whole_file(
                                file,
                                format!(
                                    "interface {dev:?} is gone from the config but route {prefix} \
                                     (from the CLI) uses it: delete or change that route first"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let nexthop_keys: Vec<(NexthopKey, Option<MacAddr>)> = config
            .nexthops
            .iter()
            .map(|n| {
                let neighbour = match (n.via, n.lladdr) {
                    (Some(via), _) => Neighbour::Via(via),
                    (None, Some(mac)) => Neighbour::Mac(mac),
                    (None, None) => unreachable!("validated: via or lladdr"),
                };
                let key = NexthopKey {
                    dev: n.dev.clone(),
                    neighbour,
                };
                (key, n.lladdr)
            })
            .collect();
        let new_nexthops = nexthop_keys
            .iter()
            .filter(|(k, _)| self.nexthops.id(k).is_none())
            .count();
        let (v4, v6) = per_family(config.routes.iter().map(|r| r.prefix));
        self.check_room(v4, v6, new_nexthops)
            .map_err(|err| whole_file(file, err.to_string()))?;

        let mut acl = self.acl.clone();
        let config_acl: Vec<DenyRule> = config.acl.iter().map(|a| a.rule.clone()).collect();
        acl.set(Origin::Config, &config_acl)
            .and_then(|()| acl::check_room(&acl.compile(&topology)))
            .map_err(|err| whole_file(file, err.to_string()))?;
        let mut flows = self.flows.clone();
        let config_flows: Vec<_> = config.flows.iter().map(|f| f.rule.clone()).collect();
        let compiled_flows = flows
            .set(&FlowOrigin::Config, &config_flows)
            .and_then(|()| flows.compile(&vrfs))
            .map_err(|err| whole_file(file, err.to_string()))?;
        Ok(Checked {
            vrfs,
            topology,
            acl,
            flows,
            compiled_flows,
            nexthop_keys,
        })
    }

    /// Replaces the config's routes and next hops in the RIB (and the CLI's by `cli_routes`,
    /// when given); the next-hop ids the old ones held, to release.
    fn take_config_routes(
        &mut self,
        config: &Config,
        nexthop_keys: &[(NexthopKey, Option<MacAddr>)],
        cli_routes: Option<&[(usize, RouteSpec)]>,
    ) -> Vec<u32> {
        let mut config_nexthops = HashMap::new();
        for (nexthop, (key, mac)) in config.nexthops.iter().zip(nexthop_keys) {
            let id = self.nexthops.acquire(key, *mac).expect("room checked");
            config_nexthops.insert(nexthop.name.clone(), id);
        }
        let old_config_nexthops = std::mem::replace(&mut self.config_nexthops, config_nexthops);
        let mut released = self.remove_source(Source::Config);
        for route in &config.routes {
            let action = match &route.action {
                RouteAction::Nexthops(indexes) => {
                    let mut ids: Vec<u32> = indexes
                        .iter()
                        .map(|i| self.config_nexthops[&config.nexthops[*i].name])
                        .collect();
                    // Two names for one next hop count once.
                    ids.sort_unstable();
                    ids.dedup();
                    for id in &ids {
                        self.nexthops.hold(*id);
                    }
                    self.action(ids)
                }
                RouteAction::Blackhole => Action::Blackhole,
                RouteAction::Kernel => Action::Kernel,
            };
            let vrf = route
                .vrf
                .as_deref()
                .map_or(VrfId::DEFAULT, |name| self.vrfs.id(name).expect("checked"));
            self.rib.insert(vrf, route.prefix, Source::Config, action);
        }
        released.extend(old_config_nexthops.values());
        if let Some(cli_routes) = cli_routes {
            released.extend(self.remove_source(Source::Cli));
            for (_, spec) in cli_routes {
                let action = match &spec.target {
                    Target::Via(hops) => {
                        let ids = hops
                            .iter()
                            .map(|hop| {
                                self.nexthops
                                    .acquire(&hop_key(hop), None)
                                    .expect("room checked")
                            })
                            .collect();
                        self.action(ids)
                    }
                    Target::Blackhole => Action::Blackhole,
                    Target::Kernel => Action::Kernel,
                    Target::Object(id) => Action::Object(*id),
                };
                let vrf = self.vrf_id(spec.vrf.as_deref()).expect("checked");
                self.rib.insert(vrf, spec.prefix, Source::Cli, action);
            }
        }
        released
    }

    /// Removes every route of `source` from the RIB alone (the tables are rebuilt after); the
    /// next-hop ids they held.
    fn remove_source(&mut self, source: Source) -> Vec<u32> {
        let mut released = Vec::new();
        for (vrf, prefix) in self.rib.prefixes_of(source) {
            if let (Some(old), _) = self.rib.remove(vrf, prefix, source) {
                released.extend_from_slice(old.nexthops());
            }
        }
        released
    }

    /// The writes that move the maps from `old`'s interfaces and ports to the topology now,
    /// with every next hop and the source filter; and the ports to attach and detach.
    fn topology_update(&mut self, old: &Topology) -> Update {
        let mut update = Update::default();
        for port in &self.topology.ports {
            update.before.push(MapWrite::Port(port.index, port.ifindex));
            if !old.ports.iter().any(|p| p.ifindex == port.ifindex) {
                update.ports_added.push(port.clone());
            }
        }
        update.ports_removed = old
            .ports
            .iter()
            .filter(|p| !self.topology.ports.iter().any(|n| n.ifindex == p.ifindex))
            .cloned()
            .collect();
        // First, so that the interfaces' entries below carry the source filter's flag.
        let mut acl = self.acl_writes();
        // Every interface is written below.
        acl.retain(|write| !matches!(write, MapWrite::Interface(..)));
        for interface in &self.topology.interfaces {
            if !old
                .interfaces
                .iter()
                .any(|o| o.entry.slot == interface.entry.slot)
            {
                update
                    .before
                    .push(MapWrite::ResetCounters(interface.entry.slot));
            }
            update
                .before
                .push(MapWrite::Interface(interface.key, interface.entry));
        }
        update.before.extend(acl);
        for interface in &old.interfaces {
            if !self
                .topology
                .interfaces
                .iter()
                .any(|i| i.key == interface.key)
            {
                update.after.push(MapWrite::DeleteInterface(interface.key));
            }
        }
        update.before.extend(
            self.nexthop_values()
                .map(|(id, nexthop)| MapWrite::Nexthop(id, nexthop)),
        );
        update
    }
}

/// An error about the config as a whole, not one of its lines.
fn whole_file(file: &str, message: String) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: None,
        message,
    }
}

/// How many of `prefixes` are IPv4 and how many IPv6.
pub(super) fn per_family(prefixes: impl Iterator<Item = IpNet>) -> (usize, usize) {
    prefixes.fold((0, 0), |(v4, v6), prefix| match prefix {
        IpNet::V4(_) => (v4 + 1, v6),
        IpNet::V6(_) => (v4, v6 + 1),
    })
}
