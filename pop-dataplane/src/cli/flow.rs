//! `pop-dataplane flow`: flow rules (FlowSpec components, with an action).

use clap::Subcommand;

use super::reply::{done, table, unexpected};
use crate::{
    api::{self, Reply, Request},
    config::flow_rule::FlowRule,
};

#[derive(Subcommand)]
pub(super) enum FlowCommand {
    /// Add a rule: [vrf NAME] [ipv4|ipv6] [destination PREFIX] [source PREFIX] [COMPONENT
    /// OPS]... then
    /// drop | accept | rate-limit N packets|bytes [remark DSCP] | remark DSCP. Components:
    /// protocol, port, destination-port, source-port, icmp-type, icmp-code, tcp-flags,
    /// packet-length, dscp, fragment; OPS like >=1024&<=2048|=53, or =syn+ack|!rst. Lasts
    /// until the daemon stops; put permanent rules in the config's [[flow]].
    Add {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// Delete a rule added with `flow add` (the same words).
    Del {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// The rules in the order they are checked, where each comes from, and what each
    /// matched and dropped.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn flow(socket: &std::path::Path, command: FlowCommand) -> anyhow::Result<()> {
    let rule =
        |words: &[String]| FlowRule::parse(words).map_err(|err| anyhow::anyhow!("flow: {err}"));
    match command {
        FlowCommand::Add { rule: words } => done(api::request(
            socket,
            &Request::FlowAdd {
                rule: rule(&words)?,
            },
        )?),
        FlowCommand::Del { rule: words } => done(api::request(
            socket,
            &Request::FlowDel {
                rule: rule(&words)?,
            },
        )?),
        FlowCommand::List { json } => match api::request(socket, &Request::FlowList)? {
            Reply::Flows { rules } if json => {
                println!("{}", serde_json::to_string_pretty(&rules)?);
                Ok(())
            }
            Reply::Flows { rules } => {
                let mut rows = vec![
                    ["ID", "RULE", "FROM", "MATCHED", "BYTES", "DROPPED", "BYTES"]
                        .map(str::to_owned),
                ];
                for info in &rules {
                    rows.push([
                        info.id.to_string(),
                        info.rule.to_string(),
                        info.origin.name(),
                        info.matched_packets.to_string(),
                        info.matched_bytes.to_string(),
                        info.dropped_packets.to_string(),
                        info.dropped_bytes.to_string(),
                    ]);
                }
                print!("{}", table(&rows));
                Ok(())
            }
            other => unexpected(other),
        },
    }
}
