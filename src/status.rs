//! `ralphd status`: reads the home's state files (and the repo's saved
//! attempts) and prints what the daemon is doing, or did last, as text or
//! `--json`. Output goes to stdout; it works while a daemon runs and after
//! it died, and never writes anything.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

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

/// Everything `status` shows; serialised as is for `--json`, so the order of
/// the fields is the order of the keys that scripts read.
#[derive(Debug, Serialize)]
pub(crate) struct StatusReport {
    /// Whether a daemon holds the home's lock now.
    running: bool,
    /// Whether a running daemon's heartbeat is recent; `None` when no daemon
    /// runs or the heartbeat cannot be read.
    heartbeat_fresh: Option<bool>,
    /// Lossy: a home path need not be UTF-8, JSON strings must be.
    home: String,
    /// status.json as the daemon last wrote it; `None` when it never ran.
    status: Option<StatusFile>,
    branch: Option<String>,
    total_cost_usd: f64,
    /// The last [`RECENT_CYCLES`] cycles of progress.json, oldest first.
    cycles: Vec<RecentCycle>,
    /// breaker.json as it is on disk.
    breaker: Option<Value>,
    attempts: Vec<SavedAttempt>,
    /// Why the repository's saved attempts cannot be listed.
    attempts_error: Option<String>,
}

/// One line of "last cycles".
#[derive(Debug, Serialize)]
struct RecentCycle {
    cycle: u64,
    outcome: &'static str,
    cost_usd: f64,
    commit: Option<String>,
    attempt_ref: Option<String>,
    title: Option<String>,
    ended_at: String,
    error: Option<String>,
    /// Why the cycle ended as it did (docs/design.md §3.4).
    reason: Option<String>,
    /// The verdict and who decided it, when one was reached.
    verdict: Option<crate::record::Verdict>,
}

/// One saved attempt of the repository.
#[derive(Debug, Serialize)]
struct SavedAttempt {
    #[serde(rename = "ref")]
    reference: String,
    summary: String,
}

/// Collects everything `status` shows (also the `--json` output).
pub(crate) fn collect(home: &Path) -> Result<StatusReport> {
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
    let cycles: Vec<RecentCycle> = progress
        .as_ref()
        .map(|progress| {
            let start = progress.cycles.len().saturating_sub(RECENT_CYCLES);
            progress.cycles[start..]
                .iter()
                .map(|record| RecentCycle {
                    cycle: record.cycle,
                    outcome: record.outcome.name(),
                    cost_usd: record.cost_usd,
                    commit: record.commit.clone(),
                    attempt_ref: record.attempt_ref.clone(),
                    title: record.title.clone(),
                    ended_at: record.ended_at.clone(),
                    error: record.error.clone(),
                    reason: record.reason.clone(),
                    verdict: record.verdict.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let heartbeat_fresh = status
        .as_ref()
        .and_then(|status| heartbeat_is_fresh(&status.heartbeat_at, jiff::Timestamp::now()));
    Ok(StatusReport {
        running,
        heartbeat_fresh: running.then_some(heartbeat_fresh).flatten(),
        home: home.display().to_string(),
        branch: progress.as_ref().map(|p| p.branch.clone()),
        total_cost_usd: progress.as_ref().map_or(0.0, |p| p.total_cost_usd),
        status,
        cycles,
        breaker,
        attempts: attempts
            .into_iter()
            .map(|attempt| SavedAttempt {
                reference: attempt.cycle_ref,
                summary: attempt.summary,
            })
            .collect(),
        attempts_error,
    })
}

/// Renders the collected status as text for humans.
pub(crate) fn render_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let running = report.running;
    match &report.status {
        None => out.push_str(&format!(
            "ralphd has never run with home {} (no state/status.json)\n",
            report.home
        )),
        Some(status) => {
            let pid = status.pid;
            if running {
                out.push_str(&format!(
                    "ralphd is running (pid {pid}), started {}\n",
                    status.started_at
                ));
                if report.heartbeat_fresh == Some(false) {
                    out.push_str(&format!(
                        "warning: its last heartbeat was at {}: it may be hung (stop it with kill -TERM {pid})\n",
                        status.heartbeat_at
                    ));
                }
            } else {
                out.push_str(&format!(
                    "ralphd is not running (last pid {pid}, last heartbeat {}; {})\n",
                    status.heartbeat_at,
                    status
                        .exit
                        .as_deref()
                        .unwrap_or("it did not record an exit: it was killed or crashed")
                ));
            }
            out.push_str(&format!(
                "repo:    {} (branch {})\n",
                status.repo, status.branch
            ));
            if running && let Some(url) = &status.dashboard {
                out.push_str(&format!("dashboard: {url}\n"));
            }
            if running {
                if let Some(cycle) = status.cycle {
                    let phase = status.phase.as_deref().unwrap_or("between phases");
                    out.push_str(&format!("doing:   cycle {cycle}, {phase}"));
                    if let Some(since) = &status.phase_started_at {
                        out.push_str(&format!(" since {since}"));
                    }
                    out.push('\n');
                }
                if let Some(waiting) = &status.waiting {
                    out.push_str(&format!(
                        "waiting: {} until {}\n",
                        waiting.reason, waiting.until
                    ));
                }
            }
            out.push_str(&format!(
                "breaker: {}\n",
                Some(status.breaker.as_str())
                    .filter(|b| !b.is_empty())
                    .unwrap_or("closed")
            ));
            let spent = report.total_cost_usd;
            match status.max_cost_usd {
                Some(max) => out.push_str(&format!("budget:  ${spent:.2} spent of ${max:.2}\n")),
                None => out.push_str(&format!("budget:  ${spent:.2} spent (no max_cost_usd)\n")),
            }
            if let Some(error) = &status.last_error {
                out.push_str(&format!("last error: {error}\n"));
            }
        }
    }
    if !report.cycles.is_empty() {
        out.push_str("\nlast cycles:\n");
        for cycle in &report.cycles {
            let reference = cycle
                .commit
                .as_deref()
                .map(|commit| crate::text::head_chars(commit, 10))
                .or(cycle.attempt_ref.as_deref())
                .unwrap_or("-");
            out.push_str(&format!(
                "  #{:<4} {:<12} ${:<8.4} {:<24} {}\n",
                cycle.cycle,
                cycle.outcome,
                cycle.cost_usd,
                reference,
                cycle.title.as_deref().unwrap_or(match cycle.outcome {
                    "failed" | "interrupted" => "(no title: failed before idea)",
                    _ => "(no title)",
                })
            ));
            if let Some(reason) = cycle.reason.as_deref().or(cycle.error.as_deref()) {
                out.push_str(&format!("        why: {reason}\n"));
            }
        }
    }
    if let Some(error) = &report.attempts_error {
        out.push_str(&format!("\nsaved attempts: cannot list them: {error}\n"));
    }
    if !report.attempts.is_empty() {
        out.push_str("\nsaved attempts (inspect: git show <ref>; reuse: git cherry-pick <ref>):\n");
        for attempt in &report.attempts {
            out.push_str(&format!("  {}  {}\n", attempt.reference, attempt.summary));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_heartbeat_older_than_a_minute_is_stale() {
        let now: jiff::Timestamp = "2026-11-25T04:00:00Z".parse().unwrap();
        assert_eq!(heartbeat_is_fresh("2026-11-25T03:59:50Z", now), Some(true));
        assert_eq!(heartbeat_is_fresh("2026-11-25T03:58:00Z", now), Some(false));
        assert_eq!(heartbeat_is_fresh("garbage", now), None);
    }

    /// The report of a running daemon whose heartbeat is `fresh` or not.
    fn running_report(heartbeat_at: &str, fresh: bool) -> StatusReport {
        StatusReport {
            running: true,
            heartbeat_fresh: Some(fresh),
            home: "/h".to_owned(),
            status: Some(StatusFile {
                pid: 42,
                started_at: "s".to_owned(),
                heartbeat_at: heartbeat_at.to_owned(),
                repo: "/r".to_owned(),
                branch: "main".to_owned(),
                ..StatusFile::default()
            }),
            branch: None,
            total_cost_usd: 0.0,
            cycles: Vec::new(),
            breaker: None,
            attempts: Vec::new(),
            attempts_error: None,
        }
    }

    #[test]
    fn a_stale_heartbeat_of_a_running_daemon_is_a_warning() {
        let text = render_text(&running_report("2026-11-25T03:00:00Z", false));
        assert!(text.contains("may be hung"), "{text}");
        assert!(!render_text(&running_report("t", true)).contains("may be hung"));
    }

    #[test]
    fn a_running_daemon_shows_its_phase_and_its_wait() {
        let mut report = running_report("h", false);
        if let Some(status) = &mut report.status {
            status.cycle = Some(7);
            status.phase = Some("backtest".to_owned());
            status.phase_started_at = Some("p".to_owned());
            status.waiting = Some(crate::state::Waiting {
                reason: "usage limit".to_owned(),
                until: "u".to_owned(),
            });
        }
        let expected = concat!(
            "ralphd is running (pid 42), started s\n",
            "warning: its last heartbeat was at h: it may be hung (stop it with kill -TERM 42)\n",
            "repo:    /r (branch main)\n",
            "doing:   cycle 7, backtest since p\n",
            "waiting: usage limit until u\n",
            "breaker: closed\n",
            "budget:  $0.00 spent (no max_cost_usd)\n",
        );
        assert_eq!(render_text(&report), expected);
    }

    /// A home with every state file `status` reads and a repository with one
    /// saved attempt; returns the home's and the repository's directories.
    fn full_home() -> (tempfile::TempDir, tempfile::TempDir) {
        let home = tempfile::tempdir().unwrap();
        let repo_dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(repo_dir.path()).unwrap();
        let signature = git2::Signature::new("t", "t@example.com", &git2::Time::new(0, 0)).unwrap();
        let tree = repo
            .find_tree(repo.index().unwrap().write_tree().unwrap())
            .unwrap();
        let commit = repo
            .commit(
                None,
                &signature,
                &signature,
                "try a cache\n\nbody",
                &tree,
                &[],
            )
            .unwrap();
        repo.reference("refs/ralph/attempts/2", commit, false, "test")
            .unwrap();
        let paths = HomePaths::new(home.path());
        let repo_path = repo_dir.path().display().to_string();
        let files = [
            (
                paths.status(),
                json!({"version": 1, "pid": 4242, "started_at": "2026-11-25T03:00:00Z",
                    "heartbeat_at": "2026-11-25T04:00:00Z", "repo": repo_path, "branch": "main",
                    "state": "waiting", "cycle": 7, "phase": "backtest",
                    "phase_started_at": "2026-11-25T03:59:00Z",
                    "waiting": {"reason": "usage limit", "until": "2026-11-25T05:00:00Z"},
                    "breaker": "closed", "spent_usd": 1.25, "max_cost_usd": 20.0,
                    "last_error": "an error", "exit": "stopped"}),
            ),
            (
                paths.progress(),
                json!({"version": 1, "branch": "main", "start_time": "2026-01-20T10:00:00Z",
                    "cycles": [{"cycle": 1, "cycle_id": "cycle_1", "started_at": "2026-01-20T10:00:00Z",
                        "ended_at": "2026-01-20T10:00:45Z", "duration_seconds": 45.2,
                        "outcome": "committed", "commit": "0123456789abcdef", "success": true,
                        "cost_usd": 0.11, "title": "a title"},
                        {"cycle": 2, "cycle_id": "cycle_2", "started_at": "2026-01-20T10:01:00Z",
                        "ended_at": "2026-01-20T10:02:00Z", "duration_seconds": 60.0,
                        "outcome": "rolled_back", "attempt_ref": "refs/ralph/attempts/2",
                        "success": false, "error": "why",
                        "reason": "checks failed: pytest -q exited 1 (the backtest agent said pass)",
                        "verdict": {"pass": false, "decided_by": "checks", "agent_verdict": "pass",
                            "reason": "checks failed: pytest -q exited 1 (the backtest agent said pass)"}}],
                    "total_cost_usd": 0.11}),
            ),
            (
                paths.breaker(),
                json!({"version": 1, "state": {"kind": "closed"}, "reopens": 0,
                    "recent_failures": []}),
            ),
        ];
        for (path, value) in files {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
        }
        (home, repo_dir)
    }

    /// `status --json` is read by scripts: its keys, their order and the
    /// shape of each value are part of the interface.
    #[test]
    fn the_json_report_keeps_its_keys_order_and_values() {
        let (home, repo) = full_home();
        let report = collect(home.path()).unwrap();
        let printed = serde_json::to_string_pretty(&report)
            .unwrap()
            .replace(&home.path().display().to_string(), "HOME")
            .replace(&repo.path().display().to_string(), "REPO");
        let expected = r#"{
  "running": false,
  "heartbeat_fresh": null,
  "home": "HOME",
  "status": {
    "version": 1,
    "pid": 4242,
    "started_at": "2026-11-25T03:00:00Z",
    "heartbeat_at": "2026-11-25T04:00:00Z",
    "repo": "REPO",
    "branch": "main",
    "state": "waiting",
    "cycle": 7,
    "phase": "backtest",
    "phase_started_at": "2026-11-25T03:59:00Z",
    "waiting": {
      "reason": "usage limit",
      "until": "2026-11-25T05:00:00Z"
    },
    "breaker": "closed",
    "spent_usd": 1.25,
    "max_cost_usd": 20.0,
    "last_error": "an error",
    "exit": "stopped",
    "dashboard": null
  },
  "branch": "main",
  "total_cost_usd": 0.11,
  "cycles": [
    {
      "cycle": 1,
      "outcome": "committed",
      "cost_usd": 0.11,
      "commit": "0123456789abcdef",
      "attempt_ref": null,
      "title": "a title",
      "ended_at": "2026-01-20T10:00:45Z",
      "error": null,
      "reason": null,
      "verdict": null
    },
    {
      "cycle": 2,
      "outcome": "rolled_back",
      "cost_usd": 0.0,
      "commit": null,
      "attempt_ref": "refs/ralph/attempts/2",
      "title": null,
      "ended_at": "2026-01-20T10:02:00Z",
      "error": "why",
      "reason": "checks failed: pytest -q exited 1 (the backtest agent said pass)",
      "verdict": {
        "pass": false,
        "decided_by": "checks",
        "agent_verdict": "pass",
        "reason": "checks failed: pytest -q exited 1 (the backtest agent said pass)"
      }
    }
  ],
  "breaker": {
    "version": 1,
    "state": {
      "kind": "closed"
    },
    "reopens": 0,
    "recent_failures": []
  },
  "attempts": [
    {
      "ref": "refs/ralph/attempts/2",
      "summary": "try a cache"
    }
  ],
  "attempts_error": null
}"#;
        assert_eq!(printed, expected);
    }

    #[test]
    fn the_text_report_shows_every_part() {
        let (home, repo) = full_home();
        let report = collect(home.path()).unwrap();
        let printed = render_text(&report).replace(&repo.path().display().to_string(), "REPO");
        let expected = concat!(
            "ralphd is not running (last pid 4242, last heartbeat 2026-11-25T04:00:00Z; stopped)\n",
            "repo:    REPO (branch main)\n",
            "breaker: closed\n",
            "budget:  $0.11 spent of $20.00\n",
            "last error: an error\n",
            "\n",
            "last cycles:\n",
            "  #1    committed    $0.1100   0123456789               a title\n",
            "  #2    rolled_back  $0.0000   refs/ralph/attempts/2    (no title)\n",
            "        why: checks failed: pytest -q exited 1 (the backtest agent said pass)\n",
            "\n",
            "saved attempts (inspect: git show <ref>; reuse: git cherry-pick <ref>):\n",
            "  refs/ralph/attempts/2  try a cache\n",
        );
        assert_eq!(printed, expected);
    }
}
