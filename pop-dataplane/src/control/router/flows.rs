//! Flow rules: from the config, the CLI and FlowSpec sessions; compiled, written to the bank
//! the program does not read, and the routes their destinations overlap flagged.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use pop_dataplane_common::{
    flow::{FlowEntry, FlowList},
    maps::MAX_VRFS,
};

use super::Router;
use crate::{
    config::flow_rule::FlowRule,
    control::{
        flow::{CompiledFlows, FlowError, FlowOrigin, Flows},
        plan::MapWrite,
        vrf::VrfId,
    },
};

/// What the flow maps hold.
#[derive(Clone, Debug, Default)]
pub(super) struct FlowsInstalled {
    /// The bank the lists point at.
    bank: u32,
    /// `None` when not known (a taken-over dataplane): written anew.
    entries: Option<Vec<FlowEntry>>,
    lists: BTreeMap<(VrfId, IpNet), FlowList>,
    /// The VRFs' wildcard flags that are set (a VRF left out has none); `None` when not
    /// known: every VRF's written at the first install.
    wildcard: Option<BTreeMap<VrfId, [bool; 2]>>,
}

impl FlowsInstalled {
    /// A taken-over dataplane's: lists of these (VRF, prefix), pointing at `bank`.
    pub(super) fn adopted(prefixes: &[(VrfId, IpNet)], bank: u32) -> Self {
        Self {
            bank,
            entries: None,
            lists: prefixes.iter().map(|p| (*p, FlowList::default())).collect(),
            wildcard: None,
        }
    }
}

impl Router {
    /// Adds the CLI's flow `rule`; refused, with nothing changed, when it is there already or
    /// the rules would not fit.
    pub fn flow_add(&mut self, rule: FlowRule) -> Result<Vec<MapWrite>, FlowError> {
        let mut flows = self.flows.clone();
        flows.add(rule, FlowOrigin::Cli)?;
        self.take_flows(flows)
    }

    /// Deletes the CLI's flow `rule`.
    pub fn flow_remove(&mut self, rule: &FlowRule) -> Result<Vec<MapWrite>, FlowError> {
        let mut flows = self.flows.clone();
        flows.remove(rule, &FlowOrigin::Cli)?;
        self.take_flows(flows)
    }

    /// Makes FlowSpec session `session`'s rules exactly `rules` (none: the session is gone).
    pub fn flow_sync(
        &mut self,
        session: &str,
        rules: &[FlowRule],
    ) -> Result<Vec<MapWrite>, FlowError> {
        let mut flows = self.flows.clone();
        flows.set(&FlowOrigin::Bgp(session.to_owned()), rules)?;
        self.take_flows(flows)
    }

    /// The rules, in evaluation order: (id, rule, origin, place).
    pub fn flow_rules(&self) -> Vec<(u32, FlowRule, FlowOrigin, usize)> {
        self.flows.infos()
    }

    /// Moves to `flows`, checked first: the writes that install them.
    fn take_flows(&mut self, flows: Flows) -> Result<Vec<MapWrite>, FlowError> {
        let compiled = flows.compile(&self.vrfs)?;
        self.flows = flows;
        let mut writes = self.flow_writes(&compiled);
        writes.extend(self.fib.set_flow_prefixes(compiled.prefixes()));
        Ok(writes)
    }

    /// The writes that bring the flow maps to `compiled` (the route flags aside): the new
    /// entries into the other bank, then every list pointing at it, then the lists no rule
    /// needs any more removed.
    pub(super) fn flow_writes(&mut self, compiled: &CompiledFlows) -> Vec<MapWrite> {
        let mut writes: Vec<MapWrite> = self
            .flows
            .take_fresh()
            .into_iter()
            .map(MapWrite::ResetFlowRule)
            .collect();
        let installed = &mut self.flows_installed;
        let same_lists = installed.lists.len() == compiled.lists.len()
            && compiled
                .lists
                .keys()
                .all(|p| installed.lists.get(p) == Some(&compiled.list(p, installed.bank)));
        if installed.entries.as_ref() != Some(&compiled.entries) || !same_lists {
            let bank = 1 - installed.bank;
            writes.push(MapWrite::FlowEntries {
                bank,
                entries: compiled.entries.clone(),
            });
            let mut lists = BTreeMap::new();
            for key @ (vrf, prefix) in compiled.lists.keys() {
                let list = compiled.list(key, bank);
                writes.push(MapWrite::FlowList(*vrf, *prefix, list));
                lists.insert(*key, list);
            }
            for key @ (vrf, prefix) in installed.lists.keys() {
                if !lists.contains_key(key) {
                    writes.push(MapWrite::DeleteFlowList(*vrf, *prefix));
                }
            }
            installed.bank = bank;
            installed.lists = lists;
            installed.entries = Some(compiled.entries.clone());
        }
        let vrfs: Vec<VrfId> = match &installed.wildcard {
            Some(old) => old
                .keys()
                .chain(compiled.wildcard.keys())
                .copied()
                .collect(),
            None => (0..MAX_VRFS as u16).map(VrfId).collect(),
        };
        for vrf in BTreeSet::from_iter(vrfs) {
            let old = installed.wildcard.as_ref().and_then(|old| old.get(&vrf));
            let new = compiled.wildcard.get(&vrf);
            if installed.wildcard.is_none() || old != new {
                writes.push(MapWrite::FlowWildcard(
                    vrf,
                    new.copied().unwrap_or_default(),
                ));
            }
        }
        installed.wildcard = Some(compiled.wildcard.clone());
        writes
    }
}
