//! `ralphd watch`: follows a home's `state/events.jsonl` in the terminal,
//! one readable line per event (`12:03:41 cycle 12 · code-edit · Edit
//! src/parse.rs`), and prints a status line from status.json whenever it
//! changes. It needs no HTTP server and no running daemon: it shows the
//! last events, then waits for more, following the log across rotation.
//! [`event_line`] and [`status_line`] are the pure formatting.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use jiff::tz::TimeZone;

use crate::events::{self, Event, EventKind};
use crate::state::{self, DaemonState, HomePaths, InstanceLock, OnCorrupt, StatusFile};

/// How many past events `watch` shows first.
const RECENT: usize = 20;
/// How often the log and status.json are looked at.
const POLL: Duration = Duration::from_millis(250);
/// How much of an agent's text one line shows.
const TEXT_CHARS: usize = 120;

/// Runs `ralphd watch` until Ctrl-C (or until stdout closes).
pub(crate) fn watch(home: &Path) -> Result<()> {
    match follow(home) {
        Err(error)
            if error
                .downcast_ref::<io::Error>()
                .is_some_and(|error| error.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn follow(home: &Path) -> Result<()> {
    let paths = HomePaths::new(home);
    let log = paths.events();
    let tz = TimeZone::system();
    let mut out = io::stdout().lock();
    // Open the tail first: an event written meanwhile is then read twice
    // (and shown once), never missed.
    let mut tail = Tail::at_end(&log);
    let recent = events::read_after(&log, 0, RECENT)?;
    let mut shown = 0;
    if recent.is_empty() {
        writeln!(
            out,
            "no events yet in {}; waiting for them (Ctrl-C ends)",
            log.display()
        )?;
    }
    for event in &recent {
        writeln!(out, "{}", event_line(event, &tz))?;
        shown = event.id;
    }
    let mut last_status = String::new();
    loop {
        for event in tail.read_new()? {
            if event.id > shown {
                writeln!(out, "{}", event_line(&event, &tz))?;
                shown = event.id;
            }
        }
        let status: Option<StatusFile> =
            state::load_json(&paths.status(), OnCorrupt::Refuse, "").unwrap_or(None);
        let line = status_line(status.as_ref(), InstanceLock::is_held(&paths), &tz);
        if line != last_status {
            writeln!(out, "{line}")?;
            last_status = line;
        }
        out.flush()?;
        std::thread::sleep(POLL);
    }
}

/// The growing end of the event log: what was appended since the last
/// read, across a rotation (`events.jsonl` renamed to `events.1.jsonl`).
struct Tail {
    path: PathBuf,
    /// The open log and its inode; `None` until the log exists.
    file: Option<(File, u64)>,
    /// A line not yet complete.
    partial: Vec<u8>,
}

impl Tail {
    fn at_end(path: &Path) -> Tail {
        let mut tail = Tail {
            path: path.to_owned(),
            file: None,
            partial: Vec::new(),
        };
        if let Some((mut file, inode)) = open_with_inode(path) {
            // At the end: what is there is read by the first look back.
            if file.seek(SeekFrom::End(0)).is_ok() {
                tail.file = Some((file, inode));
            }
        }
        tail
    }

    /// The events appended since the last call, oldest first.
    fn read_new(&mut self) -> Result<Vec<Event>> {
        let mut bytes = Vec::new();
        if self.file.is_none() {
            self.file = open_with_inode(&self.path);
        }
        if let Some((file, inode)) = &mut self.file {
            file.read_to_end(&mut bytes)?;
            let now = std::fs::metadata(&self.path).ok();
            use std::os::unix::fs::MetadataExt;
            let rotated = now.as_ref().is_some_and(|meta| meta.ino() != *inode);
            let truncated = now.as_ref().is_some_and(|meta| {
                meta.ino() == *inode && meta.len() < file.stream_position().unwrap_or(0)
            });
            if rotated || truncated {
                // The old file is read to its end above; go on with the new one.
                self.file = open_with_inode(&self.path);
                if let Some((file, _)) = &mut self.file {
                    self.partial.extend_from_slice(&bytes);
                    bytes = std::mem::take(&mut self.partial);
                    if !bytes.ends_with(b"\n") && !bytes.is_empty() {
                        bytes.push(b'\n');
                    }
                    file.read_to_end(&mut bytes)?;
                    return Ok(self.complete_lines(bytes));
                }
            }
        }
        let mut all = std::mem::take(&mut self.partial);
        all.extend_from_slice(&bytes);
        Ok(self.complete_lines(all))
    }

    /// Parses the complete lines of `bytes`; keeps the last, unfinished one.
    fn complete_lines(&mut self, mut bytes: Vec<u8>) -> Vec<Event> {
        let end = bytes
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| at + 1);
        self.partial = bytes.split_off(end);
        bytes
            .split(|byte| *byte == b'\n')
            .filter_map(|line| serde_json::from_slice::<Event>(line).ok())
            .collect()
    }
}

fn open_with_inode(path: &Path) -> Option<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let file = File::open(path).ok()?;
    let inode = file.metadata().ok()?.ino();
    Some((file, inode))
}

/// `12:03:41` in the local time zone; the text itself when it is no time.
fn clock(at: &str, tz: &TimeZone) -> String {
    at.parse::<jiff::Timestamp>()
        .map(|ts| ts.to_zoned(tz.clone()).strftime("%H:%M:%S").to_string())
        .unwrap_or_else(|_| at.to_owned())
}

/// `350ms`, `12.3s`, `3m 02s`, `1h 05m`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// One event as one line: its local time, then what happened.
pub(crate) fn event_line(event: &Event, tz: &TimeZone) -> String {
    let what = match &event.kind {
        EventKind::DaemonStarted {
            pid,
            version,
            repo,
            branch,
            dashboard,
        } => {
            let page = dashboard
                .as_deref()
                .map(|url| format!(" · {url}"))
                .unwrap_or_default();
            format!("ralphd {version} started (pid {pid}) on {branch} of {repo}{page}")
        }
        EventKind::CycleStarted { cycle } => format!("cycle {cycle} started"),
        EventKind::PhaseStarted {
            cycle,
            phase,
            attempt,
        } => match attempt {
            1 => format!("cycle {cycle} · {phase} started"),
            _ => format!("cycle {cycle} · {phase} started (try {attempt})"),
        },
        EventKind::AgentText { cycle, phase, text } => {
            let first = text
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            let more = if first.chars().count() > TEXT_CHARS || text.trim().lines().nth(1).is_some()
            {
                "…"
            } else {
                ""
            };
            format!(
                "cycle {cycle} · {phase} · \"{}{more}\"",
                crate::text::head_chars(first.trim(), TEXT_CHARS)
            )
        }
        EventKind::ToolUse {
            cycle,
            phase,
            tool,
            summary,
        } => format!("cycle {cycle} · {phase} · {tool} {summary}")
            .trim_end()
            .to_owned(),
        EventKind::PhaseFinished {
            cycle,
            phase,
            status,
            duration_ms,
            cost_usd,
            error,
            ..
        } => {
            let error = error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            format!(
                "cycle {cycle} · {phase} {status} in {}, ${cost_usd:.2}{error}",
                duration(*duration_ms)
            )
        }
        EventKind::CheckFinished {
            cycle,
            command,
            exit,
            passed,
            duration_ms,
        } => {
            let verdict = match (passed, exit) {
                (true, _) => "passed".to_owned(),
                (false, Some(code)) => format!("failed (exit {code})"),
                (false, None) => "failed (no exit code: timed out or killed)".to_owned(),
            };
            format!(
                "cycle {cycle} · check {verdict} in {}: {command}",
                duration(*duration_ms)
            )
        }
        EventKind::CycleFinished {
            cycle,
            outcome,
            title,
            reason,
            commit,
            attempt_ref,
            cost_usd,
            duration_ms,
        } => {
            let mut line = format!("cycle {cycle} {}", outcome.name());
            if let Some(title) = title {
                line.push_str(&format!(": {title}"));
            }
            if let Some(reference) = commit
                .as_deref()
                .map(|sha| crate::text::head_chars(sha, 10))
                .or(attempt_ref.as_deref())
            {
                line.push_str(&format!(" · {reference}"));
            }
            line.push_str(&format!(" · ${cost_usd:.2} in {}", duration(*duration_ms)));
            if let Some(reason) = reason {
                line.push_str(&format!(" — {reason}"));
            }
            line
        }
        EventKind::Waiting {
            reason,
            detail,
            until,
        } => {
            let until = if until.is_empty() {
                String::new()
            } else {
                format!(" until {}", clock(until, tz))
            };
            format!("waiting ({}){until}: {detail}", reason.name())
        }
        EventKind::BreakerChanged { state, detail } => {
            format!("circuit breaker {state}: {detail}")
        }
        EventKind::Paused {} => {
            "paused: no new phase run starts (resume with `ralphd resume`)".to_owned()
        }
        EventKind::Resumed {} => "resumed".to_owned(),
        EventKind::StopRequested {} => "stop requested: the run ends after this cycle".to_owned(),
        EventKind::Stalled {
            since,
            cycles_without_commit,
            cost_usd,
        } => format!(
            "stalled: no commit since {} — {cycles_without_commit} cycles, ${cost_usd:.2}",
            clock(since, tz)
        ),
        EventKind::DaemonStopped { reason, .. } => format!("ralphd stopped: {reason}"),
    };
    format!("{} {what}", clock(&event.at, tz))
}

/// The status line: what the daemon does now, and the money spent.
pub(crate) fn status_line(status: Option<&StatusFile>, running: bool, tz: &TimeZone) -> String {
    let Some(status) = status else {
        return "── no daemon has run on this home yet".to_owned();
    };
    if !running {
        let why = status
            .exit
            .as_deref()
            .unwrap_or("it did not record an exit: killed or crashed");
        return format!("── ralphd is not running ({why})");
    }
    let mut parts = vec![match status.state {
        DaemonState::Starting => "starting".to_owned(),
        DaemonState::Running => "running".to_owned(),
        DaemonState::Waiting => "waiting".to_owned(),
        DaemonState::Stopped => "stopping".to_owned(),
    }];
    if let Some(cycle) = status.cycle {
        parts.push(format!("cycle {cycle}"));
    }
    if let Some(phase) = &status.phase {
        match &status.phase_started_at {
            Some(since) => parts.push(format!("{phase} since {}", clock(since, tz))),
            None => parts.push(phase.clone()),
        }
    }
    if let Some(waiting) = &status.waiting {
        match waiting.until.as_str() {
            "" => parts.push(waiting.reason.clone()),
            until => parts.push(format!("{} until {}", waiting.reason, clock(until, tz))),
        }
    }
    parts.push(match status.max_cost_usd {
        Some(max) => format!("${:.2} of ${max:.2}", status.spent_usd),
        None => format!("${:.2} spent", status.spent_usd),
    });
    format!("── {}", parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::WaitReason;
    use crate::state::{Outcome, Waiting};

    fn at(kind: EventKind) -> Event {
        Event {
            id: 1,
            at: "2026-12-01T12:03:41.250Z".to_owned(),
            kind,
        }
    }

    fn cp(cycle: u64, phase: &str) -> (u64, String) {
        (cycle, phase.to_owned())
    }

    #[test]
    fn each_event_reads_as_one_line_in_local_time() {
        let tz = TimeZone::fixed(jiff::tz::offset(1));
        let (cycle, phase) = cp(12, "code-edit");
        let events = [
            EventKind::DaemonStarted {
                pid: 4242,
                version: "0.1.0".to_owned(),
                repo: "/src/app".to_owned(),
                branch: "main".to_owned(),
                dashboard: Some("http://127.0.0.1:41234/".to_owned()),
            },
            EventKind::CycleStarted { cycle },
            EventKind::PhaseStarted {
                cycle,
                phase: phase.clone(),
                attempt: 1,
            },
            EventKind::PhaseStarted {
                cycle,
                phase: phase.clone(),
                attempt: 2,
            },
            EventKind::AgentText {
                cycle,
                phase: phase.clone(),
                text: "Editing the parser.\nThen the tests.".to_owned(),
            },
            EventKind::ToolUse {
                cycle,
                phase: phase.clone(),
                tool: "Edit".to_owned(),
                summary: "src/parse.rs".to_owned(),
            },
            EventKind::PhaseFinished {
                cycle,
                phase: phase.clone(),
                status: "succeeded".to_owned(),
                duration_ms: 41_300,
                cost_usd: 0.1234,
                tokens: Default::default(),
                error: None,
            },
            EventKind::PhaseFinished {
                cycle,
                phase: "scan".to_owned(),
                status: "failed".to_owned(),
                duration_ms: 950,
                cost_usd: 0.0,
                tokens: Default::default(),
                error: Some("API error 529: overloaded".to_owned()),
            },
            EventKind::CheckFinished {
                cycle,
                command: "cargo test".to_owned(),
                exit: Some(101),
                passed: false,
                duration_ms: 182_000,
            },
            EventKind::CheckFinished {
                cycle,
                command: "cargo fmt --check".to_owned(),
                exit: Some(0),
                passed: true,
                duration_ms: 1_200,
            },
            EventKind::CycleFinished {
                cycle,
                outcome: Outcome::Committed,
                title: Some("Parse dates with jiff".to_owned()),
                reason: None,
                commit: Some("0123456789abcdef".to_owned()),
                attempt_ref: None,
                cost_usd: 0.41,
                duration_ms: 3_905_000,
            },
            EventKind::CycleFinished {
                cycle: 13,
                outcome: Outcome::RolledBack,
                title: Some("Cache the index".to_owned()),
                reason: Some("a check failed: cargo test".to_owned()),
                commit: None,
                attempt_ref: Some("refs/ralph/attempts/13".to_owned()),
                cost_usd: 0.2,
                duration_ms: 61_000,
            },
            EventKind::Waiting {
                reason: WaitReason::UsageLimit,
                detail: "usage limit".to_owned(),
                until: "2026-12-01T15:00:00Z".to_owned(),
            },
            EventKind::BreakerChanged {
                state: "open".to_owned(),
                detail: "open until 2026-12-01T13:00:00Z — cycle 13: rolled_back".to_owned(),
            },
            EventKind::Paused {},
            EventKind::Resumed {},
            EventKind::StopRequested {},
            EventKind::DaemonStopped {
                exit_code: 1,
                reason: "stopped on request after the cycle (exit 1)".to_owned(),
                digest: None,
            },
        ];
        let lines: Vec<String> = events
            .into_iter()
            .map(|kind| event_line(&at(kind), &tz))
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn the_status_line_says_state_cycle_phase_wait_and_spending() {
        let tz = TimeZone::UTC;
        let running = StatusFile {
            state: DaemonState::Running,
            cycle: Some(12),
            phase: Some("code-edit".to_owned()),
            phase_started_at: Some("2026-12-01T12:03:10Z".to_owned()),
            spent_usd: 1.2,
            max_cost_usd: Some(20.0),
            ..StatusFile::default()
        };
        assert_eq!(
            status_line(Some(&running), true, &tz),
            "── running · cycle 12 · code-edit since 12:03:10 · $1.20 of $20.00"
        );
        let waiting = StatusFile {
            state: DaemonState::Waiting,
            cycle: Some(12),
            waiting: Some(Waiting {
                reason: "usage limit".to_owned(),
                until: "2026-12-01T15:00:00Z".to_owned(),
            }),
            spent_usd: 3.0,
            ..StatusFile::default()
        };
        assert_eq!(
            status_line(Some(&waiting), true, &tz),
            "── waiting · cycle 12 · usage limit until 15:00:00 · $3.00 spent"
        );
        let stopped = StatusFile {
            state: DaemonState::Stopped,
            exit: Some("reached --max-iterations (exit 1)".to_owned()),
            ..StatusFile::default()
        };
        assert_eq!(
            status_line(Some(&stopped), false, &tz),
            "── ralphd is not running (reached --max-iterations (exit 1))"
        );
        assert_eq!(
            status_line(None, false, &tz),
            "── no daemon has run on this home yet"
        );
    }

    #[test]
    fn the_tail_follows_the_log_across_a_rotation_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let line = |id: u64| {
            format!(
                "{}\n",
                serde_json::to_string(&Event {
                    id,
                    at: "2026-12-01T12:00:00Z".to_owned(),
                    kind: EventKind::CycleStarted { cycle: id },
                })
                .unwrap()
            )
        };
        let mut tail = Tail::at_end(&log);
        assert!(tail.read_new().unwrap().is_empty(), "no log yet");
        std::fs::write(&log, line(1)).unwrap();
        let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(tail.read_new().unwrap()), [1]);
        // Half a line, then its end.
        let two = line(2);
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&two.as_bytes()[..10]).unwrap();
        assert!(tail.read_new().unwrap().is_empty());
        file.write_all(&two.as_bytes()[10..]).unwrap();
        file.write_all(line(3).as_bytes()).unwrap();
        assert_eq!(ids(tail.read_new().unwrap()), [2, 3]);
        // Rotation: one more line lands in the old file, then a new log starts.
        file.write_all(line(4).as_bytes()).unwrap();
        std::fs::rename(&log, dir.path().join("events.1.jsonl")).unwrap();
        std::fs::write(&log, line(5)).unwrap();
        assert_eq!(ids(tail.read_new().unwrap()), [4, 5]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(line(6).as_bytes())
            .unwrap();
        assert_eq!(ids(tail.read_new().unwrap()), [6]);
    }
}
