//! The digest's I/O: reading what a home recorded into [`Sources`], and
//! writing a run's digest to `state/digests/<YYYY-MM-DD>-<HHMMSS>.md` (and
//! `.json` beside it; the name is the run's start, UTC), keeping the newest
//! [`DIGESTS_KEPT`] runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::{Digest, LoggedEvent, RunStop, Sources, Span, Tokens, build, render};
use crate::state::{self, HomePaths, InstanceLock, OnCorrupt, Progress, StatusFile};

/// How many runs' digests `state/digests/` keeps; older ones are deleted.
pub(crate) const DIGESTS_KEPT: usize = 100;

/// `state/digests/`.
pub(crate) fn digests_dir(paths: &HomePaths) -> PathBuf {
    paths.state_dir().join("digests")
}

/// Reads progress.json, status.json and the event log of a home. A
/// corrupt progress.json is an error (it names the file); a status.json or
/// event line that cannot be read is left out.
pub(crate) fn read_sources(paths: &HomePaths) -> Result<Sources> {
    let progress = state::load_json::<Progress>(&paths.progress(), OnCorrupt::Refuse, "")?;
    let status = state::load_json::<StatusFile>(&paths.status(), OnCorrupt::Refuse, "")
        .unwrap_or_else(|error| {
            tracing::debug!(error = %format!("{error:#}"), "status.json left out of the digest");
            None
        });
    Ok(Sources {
        progress,
        tokens: read_tokens(&paths.progress()),
        status,
        events: read_events(&paths.state_dir())?,
        running: InstanceLock::is_held(paths),
        stop: None,
        run_start: None,
    })
}

/// `ralphd report`: the digest of `span` of the home at `home`, now.
pub(crate) fn collect(home: &Path, span: Span) -> Result<Digest> {
    let sources = read_sources(&HomePaths::new(home))?;
    Ok(build(&sources, span, Timestamp::now()))
}

/// The digest of the run that started at `run_started_at` (RFC 3339) and
/// has just ended with `stop`; what the daemon writes and sends at its end.
pub(crate) fn for_run(paths: &HomePaths, run_started_at: &str, stop: &RunStop) -> Result<Digest> {
    let mut sources = read_sources(paths)?;
    sources.running = false;
    sources.stop = Some(stop.clone());
    sources.run_start = super::parse_time(run_started_at);
    Ok(build(&sources, Span::LastRun, Timestamp::now()))
}

/// Writes `digest` as `<YYYY-MM-DD>-<HHMMSS>.md` and `.json` (the run's
/// start in UTC, else the digest's own time), then deletes all but the
/// newest [`DIGESTS_KEPT`] runs' files.
pub(crate) fn write(paths: &HomePaths, digest: &Digest) -> Result<PathBuf> {
    let dir = digests_dir(paths);
    let named_after = digest
        .run
        .started_at
        .as_deref()
        .and_then(super::parse_time)
        .or_else(|| super::parse_time(&digest.generated_at))
        .unwrap_or_else(Timestamp::now);
    let stem = named_after.strftime("%Y-%m-%d-%H%M%S").to_string();
    let markdown = dir.join(format!("{stem}.md"));
    state::write_text(&markdown, &render(digest, &TimeZone::system()))?;
    state::save_json(&dir.join(format!("{stem}.json")), digest)?;
    prune(&dir, DIGESTS_KEPT);
    Ok(markdown)
}

/// Deletes the files of all but the newest `keep` digests (by name, which
/// sorts by time). A file that cannot be deleted is a warning.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            matches!(
                path.extension().and_then(|ext| ext.to_str()),
                Some("md" | "json")
            )
        })
        .collect();
    let stems: BTreeSet<String> = files
        .iter()
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    let old: BTreeSet<&str> = stems.iter().rev().skip(keep).map(String::as_str).collect();
    for path in files {
        let stem = path.file_stem().and_then(|stem| stem.to_str());
        if stem.is_some_and(|stem| old.contains(stem))
            && let Err(error) = fs::remove_file(&path)
        {
            tracing::warn!(file = %path.display(), %error, "cannot delete an old digest");
        }
    }
}

/// The event log's lines, oldest first: `events.1.jsonl` (the rotated
/// one) then `events.jsonl`. `None` when neither exists.
fn read_events(state_dir: &Path) -> Result<Option<Vec<LoggedEvent>>> {
    let mut found = None::<Vec<LoggedEvent>>;
    for name in ["events.1.jsonl", "events.jsonl"] {
        let path = state_dir.join(name);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let events = found.get_or_insert_with(Vec::new);
        for line in io::BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if let Some(event) = std::str::from_utf8(&line).ok().and_then(LoggedEvent::parse) {
                events.push(event);
            }
        }
    }
    Ok(found)
}

/// Token counts per cycle from the phase records of progress.json that
/// carry `input_tokens` / `output_tokens`; empty when none do.
fn read_tokens(progress: &Path) -> BTreeMap<u64, Tokens> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        cycles: Vec<Cycle>,
    }
    #[derive(Deserialize)]
    struct Cycle {
        cycle: u64,
        #[serde(default)]
        phases: Vec<Phase>,
    }
    #[derive(Deserialize)]
    struct Phase {
        #[serde(default)]
        input_tokens: Option<u64>,
        #[serde(default)]
        output_tokens: Option<u64>,
    }
    let Some(file) = fs::read(progress)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<File>(&bytes).ok())
    else {
        return BTreeMap::new();
    };
    let mut tokens = BTreeMap::new();
    for cycle in file.cycles {
        for phase in cycle.phases {
            if phase.input_tokens.is_none() && phase.output_tokens.is_none() {
                continue;
            }
            let sum: &mut Tokens = tokens.entry(cycle.cycle).or_default();
            sum.input = sum.input.saturating_add(phase.input_tokens.unwrap_or(0));
            sum.output = sum.output.saturating_add(phase.output_tokens.unwrap_or(0));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_digests_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            for ext in ["md", "json"] {
                fs::write(dir.path().join(format!("2026-03-0{day}-060000.{ext}")), "x").unwrap();
            }
        }
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "2026-03-04-060000.json",
                "2026-03-04-060000.md",
                "2026-03-05-060000.json",
                "2026-03-05-060000.md",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn the_event_log_is_read_rotated_first_and_its_absence_is_not_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_events(dir.path()).unwrap(), None);
        fs::write(
            dir.path().join("events.1.jsonl"),
            "{\"id\":1,\"at\":\"2026-03-10T22:00:00Z\",\"type\":\"daemon_started\"}\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("events.jsonl"),
            b"garbage\n\xff\xfe\n{\"id\":2,\"at\":\"2026-03-10T22:00:01Z\",\"type\":\"cycle_started\",\"cycle\":1}\n{\"id\":3,\"at\":\"2026-03-10T22",
        )
        .unwrap();
        let events = read_events(dir.path()).unwrap().unwrap();
        let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
        assert_eq!(kinds, ["daemon_started", "cycle_started"]);
    }
}
