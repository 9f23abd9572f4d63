//! The systemd notify protocol (`Type=notify`): READY=1 once forwarding, STATUS= as the
//! daemon starts, RELOADING=1 and READY=1 around a reload, STOPPING=1, and WATCHDOG=1 when
//! the unit sets `WatchdogSec`. Without `$NOTIFY_SOCKET` (not run by systemd) each is a no-op.

use std::time::Duration;

use log::debug;
use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        debug!("systemd notify: {err}");
    }
}

pub(super) fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

pub(super) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Before a reload. The monotonic time is what systemd 253 and later require with it.
pub(super) fn reloading() {
    let now = NotifyState::monotonic_usec_now().ok();
    let mut states = vec![NotifyState::Reloading];
    states.extend(now);
    notify(&states);
}

pub(super) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to tell the watchdog we live: half its timeout, when the unit has one. As
/// sd_watchdog_enabled(3) reads it: `$WATCHDOG_USEC`, for this process unless
/// `$WATCHDOG_PID` names another (the crate's own check also wants the PID set).
pub(super) fn watchdog_every() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

pub(super) fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}
