//! The flow rules' maps: entries written a bank at a time, lists by destination prefix,
//! the wildcard flags, counters and rate buckets; and what a taken-over dataplane holds.

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key};
use ipnet::IpNet;
use pop_dataplane_common::flow::{self, BANK_ENTRIES, FlowEntry, FlowHits, FlowList, RateBucket};

use super::Dataplane;

impl Dataplane {
    /// Writes bank `bank`: `entries` from index 0. What the bank held past them stays: the
    /// lists written next point at `entries` only.
    pub(super) fn set_flow_entries(
        &mut self,
        bank: u32,
        entries: &[FlowEntry],
    ) -> anyhow::Result<()> {
        let mut array: Array<_, FlowEntry> = Array::try_from(self.map_mut(flow::FLOW_ENTRIES)?)?;
        for (index, entry) in (bank * BANK_ENTRIES..).zip(entries) {
            array
                .set(index, entry, 0)
                .with_context(|| format!("FLOW_ENTRIES[{index}]"))?;
        }
        Ok(())
    }

    /// Sets (or, with `None`, deletes) the list of `prefix`.
    pub(super) fn set_flow_list(
        &mut self,
        prefix: &IpNet,
        list: Option<&FlowList>,
    ) -> anyhow::Result<()> {
        let result = match prefix {
            IpNet::V4(p) => {
                let mut map: LpmTrie<_, [u8; 4], FlowList> =
                    LpmTrie::try_from(self.map_mut(flow::FLOW_INDEX_V4)?)?;
                let key = Key::new(u32::from(p.prefix_len()), p.network().octets());
                match list {
                    Some(list) => map.insert(&key, list, 0),
                    None => map.remove(&key),
                }
            }
            IpNet::V6(p) => {
                let mut map: LpmTrie<_, [u8; 16], FlowList> =
                    LpmTrie::try_from(self.map_mut(flow::FLOW_INDEX_V6)?)?;
                let key = Key::new(u32::from(p.prefix_len()), p.network().octets());
                match list {
                    Some(list) => map.insert(&key, list, 0),
                    None => map.remove(&key),
                }
            }
        };
        match result {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("the flow list of {prefix}")),
        }
    }

    pub(super) fn set_flow_wildcard(&mut self, wildcard: [bool; 2]) -> anyhow::Result<()> {
        let mut array: Array<_, u32> = Array::try_from(self.map_mut(flow::FLOW_WILDCARD)?)?;
        for (index, on) in [flow::WILDCARD_V4, flow::WILDCARD_V6]
            .into_iter()
            .zip(wildcard)
        {
            array
                .set(index, &u32::from(on), 0)
                .context("FLOW_WILDCARD")?;
        }
        Ok(())
    }

    pub(super) fn reset_flow_rule(&mut self, rule: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<FlowHits>(flow::FLOW_HITS, rule)?;
        let mut buckets: Array<_, RateBucket> = Array::try_from(self.map_mut(flow::FLOW_BUCKETS)?)?;
        buckets
            .set(rule, &RateBucket::default(), 0)
            .with_context(|| format!("FLOW_BUCKETS[{rule}]"))
    }

    /// What flow rule `rule` matched and dropped, summed over CPUs.
    pub fn flow_hits(&self, rule: u32) -> anyhow::Result<FlowHits> {
        let hits: PerCpuArray<_, FlowHits> = PerCpuArray::try_from(self.map(flow::FLOW_HITS)?)?;
        let values = hits.get(&rule, 0)?;
        Ok(values
            .iter()
            .fold(FlowHits::default(), |sum, cpu| sum + *cpu))
    }

    /// The flow lists a taken-over dataplane holds, and the bank they point at.
    pub(super) fn read_flow_lists(&self) -> anyhow::Result<(Vec<IpNet>, u32)> {
        let mut prefixes = Vec::new();
        let mut bank = 0;
        let mut note = |list: &FlowList| {
            if list.len > 0 && u32::from(list.entries[0]) >= BANK_ENTRIES {
                bank = 1;
            }
        };
        let v4: LpmTrie<_, [u8; 4], FlowList> = LpmTrie::try_from(self.map(flow::FLOW_INDEX_V4)?)?;
        for item in v4.iter() {
            let (key, list) = item?;
            note(&list);
            prefixes.push(IpNet::new(key.data().into(), key.prefix_len() as u8)?);
        }
        let v6: LpmTrie<_, [u8; 16], FlowList> = LpmTrie::try_from(self.map(flow::FLOW_INDEX_V6)?)?;
        for item in v6.iter() {
            let (key, list) = item?;
            note(&list);
            prefixes.push(IpNet::new(key.data().into(), key.prefix_len() as u8)?);
        }
        Ok((prefixes, bank))
    }
}
