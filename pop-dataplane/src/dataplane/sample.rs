//! The sampling maps: each interface's rate, the ring of samples, the samples lost; and the
//! traffic per next hop.

use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use pop_dataplane_common::sample::{
    NEXTHOP_TRAFFIC, NexthopTraffic, SAMPLE_RATES, SAMPLES, SAMPLES_LOST, SampleRate,
};

use super::{Dataplane, open_pinned};

impl Dataplane {
    /// The ring the program writes samples into, for the daemon to drain. Once only: the
    /// ring has one reader.
    pub fn take_samples(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(SAMPLES)
            .with_context(|| format!("the XDP object has no map {SAMPLES} (or it was taken)"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Samples frames arriving on interface `slot` 1-in-`rate` (0: none).
    pub fn set_sample_rate(&mut self, slot: u32, rate: u32) -> anyhow::Result<()> {
        let mut rates: Array<_, SampleRate> = Array::try_from(self.map_mut(SAMPLE_RATES)?)?;
        rates
            .set(slot, &SampleRate::one_in(rate), 0)
            .with_context(|| format!("{SAMPLE_RATES}[{slot}]"))
    }

    /// Samples of interface `slot` the ring had no room for, summed over CPUs.
    pub fn samples_lost(&self, slot: u32) -> anyhow::Result<u64> {
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(SAMPLES_LOST)?)?;
        Ok(lost.get(&slot, 0)?.iter().sum())
    }

    pub(super) fn reset_nexthop_traffic(&mut self, id: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<NexthopTraffic>(NEXTHOP_TRAFFIC, id)
    }
}

/// The traffic sent to next hops `ids` by the dataplane pinned under `pin_dir`, summed over
/// CPUs.
pub fn nexthop_traffic(pin_dir: &Path, ids: &[u32]) -> anyhow::Result<Vec<NexthopTraffic>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let traffic: PerCpuArray<_, NexthopTraffic> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, NEXTHOP_TRAFFIC)?))?;
    ids.iter()
        .map(|id| {
            Ok(traffic
                .get(id, 0)
                .with_context(|| format!("{NEXTHOP_TRAFFIC}[{id}]"))?
                .iter()
                .fold(NexthopTraffic::default(), |sum, cpu| sum + *cpu))
        })
        .collect()
}

/// Samples lost on interface slots `slots` of the dataplane pinned under `pin_dir`.
pub fn samples_lost(pin_dir: &Path, slots: &[u32]) -> anyhow::Result<Vec<u64>> {
    let lost: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, SAMPLES_LOST)?))?;
    slots
        .iter()
        .map(|slot| Ok(lost.get(slot, 0)?.iter().sum()))
        .collect()
}
