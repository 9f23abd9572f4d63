//! Packet sampling (sFlow) and traffic per next hop: what the program hands the daemon for a
//! sampled frame, the sampling rate of each interface, and the next hops' counters.

/// `SAMPLE_RATES`: an array by interface slot of [`SampleRate`]; written by userspace.
pub const SAMPLE_RATES: &str = "SAMPLE_RATES";
/// `SAMPLES`: the ring buffer the program writes a [`SampleRecord`] into per sampled frame.
pub const SAMPLES: &str = "SAMPLES";
/// `SAMPLES_LOST`: a per-CPU array by interface slot: samples the ring had no room for.
pub const SAMPLES_LOST: &str = "SAMPLES_LOST";
/// `NEXTHOP_TRAFFIC`: a per-CPU array by next-hop id of [`NexthopTraffic`].
pub const NEXTHOP_TRAFFIC: &str = "NEXTHOP_TRAFFIC";

/// Bytes of a sampled frame copied into its record: the sFlow custom of 128.
pub const HEADER_BYTES: usize = 128;

/// Size of the `SAMPLES` ring: about 24,000 records, a second of 1-in-100 sampling at 2.4
/// Mpps, or a tenth of a second at 1-in-1 (the daemon drains it every few milliseconds).
pub const SAMPLE_RING_BYTES: u32 = 4 << 20;

/// Largest sampling rate (1-in-N) accepted: sFlow agents commonly stop at 2^24.
pub const MAX_SAMPLING_RATE: u32 = 1 << 24;

/// How often an interface's frames are sampled: a frame is sampled when a fresh random
/// 32-bit number is at most `threshold`, so with probability 1/`rate`. `rate` 0: never.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleRate {
    pub rate: u32,
    pub threshold: u32,
}

impl SampleRate {
    pub const OFF: Self = Self {
        rate: 0,
        threshold: 0,
    };

    /// One frame in `rate` on average; 0 for none. `rate` is at most [`MAX_SAMPLING_RATE`].
    pub const fn one_in(rate: u32) -> Self {
        if rate == 0 {
            return Self::OFF;
        }
        // P(x <= t) = (t + 1) / 2^32 for x uniform over u32.
        let threshold = ((1u64 << 32) / rate as u64 - 1) as u32;
        Self { rate, threshold }
    }
}

/// A sampled frame, as the program saw it on arrival: its first [`HEADER_BYTES`] bytes
/// (before any rewrite), where it came from and what became of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRecord {
    /// The ingress interface's counter slot.
    pub ingress_slot: u32,
    /// [`SampleRecord::FORWARD`], [`SampleRecord::TO_KERNEL`] or [`SampleRecord::DROP`].
    pub verdict: u32,
    /// The `PassReason` or `DropReason` as a number; 0 when forwarded.
    pub reason: u32,
    /// The next hop it was sent to; `u32::MAX` when not forwarded.
    pub nexthop: u32,
    /// The egress interface's counter slot; `u32::MAX` when not forwarded.
    pub egress_slot: u32,
    /// The frame's length on arrival (all its buffers).
    pub frame_len: u32,
    /// Bytes of `header` that hold the frame: `min(frame_len, HEADER_BYTES)`.
    pub header_len: u32,
    /// Prefix length of the route the destination matched; `u32::MAX` when none was looked
    /// up.
    pub route_prefix_len: u32,
    /// The CPU it was sampled on; with `pool` and `lost`, that CPU's totals.
    pub cpu: u32,
    pub _pad: u32,
    /// Frames this CPU has seen on the ingress interface (the sFlow sample pool's share).
    pub pool: u64,
    /// Samples of this interface that this CPU had no room for in the ring.
    pub lost: u64,
    pub header: [u8; HEADER_BYTES],
}

impl SampleRecord {
    pub const FORWARD: u32 = 1;
    pub const TO_KERNEL: u32 = 2;
    pub const DROP: u32 = 3;

    pub const NONE: u32 = u32::MAX;

    pub const EMPTY: Self = Self {
        ingress_slot: 0,
        verdict: 0,
        reason: 0,
        nexthop: Self::NONE,
        egress_slot: Self::NONE,
        frame_len: 0,
        header_len: 0,
        route_prefix_len: Self::NONE,
        cpu: 0,
        _pad: 0,
        pool: 0,
        lost: 0,
        header: [0; HEADER_BYTES],
    };
}

impl Default for SampleRecord {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Frames and bytes the program sent to one next hop (bytes as sent, VLAN tags included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NexthopTraffic {
    pub packets: u64,
    pub bytes: u64,
}

impl core::ops::Add for NexthopTraffic {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }
}

// The layouts userspace reads (the record from the ring, across versions the pinned maps).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SampleRate>() == 8);
    assert!(offset_of!(SampleRecord, pool) == 40);
    assert!(offset_of!(SampleRecord, header) == 56);
    assert!(size_of::<SampleRecord>() == 56 + HEADER_BYTES);
    assert!(size_of::<NexthopTraffic>() == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_give_one_in_rate() {
        assert_eq!(SampleRate::one_in(1).threshold, u32::MAX);
        assert_eq!(SampleRate::one_in(2).threshold, (1 << 31) - 1);
        assert_eq!(SampleRate::one_in(0), SampleRate::OFF);
        // (t + 1) / 2^32 within one part in 2^32 of 1 / rate.
        for rate in [3u32, 1000, 4096, MAX_SAMPLING_RATE] {
            let t = SampleRate::one_in(rate).threshold as f64;
            let p = (t + 1.0) / 4_294_967_296.0;
            assert!((p * rate as f64 - 1.0).abs() < 1e-6, "rate {rate}: {p}");
        }
    }
}
