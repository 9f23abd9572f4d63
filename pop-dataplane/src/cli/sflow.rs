//! `pop-dataplane sflow`: the sFlow agent's state, and sampling rates at run time.

use clap::Subcommand;

use super::reply::{done, table, unexpected};
use crate::{
    api::{self, Reply, Request},
    config::sflow::check_rate,
};

#[derive(Subcommand)]
pub(super) enum SflowCommand {
    /// The collectors, the agent address, each interface's sampling rate and lost samples,
    /// and what was sent.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Sample every interface (or `dev NAME`) 1-in-RATE; 0 stops sampling. Lasts until the
    /// next reload; put permanent rates in the config ([sflow] sampling_rate, or an
    /// interface's sampling_rate).
    Rate {
        rate: u32,
        /// `dev NAME`, as in iproute2.
        #[arg(num_args = 0..=2, value_names = ["dev", "NAME"])]
        dev: Vec<String>,
    },
}

pub(super) fn sflow(socket: &std::path::Path, command: SflowCommand) -> anyhow::Result<()> {
    match command {
        SflowCommand::Rate { rate, dev } => {
            if rate != 0 {
                check_rate(i64::from(rate)).map_err(|err| anyhow::anyhow!("sflow rate: {err}"))?;
            }
            let dev = match dev.as_slice() {
                [] => None,
                [word, name] if word == "dev" => Some(name.clone()),
                _ => anyhow::bail!("sflow rate: expected `sflow rate RATE [dev NAME]`"),
            };
            done(api::request(socket, &Request::SflowRate { rate, dev })?)
        }
        SflowCommand::Show { json } => match api::request(socket, &Request::SflowShow)? {
            Reply::Sflow { status } if json => {
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(())
            }
            Reply::Sflow { status } => {
                let collectors = if status.collectors.is_empty() {
                    "none (samples feed `top` only)".to_owned()
                } else {
                    status.collectors.join(", ")
                };
                println!("collectors:       {collectors}");
                if let Some(agent) = &status.agent_address {
                    println!("agent address:    {agent}");
                }
                println!("polling interval: {} s", status.polling_interval);
                println!(
                    "samples:          {} read; {} flow and {} counter samples sent in {} \
                     datagrams ({} bytes), {} send errors",
                    status.samples,
                    status.flow_samples_sent,
                    status.counter_samples_sent,
                    status.datagrams,
                    status.datagram_bytes,
                    status.send_errors
                );
                let mut rows = vec![["INTERFACE", "RATE", "LOST"].map(str::to_owned)];
                for interface in &status.interfaces {
                    rows.push([
                        interface.name.clone(),
                        match interface.sampling_rate {
                            0 => "off".to_owned(),
                            rate => format!("1-in-{rate}"),
                        },
                        interface.lost.to_string(),
                    ]);
                }
                print!("{}", table(&rows));
                Ok(())
            }
            other => unexpected(other),
        },
    }
}
