//! `pop-dataplane flowspec-feed`: run by ExaBGP as an API process (`encoder json`), it reads
//! ExaBGP's messages on stdin and keeps the daemon's FlowSpec rules equal to what each BGP
//! session has announced: a withdrawal removes a rule, a session going down (or ExaBGP
//! stopping) removes all of that session's.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, Write as _},
    path::Path,
};

use crate::{
    api::{self, Reply, Request},
    config::{
        flow_rule::FlowRule,
        flowspec_feed::{FeedEvent, parse_line},
    },
};

/// Each session's accepted routes, by ExaBGP's key.
type Sessions = BTreeMap<String, BTreeMap<String, FlowRule>>;

pub(super) fn flowspec_feed(socket: &Path) -> anyhow::Result<()> {
    let mut sessions = Sessions::new();
    // Sessions whose rules the daemon has not taken yet (changed since, or refused).
    let mut unsent: Vec<String> = Vec::new();
    // Read through a buffer of our own (not Stdin's), so that `buffer()` tells what was
    // read ahead.
    // SAFETY: fd 0 is stdin, open for the life of the process and used by nothing else.
    let mut stdin = std::io::BufReader::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(0)
    });
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        if !line.trim().is_empty() {
            match parse_line(line.trim_end()) {
                Ok(event) => {
                    if let Some(session) = apply(&mut sessions, event)
                        && !unsent.contains(&session)
                    {
                        unsent.push(session);
                    }
                }
                Err(err) => log(&format!("ignored a line: {err}")),
            }
        }
        // A burst of UPDATEs (a session coming up with thousands of routes) is handed over
        // once it has all been read: each hand-over recompiles the rules.
        if stdin.buffer().is_empty() && !input_waiting() {
            unsent.retain(|session| !sync(socket, session, &sessions));
        }
    }
    // ExaBGP stopped: its sessions are gone.
    for routes in sessions.values_mut() {
        routes.clear();
    }
    for session in sessions.keys() {
        sync(socket, session, &sessions);
    }
    Ok(())
}

/// Applies `event`; the session whose rules changed.
fn apply(sessions: &mut Sessions, event: FeedEvent) -> Option<String> {
    match event {
        FeedEvent::Up { session } => {
            sessions.entry(session.clone()).or_default();
            Some(session)
        }
        FeedEvent::Down { session } => {
            sessions.insert(session.clone(), BTreeMap::new());
            Some(session)
        }
        FeedEvent::Announce { session, routes } => {
            let held = sessions.entry(session.clone()).or_default();
            for (key, rule) in routes {
                match rule {
                    Ok(rule) => {
                        held.insert(key, rule);
                    }
                    Err(err) => {
                        // A route refused replaces nothing it does not name.
                        held.remove(&key);
                        log(&format!("session {session}: refused {key:?}: {err}"));
                    }
                }
            }
            Some(session)
        }
        FeedEvent::Withdraw { session, keys } => {
            let held = sessions.entry(session.clone()).or_default();
            for key in keys {
                held.remove(&key);
            }
            Some(session)
        }
        FeedEvent::Other => None,
    }
}

/// Hands `session`'s rules to the daemon; whether it took them.
fn sync(socket: &Path, session: &str, sessions: &Sessions) -> bool {
    let rules: Vec<FlowRule> = sessions
        .get(session)
        .map(|routes| routes.values().cloned().collect())
        .unwrap_or_default();
    let count = rules.len();
    match api::request(
        socket,
        &Request::FlowSync {
            session: session.to_owned(),
            rules,
        },
    ) {
        Ok(Reply::Done { .. }) => {
            log(&format!(
                "session {session}: {count} rules in the dataplane"
            ));
            true
        }
        Ok(Reply::Error { message }) => {
            log(&format!(
                "session {session}: the daemon refused the rules: {message}"
            ));
            false
        }
        Ok(other) => {
            log(&format!("session {session}: unexpected reply {other:?}"));
            false
        }
        Err(err) => {
            log(&format!("session {session}: {err:#}"));
            false
        }
    }
}

/// Whether more of stdin can be read at once.
fn input_waiting() -> bool {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, ours, for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, 0) > 0 }
}

/// To stderr, which ExaBGP logs.
fn log(message: &str) {
    let _ = writeln!(std::io::stderr(), "flowspec-feed: {message}");
}
