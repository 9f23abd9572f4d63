//! The control socket: a Unix socket (mode 0600, or 0660 for a configured group) taking one
//! JSON request per connection and answering with progress lines, then the reply. Requests
//! go to the daemon's loop, one at a time.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::debug;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::api::{MAX_REQUEST, Reply, Request};

/// Accepts control connections and passes their requests to the daemon's loop.
pub(super) async fn accept_loop(
    listener: UnixListener,
    requests: mpsc::Sender<(Request, Responder)>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_connection(stream, requests).await {
                debug!("control connection: {err:#}");
            }
        });
    }
}

/// Where the answer to a control request goes, and its progress reports before it.
pub(super) struct Responder {
    pub(super) reply: oneshot::Sender<Reply>,
    pub(super) progress: mpsc::UnboundedSender<Reply>,
}

/// Progress of a long request, reported to its client as it goes: at most every 100 ms, so
/// that reporting costs nothing next to the work.
pub(super) struct Progress {
    to: Option<mpsc::UnboundedSender<Reply>>,
    last: Option<Instant>,
}

impl Progress {
    pub(super) fn to(sender: mpsc::UnboundedSender<Reply>) -> Self {
        Self {
            to: Some(sender),
            last: None,
        }
    }

    /// `done` of `total` in `phase`.
    pub(super) fn report(&mut self, phase: &str, done: usize, total: usize) {
        let Some(to) = &self.to else {
            return;
        };
        if self
            .last
            .is_some_and(|last| last.elapsed() < Duration::from_millis(100))
            && done < total
        {
            return;
        }
        self.last = Some(Instant::now());
        let _ = to.send(Reply::Progress {
            phase: phase.to_owned(),
            done: done as u64,
            total: total as u64,
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    requests: mpsc::Sender<(Request, Responder)>,
) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader).take(MAX_REQUEST as u64);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => {
            let (reply, mut answer) = oneshot::channel();
            let (progress, mut reports) = mpsc::unbounded_channel();
            requests
                .send((request, Responder { reply, progress }))
                .await
                .context("the daemon is stopping")?;
            loop {
                tokio::select! {
                    Some(report) = reports.recv() => write_line(&mut writer, &report).await?,
                    answer = &mut answer => break answer.context("the daemon is stopping")?,
                }
            }
        }
        Err(err) if line.len() >= MAX_REQUEST => Reply::Error {
            message: format!("request larger than {MAX_REQUEST} bytes: {err}"),
        },
        Err(err) => Reply::Error {
            message: format!("malformed request: {err}"),
        },
    };
    write_line(&mut writer, &reply).await
}

async fn write_line(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec(reply)?;
    text.push(b'\n');
    writer.write_all(&text).await?;
    Ok(())
}

/// The control socket: mode 0600 (0660 owned by the control group, if one is configured).
pub(super) fn bind_control_socket(
    path: &Path,
    group: Option<&str>,
) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a daemon that died: the instance lock says none runs now.
    let _ = fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    let mode = match group {
        None => 0o600,
        Some(group) => {
            let gid = group_id(group).with_context(|| format!("control group {group:?}"))?;
            let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: chown on a path we just created.
            if unsafe { libc::chown(c_path.as_ptr(), 0, gid) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("chown {}", path.display()));
            }
            0o660
        }
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

fn group_id(name: &str) -> anyhow::Result<u32> {
    let groups = fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(name))
                .then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))
                .flatten()
        })
        .with_context(|| format!("no group {name:?} in /etc/group"))
}
