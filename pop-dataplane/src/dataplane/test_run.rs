//! Running the program on one frame with BPF_PROG_TEST_RUN: the packet tests, and `trace`.

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use pop_dataplane_common::trace::TRACE_MAGIC;

/// What one run of the program on a frame did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_PASS` = 2 and so on).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// Runs `program` once on `frame` received on `ingress_ifindex`; with `trace`, asks it for a
/// trace record (see `pop_dataplane_common::trace`).
pub(super) fn test_run(
    program: &Xdp,
    ingress_ifindex: u32,
    frame: &[u8],
    trace: bool,
) -> anyhow::Result<TestRunOutput> {
    // The trace request travels as XDP metadata in front of the frame.
    let meta_len = if trace { 4 } else { 0 };
    let mut data = Vec::with_capacity(meta_len + frame.len());
    if trace {
        data.extend_from_slice(&TRACE_MAGIC.to_ne_bytes());
    }
    data.extend_from_slice(frame);
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: offsets into data_in (metadata first), and the ingress interface.
    let data_end = u32::try_from(data.len()).context("frame too long")?;
    let mut ctx = [0u8; 24];
    ctx[0..4].copy_from_slice(&(meta_len as u32).to_ne_bytes());
    ctx[4..8].copy_from_slice(&data_end.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    // Room for VLAN tags the program pushes.
    let mut out = vec![0u8; data.len() + 64];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&data),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    // data_out starts with the metadata too.
    let frame = out.split_off(meta_len.min(out.len()));
    Ok(TestRunOutput {
        action: result.return_value,
        frame,
    })
}
