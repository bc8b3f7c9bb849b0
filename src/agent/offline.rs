//! The built-in offline agent (docs/design.md §9): a small, deterministic, honest
//! stand-in for `claude` used by `ralphd demo` and by users who want to see
//! the loop before wiring the CLI. It answers each phase with real output,
//! makes a real small edit during code-edit (one line appended to
//! `OFFLINE_AGENT_NOTES.md`), emits the verdict and report blocks, and
//! declares completion after a configured number of cycles. Everything it
//! says is labelled "[offline agent]".
//!
//! It speaks the same stream-json as the CLI, so its runs go through the
//! same parser, transcript and classification as real ones.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::phase::Phase;

/// The file the offline agent edits in the repo.
pub(crate) const NOTES_FILE: &str = "OFFLINE_AGENT_NOTES.md";

/// Runs one phase and returns the stream-json lines it "printed".
pub(crate) fn run_phase(
    phase: Phase,
    cycle: u64,
    repo: &Path,
    complete_after: u32,
) -> Result<Vec<String>> {
    let session_id = format!("offline-{cycle}-{}", phase.name());
    let text = match phase {
        Phase::Scan => scan(repo),
        Phase::Idea => format!(
            "TITLE: Record offline-agent cycle {cycle} in {NOTES_FILE}\n\n\
             [offline agent] The smallest useful, verifiable change: append one line to {NOTES_FILE} \
             so the loop can be watched end to end."
        ),
        Phase::CodeEdit => {
            edit(repo, cycle)?;
            format!("[offline agent] Appended a line for cycle {cycle} to {NOTES_FILE}.")
        }
        Phase::Backtest => "[offline agent] The diff only appends one line to a notes file; nothing can break.\n\n\
             ```json\n{\"verdict\":\"pass\",\"reason\":\"offline agent: the notes file gained exactly one line\"}\n```"
            .to_owned(),
        Phase::Report => {
            let report = json!({
                "summary": format!("[offline agent] cycle {cycle}: appended a line to {NOTES_FILE}"),
                "learnings": [format!("{NOTES_FILE} holds one line per offline cycle")],
                "patterns": ["the offline agent edits only its notes file"],
            });
            let mut text = format!(
                "[offline agent] Cycle {cycle} recorded one line in {NOTES_FILE}.\n\n```json\n{report}\n```"
            );
            if cycle >= u64::from(complete_after) {
                text.push_str("\n\n[offline agent] The configured number of cycles is done.\n");
                text.push_str(crate::blocks::COMPLETION_MARKER);
            }
            text
        }
    };
    let init = json!({"type": "system", "subtype": "init", "session_id": session_id,
        "model": "ralphd-offline", "cwd": repo, "offline": true});
    let assistant = json!({"type": "assistant", "session_id": session_id, "offline": true,
        "message": {"role": "assistant", "model": "ralphd-offline",
            "content": [{"type": "text", "text": text}]}});
    let result = json!({"type": "result", "subtype": "success", "is_error": false,
        "api_error_status": null, "duration_ms": 0, "num_turns": 1, "result": text,
        "session_id": session_id, "total_cost_usd": 0.0, "permission_denials": [],
        "offline": true});
    Ok(vec![
        init.to_string(),
        assistant.to_string(),
        result.to_string(),
    ])
}

fn scan(repo: &Path) -> String {
    let entries = match fs::read_dir(repo) {
        Ok(entries) => entries,
        Err(error) => {
            return format!(
                "[offline agent] Cannot list the repository {}: {error}.",
                repo.display()
            );
        }
    };
    // An entry that vanished while listing is not there to report.
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".git")
        .collect();
    names.sort();
    format!(
        "[offline agent] The repository's top level has {} entries: {}.",
        names.len(),
        names.join(", ")
    )
}

fn edit(repo: &Path, cycle: u64) -> Result<()> {
    let path = repo.join(NOTES_FILE);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("offline agent cannot open {}", path.display()))?;
    writeln!(file, "- cycle {cycle}: the offline agent was here")
        .with_context(|| format!("offline agent cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_edit_touches_the_repo_and_completion_comes_at_the_configured_cycle() {
        let dir = tempfile::tempdir().unwrap();
        for phase in Phase::ALL {
            let lines = run_phase(phase, 1, dir.path(), 2).unwrap();
            assert_eq!(lines.len(), 3);
            assert!(lines.iter().all(|line| line.contains("offline")));
            assert_eq!(
                dir.path().join(NOTES_FILE).exists(),
                phase >= Phase::CodeEdit
            );
        }
        let first = run_phase(Phase::Report, 1, dir.path(), 2).unwrap();
        assert!(!first[2].contains("promise"));
        let second = run_phase(Phase::Report, 2, dir.path(), 2).unwrap();
        assert!(second[2].contains("<promise>COMPLETE</promise>"));
    }
}
