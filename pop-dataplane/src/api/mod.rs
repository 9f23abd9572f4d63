//! The control socket: how the CLI talks to the running daemon. A Unix socket, mode 0600 and
//! owned by root (0660 with a configured group); one JSON request per line; replies one JSON
//! line each: any number of [`Reply::Progress`] lines (long requests), then the answer.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::route_spec::RouteSpec,
    config::{DenyRule, flow_rule::FlowRule},
    control::acl::RuleInfo,
    control::flow::FlowInfo,
    control::rib::Source,
    control::router::{Mode, RouteInfo},
    dataplane::AttachedMode,
    observe::top::TopSnapshot,
};

/// Largest request the daemon reads: a full table in route syntax fits many times over.
pub(crate) const MAX_REQUEST: usize = 512 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Add (or replace) routes from the CLI; each with the line it came from (0: none).
    RouteSet {
        routes: Vec<(usize, RouteSpec)>,
        mode: Mode,
    },
    /// Routes in route syntax, one per line, replacing CLI routes for the same prefixes
    /// (with `replace_all`, every CLI route: those not in `text` go); `name` names the input
    /// in errors.
    RouteLoad {
        name: String,
        text: String,
        #[serde(default)]
        replace_all: bool,
    },
    /// Delete the CLI's routes for `prefixes`, in VRF `vrf` (`None`: the default VRF).
    RouteDel {
        prefixes: Vec<IpNet>,
        #[serde(default)]
        vrf: Option<String>,
    },
    RouteFlush,
    RouteList {
        source: Option<Source>,
        /// Only this VRF's routes.
        #[serde(default)]
        vrf: Option<String>,
    },
    RouteGet {
        addr: IpAddr,
        #[serde(default)]
        vrf: Option<String>,
    },
    Reload,
    ConfigSave,
    Status,
    /// `acl add`: a deny rule from the CLI.
    AclAdd {
        rule: DenyRule,
    },
    AclDel {
        rule: DenyRule,
    },
    AclList,
    /// `flow add`: a flow rule from the CLI.
    FlowAdd {
        rule: FlowRule,
    },
    FlowDel {
        rule: FlowRule,
    },
    FlowList,
    /// From a FlowSpec feed: session `session`'s rules are now exactly `rules` (none when
    /// the session went down).
    FlowSync {
        session: String,
        rules: Vec<FlowRule>,
    },
    /// The sFlow agent, and each interface's sampling rate.
    SflowShow,
    /// Sample interface `dev` (every interface when `None`) 1-in-`rate`; 0: not at all.
    SflowRate {
        rate: u32,
        dev: Option<String>,
    },
    /// Traffic estimated from the samples: the `limit` largest of each table.
    Top {
        limit: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// Not the answer yet: `done` of `total` in `phase` (`total` 0: unknown).
    Progress {
        phase: String,
        done: u64,
        total: u64,
    },
    Done {
        message: String,
    },
    Error {
        message: String,
    },
    Routes {
        routes: Vec<RouteInfo>,
    },
    Route {
        route: Option<RouteInfo>,
    },
    Status {
        status: Status,
    },
    Acl {
        rules: Vec<RuleInfo>,
    },
    Flows {
        rules: Vec<FlowInfo>,
    },
    Sflow {
        status: SflowStatus,
    },
    Top {
        top: TopSnapshot,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub pid: u32,
    pub config: String,
    /// Port name and attach mode.
    pub ports: Vec<(String, AttachedMode)>,
    pub routes_v4: usize,
    pub routes_v6: usize,
    pub nexthops: usize,
    pub nexthops_unresolved: usize,
    pub groups: usize,
    pub cli_routes: usize,
    /// Routes from the kernel tables followed (`sync_kernel_tables`).
    pub kernel_routes: usize,
    pub sync_kernel_tables: Vec<u32>,
    pub saved_routes_file: String,
    /// The route lookup: "compiled" or "lpm-trie".
    pub fib: String,
    /// Kernel memory of the route tables (the kernel's own account).
    pub table_memory: crate::dataplane::tables::TableMemory,
}

/// Sends `request` to the daemon listening on `socket` and returns its reply; errors say what
/// the user can do about them.
/// `sflow show`: the agent and the rates in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SflowStatus {
    pub agent_address: Option<String>,
    pub collectors: Vec<String>,
    pub polling_interval: u32,
    pub interfaces: Vec<SampledInterface>,
    /// Samples read from the ring.
    pub samples: u64,
    pub flow_samples_sent: u64,
    pub counter_samples_sent: u64,
    pub datagrams: u64,
    pub datagram_bytes: u64,
    pub send_errors: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SampledInterface {
    pub name: String,
    /// 1-in-N; 0 when not sampled.
    pub sampling_rate: u32,
    /// Samples the ring had no room for.
    pub lost: u64,
}

pub(crate) fn request(socket: &Path, request: &Request) -> anyhow::Result<Reply> {
    request_with_progress(socket, request, &mut |_, _, _| {})
}

/// [`request`], passing the daemon's progress reports on to `progress` (phase, done, total).
pub(crate) fn request_with_progress(
    socket: &Path,
    request: &Request,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<Reply> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(err) => match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => bail!(
                "no pop-dataplane daemon is running: nothing listens on {} (start one with \
                 `pop-dataplane run --config FILE`, or give its --run-dir)",
                socket.display()
            ),
            std::io::ErrorKind::PermissionDenied => bail!(
                "permission denied on {}: the control socket is for root (and the control \
                 group, if one is configured)",
                socket.display()
            ),
            _ => return Err(err).with_context(|| format!("connecting to {}", socket.display())),
        },
    };
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .with_context(|| format!("sending to {}", socket.display()))?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .with_context(|| format!("reading the reply from {}", socket.display()))?;
        if line.is_empty() {
            bail!("the daemon closed the connection without a reply (see its log)");
        }
        let reply: Reply = serde_json::from_str(&line)
            .context("the daemon's reply is not understood (another version?)")?;
        match reply {
            Reply::Progress { phase, done, total } => progress(&phase, done, total),
            reply => return Ok(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_as_one_line() {
        let request = Request::RouteSet {
            routes: vec![(
                3,
                RouteSpec::parse("198.18.2.0/24 via 198.18.1.1 dev ra").unwrap(),
            )],
            mode: Mode::Replace,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let reply = Reply::Error {
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"reply":"error","message":"x"}"#
        );
    }

    #[test]
    fn no_daemon_is_said_plainly() {
        let err = request(Path::new("/nonexistent/control.sock"), &Request::Status).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no pop-dataplane daemon is running"),
            "{err}"
        );
    }
}
