//! `ralphd status`: reads the home's state files (and the repo's saved
//! attempts) and prints what the daemon is doing, or did last, as text or
//! `--json`. Output goes to stdout; it works while a daemon runs and after
//! it died, and never writes anything.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::state::{self, HomePaths, InstanceLock, OnCorrupt, Progress, StatusFile};

/// How many recent cycles `status` lists.
const RECENT_CYCLES: usize = 10;

/// A running daemon rewrites its heartbeat every 10 s at the most; one older
/// than this means its runtime is wedged.
const STALE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the heartbeat (RFC 3339) is recent; `None` when it cannot be read.
fn heartbeat_is_fresh(heartbeat_at: &str, now: jiff::Timestamp) -> Option<bool> {
    let at: jiff::Timestamp = heartbeat_at.parse().ok()?;
    let age = now.duration_since(at);
    Some(age < jiff::SignedDuration::try_from(STALE_HEARTBEAT).ok()?)
}

/// Collects everything `status` shows into one JSON value (also the `--json` output).
pub(crate) fn collect(home: &Path) -> Result<Value> {
    let paths = HomePaths::new(home);
    let running = InstanceLock::is_held(&paths);
    let status: Option<StatusFile> = state::load_json(&paths.status(), OnCorrupt::Refuse, "")?;
    let progress: Option<Progress> = state::load_json(&paths.progress(), OnCorrupt::Refuse, "")?;
    let breaker: Option<Value> = state::load_json(&paths.breaker(), OnCorrupt::Refuse, "")?;
    // The repo may be gone or unreadable: say so rather than "no attempts".
    let (attempts, attempts_error) = match &status {
        None => (Vec::new(), None),
        Some(status) => match crate::git::GitRepo::open(Path::new(&status.repo))
            .and_then(|repo| repo.list_attempts())
        {
            Ok(attempts) => (attempts, None),
            Err(error) => (Vec::new(), Some(error.to_string())),
        },
    };
    let cycles: Vec<Value> = progress
        .as_ref()
        .map(|progress| {
            let start = progress.cycles.len().saturating_sub(RECENT_CYCLES);
            progress.cycles[start..]
                .iter()
                .map(|record| {
                    json!({"cycle": record.cycle, "outcome": record.outcome.name(), "cost_usd": record.cost_usd,
                        "commit": record.commit, "attempt_ref": record.attempt_ref, "title": record.title,
                        "ended_at": record.ended_at, "error": record.error, "reason": record.reason,
                        "verdict": record.verdict})
                })
                .collect()
        })
        .unwrap_or_default();
    let heartbeat_fresh = status
        .as_ref()
        .and_then(|status| heartbeat_is_fresh(&status.heartbeat_at, jiff::Timestamp::now()));
    Ok(json!({
        "running": running,
        "heartbeat_fresh": running.then_some(heartbeat_fresh).flatten(),
        // Lossy: a home path need not be UTF-8, JSON strings must be.
        "home": home.display().to_string(),
        "status": status,
        "branch": progress.as_ref().map(|p| p.branch.clone()),
        "total_cost_usd": progress.as_ref().map_or(0.0, |p| p.total_cost_usd),
        "cycles": cycles,
        "breaker": breaker,
        "attempts": attempts.iter().map(|a| json!({"ref": a.cycle_ref, "summary": a.summary})).collect::<Vec<_>>(),
        "attempts_error": attempts_error,
    }))
}

/// Renders the collected status as text for humans.
pub(crate) fn render_text(value: &Value) -> String {
    let mut out = String::new();
    let status = value.get("status").filter(|s| !s.is_null());
    let running = value["running"].as_bool().unwrap_or(false);
    match status {
        None => out.push_str(&format!(
            "ralphd has never run with home {} (no state/status.json)\n",
            value["home"].as_str().unwrap_or("?")
        )),
        Some(status) => {
            let pid = status["pid"].as_u64().unwrap_or(0);
            if running {
                out.push_str(&format!(
                    "ralphd is running (pid {pid}), started {}\n",
                    text(status, "started_at")
                ));
                if value["heartbeat_fresh"] == false {
                    out.push_str(&format!(
                        "warning: its last heartbeat was at {}: it may be hung (stop it with kill -TERM {pid})\n",
                        text(status, "heartbeat_at")
                    ));
                }
            } else {
                out.push_str(&format!(
                    "ralphd is not running (last pid {pid}, last heartbeat {}; {})\n",
                    text(status, "heartbeat_at"),
                    status["exit"]
                        .as_str()
                        .unwrap_or("it did not record an exit: it was killed or crashed")
                ));
            }
            out.push_str(&format!(
                "repo:    {} (branch {})\n",
                text(status, "repo"),
                text(status, "branch")
            ));
            if running {
                if let Some(cycle) = status["cycle"].as_u64() {
                    let phase = status["phase"].as_str().unwrap_or("between phases");
                    out.push_str(&format!("doing:   cycle {cycle}, {phase}"));
                    if let Some(since) = status["phase_started_at"].as_str() {
                        out.push_str(&format!(" since {since}"));
                    }
                    out.push('\n');
                }
                if let Some(waiting) = status.get("waiting").filter(|w| !w.is_null()) {
                    out.push_str(&format!(
                        "waiting: {} until {}\n",
                        text(waiting, "reason"),
                        text(waiting, "until")
                    ));
                }
            }
            out.push_str(&format!(
                "breaker: {}\n",
                status["breaker"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .unwrap_or("closed")
            ));
            let spent = value["total_cost_usd"].as_f64().unwrap_or(0.0);
            match status["max_cost_usd"].as_f64() {
                Some(max) => out.push_str(&format!("budget:  ${spent:.2} spent of ${max:.2}\n")),
                None => out.push_str(&format!("budget:  ${spent:.2} spent (no max_cost_usd)\n")),
            }
            if let Some(error) = status["last_error"].as_str() {
                out.push_str(&format!("last error: {error}\n"));
            }
        }
    }
    let cycles = value["cycles"].as_array().cloned().unwrap_or_default();
    if !cycles.is_empty() {
        out.push_str("\nlast cycles:\n");
        for cycle in &cycles {
            let commit = cycle["commit"]
                .as_str()
                .map(|c| c.chars().take(10).collect::<String>());
            let reference = commit
                .or_else(|| cycle["attempt_ref"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "-".to_owned());
            out.push_str(&format!(
                "  #{:<4} {:<12} ${:<8.4} {:<24} {}\n",
                cycle["cycle"].as_u64().unwrap_or(0),
                cycle["outcome"].as_str().unwrap_or("?"),
                cycle["cost_usd"].as_f64().unwrap_or(0.0),
                reference,
                cycle["title"]
                    .as_str()
                    .unwrap_or("(no title: failed before idea)")
            ));
            if let Some(reason) = cycle["reason"].as_str().or(cycle["error"].as_str()) {
                out.push_str(&format!("        why: {reason}\n"));
            }
        }
    }
    if let Some(error) = value["attempts_error"].as_str() {
        out.push_str(&format!("\nsaved attempts: cannot list them: {error}\n"));
    }
    let attempts = value["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        out.push_str("\nsaved attempts (inspect: git show <ref>; reuse: git cherry-pick <ref>):\n");
        for attempt in &attempts {
            out.push_str(&format!(
                "  {}  {}\n",
                text(attempt, "ref"),
                text(attempt, "summary")
            ));
        }
    }
    out
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_older_than_a_minute_is_stale() {
        let now: jiff::Timestamp = "2026-11-25T04:00:00Z".parse().unwrap();
        assert_eq!(heartbeat_is_fresh("2026-11-25T03:59:50Z", now), Some(true));
        assert_eq!(heartbeat_is_fresh("2026-11-25T03:58:00Z", now), Some(false));
        assert_eq!(heartbeat_is_fresh("garbage", now), None);
    }

    #[test]
    fn a_stale_heartbeat_of_a_running_daemon_is_a_warning() {
        let value = json!({"running": true, "heartbeat_fresh": false, "home": "/h",
            "status": {"pid": 42, "started_at": "s", "heartbeat_at": "2026-11-25T03:00:00Z", "repo": "/r", "branch": "main"},
            "total_cost_usd": 0.0, "cycles": [], "attempts": []});
        let text = render_text(&value);
        assert!(text.contains("may be hung"), "{text}");
        let fresh = json!({"running": true, "heartbeat_fresh": true, "home": "/h",
            "status": {"pid": 42, "started_at": "s", "heartbeat_at": "t", "repo": "/r", "branch": "main"},
            "total_cost_usd": 0.0, "cycles": [], "attempts": []});
        assert!(!render_text(&fresh).contains("may be hung"));
    }
}
