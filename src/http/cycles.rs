//! `/api/cycles…`: the cycle records of progress.json, newest first; one
//! cycle with its phase texts, report and diff stat; and a phase run's
//! transcript, streamed from its file (plain or gzip-compressed by
//! retention) without holding it in memory. Every read runs off the async
//! threads.

use std::io::Read;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::routes::{AppState, Failure, error_response, off_thread};
use crate::phase::Phase;
use crate::state::{self, CycleRecord, OnCorrupt, Progress};

/// Records one `/api/cycles` answer holds when no `limit` is given, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// The most of one phase text or report a cycle's answer carries.
const TEXT_LIMIT: u64 = 1024 * 1024;
/// The size of the pieces a transcript is sent in.
const CHUNK: usize = 64 * 1024;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    /// Only cycles numbered below this.
    before: Option<u64>,
}

/// `GET /api/cycles?limit=N&before=C`: `{"cycles": [...], "more": bool}`.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, Failure> {
    let path = state.paths.progress();
    let progress: Option<Progress> =
        off_thread(move || state::load_json(&path, OnCorrupt::Refuse, "")).await?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let before = query.before.unwrap_or(u64::MAX);
    let mut older = progress
        .map(|progress| progress.cycles)
        .unwrap_or_default()
        .into_iter()
        .filter(|record| record.cycle < before)
        .collect::<Vec<_>>();
    older.sort_by_key(|record| std::cmp::Reverse(record.cycle));
    let more = older.len() > limit;
    older.truncate(limit);
    Ok(Json(json!({ "cycles": older, "more": more })).into_response())
}

/// `GET /api/cycles/{n}`: the record (`null` while the cycle runs), each
/// phase's final text, report.md, the diff stat, the commit or attempt ref,
/// and the phases that have a transcript.
pub(super) async fn one(
    State(state): State<AppState>,
    UrlPath(cycle): UrlPath<u64>,
) -> Result<Response, Failure> {
    let progress_path = state.paths.progress();
    let dir = state.paths.cycle_dir(cycle);
    let found = off_thread(move || {
        let progress: Option<Progress> = state::load_json(&progress_path, OnCorrupt::Refuse, "")?;
        let record =
            progress.and_then(|progress| progress.cycles.into_iter().find(|r| r.cycle == cycle));
        if record.is_none() && !dir.is_dir() {
            return Ok(None);
        }
        Ok(Some(describe(cycle, record, &dir)))
    })
    .await?;
    Ok(match found {
        Some(body) => Json(body).into_response(),
        None => error_response(StatusCode::NOT_FOUND, format!("no cycle {cycle}")),
    })
}

/// The JSON of one cycle.
fn describe(cycle: u64, record: Option<CycleRecord>, dir: &Path) -> Value {
    let mut phases = Vec::new();
    for phase in Phase::ALL {
        let name = phase.name();
        let text = read_text(dir, &format!("{name}.md"));
        let transcript = find_file(dir, &format!("{name}.jsonl"))
            .is_some()
            .then(|| format!("/api/cycles/{cycle}/{name}/transcript"));
        if text.is_some() || transcript.is_some() {
            phases.push(json!({ "phase": name, "text": text, "transcript": transcript }));
        }
    }
    let (commit, attempt_ref, diff) = record.as_ref().map_or((None, None, None), |record| {
        (
            record.commit.clone(),
            record.attempt_ref.clone(),
            record.diff,
        )
    });
    json!({
        "cycle": cycle,
        "record": record,
        "phases": phases,
        "report": read_text(dir, "report.md"),
        "diff": diff,
        "commit": commit,
        "attempt_ref": attempt_ref,
    })
}

/// `<dir>/<name>`, or its `.gz` once retention compressed it.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|path| path.is_file())
}

/// A file's reader, decompressing a `.gz`.
fn open_reader(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path)?;
    Ok(if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// A text file of the cycle (cut to [`TEXT_LIMIT`]), `None` when absent.
fn read_text(dir: &Path, name: &str) -> Option<String> {
    let path = find_file(dir, name)?;
    let mut bytes = Vec::new();
    open_reader(&path)
        .and_then(|reader| reader.take(TEXT_LIMIT).read_to_end(&mut bytes))
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `GET /api/cycles/{n}/{phase}/transcript`: the stored (redacted) stream
/// of that phase run, as `application/x-ndjson`, sent piece by piece.
pub(super) async fn transcript(
    State(state): State<AppState>,
    UrlPath((cycle, phase)): UrlPath<(u64, String)>,
) -> Result<Response, Failure> {
    // Only a phase name reaches the file system: no path from the URL.
    let Some(phase) = Phase::from_name(&phase) else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            format!("no phase {phase:?} (scan, idea, code-edit, backtest, report)"),
        ));
    };
    let dir = state.paths.cycle_dir(cycle);
    let name = format!("{}.jsonl", phase.name());
    let Some(path) = off_thread(move || Ok(find_file(&dir, &name))).await? else {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            format!("no transcript of {} in cycle {cycle}", phase.name()),
        ));
    };
    let reader = off_thread(move || Ok(open_reader(&path)?)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    // The reading thread stops when the client goes away (the send fails).
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let read = match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            };
            chunk.truncate(read);
            if sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
