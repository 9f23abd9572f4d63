//! `pop-dataplane top`: the daemon's traffic estimates from the samples, redrawn every
//! second in the terminal (ratatui), or as JSON lines.

use std::time::{Duration, Instant};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Row, Table},
};

use super::reply::unexpected;
use crate::{
    api::{self, Reply, Request},
    observe::top::{TopRow, TopSnapshot},
};

const EVERY: Duration = Duration::from_secs(1);

fn snapshot(socket: &std::path::Path, limit: usize) -> anyhow::Result<TopSnapshot> {
    match api::request(socket, &Request::Top { limit })? {
        Reply::Top { top } => Ok(top),
        other => unexpected(other).map(|()| TopSnapshot::default()),
    }
}

/// `count`: snapshots to show before exiting (`None`: until interrupted, or `q`).
pub(super) fn top(
    socket: &std::path::Path,
    json: bool,
    count: Option<u64>,
    limit: usize,
) -> anyhow::Result<()> {
    if json {
        let mut shown = 0;
        loop {
            let top = snapshot(socket, limit)?;
            println!("{}", serde_json::to_string(&top)?);
            shown += 1;
            if count.is_some_and(|count| shown >= count) {
                return Ok(());
            }
            std::thread::sleep(EVERY);
        }
    }
    // Fails before the terminal is taken over when no daemon answers.
    let mut top = snapshot(socket, limit)?;
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut shown = 0;
        loop {
            terminal.draw(|frame| draw(frame, &top))?;
            shown += 1;
            if count.is_some_and(|count| shown >= count) {
                return Ok(());
            }
            let next = Instant::now() + EVERY;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if event::poll(left)?
                    && let Event::Key(key) = event::read()?
                {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            }
            top = snapshot(socket, limit)?;
        }
    })();
    ratatui::restore();
    result
}

fn draw(frame: &mut ratatui::Frame<'_>, top: &TopSnapshot) {
    let [title, upper, lower] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(50),
        Constraint::Percentage(50),
    ])
    .areas(frame.area());
    frame.render_widget(
        Line::from(format!(
            "pop-dataplane top: {} samples over {:.0} s, estimated rates (q to quit)",
            top.samples, top.window_seconds
        )),
        title,
    );
    let [a, b] = Layout::horizontal([Constraint::Percentage(50); 2]).areas(upper);
    let [c, d] = Layout::horizontal([Constraint::Percentage(50); 2]).areas(lower);
    for (area, name, rows) in [
        (a, "destination prefix", &top.destinations),
        (b, "source prefix", &top.sources),
        (c, "next hop", &top.nexthops),
        (d, "protocol", &top.protocols),
    ] {
        frame.render_widget(table(name, rows), area);
    }
}

fn table<'a>(name: &'a str, rows: &'a [TopRow]) -> Table<'a> {
    let rows = rows.iter().map(|row| {
        Row::new([
            row.key.clone(),
            si(row.bits_per_second, "bit/s"),
            si(row.packets_per_second, "pkt/s"),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(14),
            Constraint::Length(14),
        ],
    )
    .header(
        Row::new([name.to_uppercase(), "RATE".into(), "PACKETS".into()])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::new().borders(Borders::ALL).title(name))
}

fn si(value: f64, unit: &str) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2} G{unit}", v / 1e9),
        v if v >= 1e6 => format!("{:.2} M{unit}", v / 1e6),
        v if v >= 1e3 => format!("{:.1} k{unit}", v / 1e3),
        v => format!("{v:.0} {unit}"),
    }
}
