//! `pop-dataplane acl`: the source filter's deny rules.

use clap::Subcommand;

use super::reply::{done, table, unexpected};
use crate::{
    api::{self, Reply, Request},
    config::DenyRule,
};

#[derive(Subcommand)]
pub(super) enum AclCommand {
    /// Drop (and count) packets from a source prefix: deny src PREFIX [dev IFACE]. Without
    /// dev, on every routed interface. Lasts until the daemon stops; put permanent rules in
    /// the config's [[acl]].
    Add {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// Delete a rule added with `acl add`: deny src PREFIX [dev IFACE].
    Del {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        rule: Vec<String>,
    },
    /// The rules, where each comes from, and what each dropped.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn acl(socket: &std::path::Path, command: AclCommand) -> anyhow::Result<()> {
    let rule =
        |words: &[String]| DenyRule::parse(words).map_err(|err| anyhow::anyhow!("acl: {err}"));
    match command {
        AclCommand::Add { rule: words } => done(api::request(
            socket,
            &Request::AclAdd {
                rule: rule(&words)?,
            },
        )?),
        AclCommand::Del { rule: words } => done(api::request(
            socket,
            &Request::AclDel {
                rule: rule(&words)?,
            },
        )?),
        AclCommand::List { json } => match api::request(socket, &Request::AclList)? {
            Reply::Acl { rules } if json => {
                println!("{}", serde_json::to_string_pretty(&rules)?);
                Ok(())
            }
            Reply::Acl { rules } => {
                let mut rows = vec![[
                    "ID".to_owned(),
                    "RULE".to_owned(),
                    "FROM".to_owned(),
                    "PACKETS".to_owned(),
                    "BYTES".to_owned(),
                ]];
                for info in &rules {
                    rows.push([
                        info.id.to_string(),
                        info.rule.to_string(),
                        info.origin.name().to_owned(),
                        info.packets.to_string(),
                        info.bytes.to_string(),
                    ]);
                }
                print!("{}", table(&rows));
                Ok(())
            }
            other => unexpected(other),
        },
    }
}
