//! The flow rules' maps: entries written a bank at a time, lists by destination prefix,
//! the wildcard flags, counters and rate buckets; and what a taken-over dataplane holds.

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key};
use ipnet::IpNet;
use pop_dataplane_common::flow::{
    self, BANK_ENTRIES, FLOW_KEY_VRF_BITS, FlowEntry, FlowHits, FlowKeyV4, FlowKeyV6, FlowList,
    RateBucket, flow_key_v4, flow_key_v6,
};

use super::Dataplane;
use crate::control::vrf::VrfId;

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

    /// Sets (or, with `None`, deletes) the list of `prefix` in VRF `vrf`.
    pub(super) fn set_flow_list(
        &mut self,
        vrf: VrfId,
        prefix: &IpNet,
        list: Option<&FlowList>,
    ) -> anyhow::Result<()> {
        let len = FLOW_KEY_VRF_BITS + u32::from(prefix.prefix_len());
        let result = match prefix {
            IpNet::V4(p) => {
                let mut map: LpmTrie<_, FlowKeyV4, FlowList> =
                    LpmTrie::try_from(self.map_mut(flow::FLOW_INDEX_V4)?)?;
                let key = Key::new(len, flow_key_v4(vrf.0, p.network().octets()));
                match list {
                    Some(list) => map.insert(&key, list, 0),
                    None => map.remove(&key),
                }
            }
            IpNet::V6(p) => {
                let mut map: LpmTrie<_, FlowKeyV6, FlowList> =
                    LpmTrie::try_from(self.map_mut(flow::FLOW_INDEX_V6)?)?;
                let key = Key::new(len, flow_key_v6(vrf.0, p.network().octets()));
                match list {
                    Some(list) => map.insert(&key, list, 0),
                    None => map.remove(&key),
                }
            }
        };
        match result {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => {
                Err(err).with_context(|| format!("the flow list of {prefix} in VRF {}", vrf.0))
            }
        }
    }

    /// Sets VRF `vrf`'s wildcard flags (IPv4, IPv6).
    pub(super) fn set_flow_wildcard(
        &mut self,
        vrf: VrfId,
        wildcard: [bool; 2],
    ) -> anyhow::Result<()> {
        let mut array: Array<_, u32> = Array::try_from(self.map_mut(flow::FLOW_WILDCARD)?)?;
        for (family, on) in [flow::WILDCARD_V4, flow::WILDCARD_V6]
            .into_iter()
            .zip(wildcard)
        {
            array
                .set(flow::wildcard_index(vrf.0, family), &u32::from(on), 0)
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

    /// The flow lists a taken-over dataplane holds (VRF, prefix), and the bank they point at.
    pub(super) fn read_flow_lists(&self) -> anyhow::Result<(Vec<(VrfId, IpNet)>, u32)> {
        let mut prefixes = Vec::new();
        let mut bank = 0;
        let mut note = |list: &FlowList| {
            if list.len > 0 && u32::from(list.entries[0]) >= BANK_ENTRIES {
                bank = 1;
            }
        };
        let vrf_of = |data: &[u8]| VrfId(u16::from_be_bytes([data[2], data[3]]));
        let len_of = |len: u32| len.saturating_sub(FLOW_KEY_VRF_BITS) as u8;
        let v4: LpmTrie<_, FlowKeyV4, FlowList> =
            LpmTrie::try_from(self.map(flow::FLOW_INDEX_V4)?)?;
        for item in v4.iter() {
            let (key, list) = item?;
            note(&list);
            let data = key.data();
            let addr: [u8; 4] = data[4..8].try_into().expect("4 bytes");
            prefixes.push((
                vrf_of(&data),
                IpNet::new(addr.into(), len_of(key.prefix_len()))?,
            ));
        }
        let v6: LpmTrie<_, FlowKeyV6, FlowList> =
            LpmTrie::try_from(self.map(flow::FLOW_INDEX_V6)?)?;
        for item in v6.iter() {
            let (key, list) = item?;
            note(&list);
            let data = key.data();
            let addr: [u8; 16] = data[4..20].try_into().expect("16 bytes");
            prefixes.push((
                vrf_of(&data),
                IpNet::new(addr.into(), len_of(key.prefix_len()))?,
            ));
        }
        Ok((prefixes, bank))
    }
}
