//! `GET /health`: whether the daemon works, for a load balancer or a
//! monitor — `ok` or `degraded` (200) while it runs with a fresh heartbeat,
//! including while it waits on a usage limit or the limiter; `down` (503)
//! when the breaker is open, the run halted or stopped, or the heartbeat
//! is stale.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::routes::{AppState, Failure, off_thread};
use crate::state::{self, DaemonState, OnCorrupt, StatusFile};

/// A heartbeat older than this is stale (the daemon rewrites it every 10 s).
const STALE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

pub(super) async fn health(State(state): State<AppState>) -> Result<Response, Failure> {
    let path = state.paths.status();
    let status: Option<StatusFile> =
        off_thread(move || state::load_json(&path, OnCorrupt::Refuse, "")).await?;
    let (code, body) = judge(status.as_ref(), jiff::Timestamp::now());
    Ok((code, Json(body)).into_response())
}

/// The verdict on status.json at `now`: the HTTP status and the body.
fn judge(status: Option<&StatusFile>, now: jiff::Timestamp) -> (StatusCode, Value) {
    let Some(status) = status else {
        return down(json!({ "status_file": "missing" }));
    };
    let heartbeat_age = status
        .heartbeat_at
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|at| now.duration_since(at));
    let heartbeat_fresh = heartbeat_age.is_some_and(|age| age < STALE_AFTER);
    let breaker = if status.breaker.is_empty() {
        "closed"
    } else {
        status.breaker.split_whitespace().next().unwrap_or("closed")
    };
    let waiting = status
        .waiting
        .as_ref()
        .map(|waiting| waiting.reason.clone());
    let checks = json!({
        "state": status.state,
        "heartbeat_at": status.heartbeat_at,
        "heartbeat_fresh": heartbeat_fresh,
        "breaker": breaker,
        "waiting": waiting,
        "exit": status.exit,
    });
    let failing =
        status.state == DaemonState::Stopped || !heartbeat_fresh || breaker.starts_with("open");
    if failing {
        return down(checks);
    }
    // Running, but not making progress on its own: a probe after an open
    // breaker, or a usage limit to wait out.
    let degraded = breaker.starts_with("half")
        || waiting
            .as_deref()
            .is_some_and(|reason| reason.starts_with("usage limit"));
    let word = if degraded { "degraded" } else { "ok" };
    (StatusCode::OK, json!({ "status": word, "checks": checks }))
}

fn down(checks: Value) -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "down", "checks": checks }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Waiting;

    fn status(state: DaemonState, heartbeat_at: &str, breaker: &str) -> StatusFile {
        StatusFile {
            state,
            heartbeat_at: heartbeat_at.to_owned(),
            breaker: breaker.to_owned(),
            ..StatusFile::default()
        }
    }

    #[test]
    fn running_or_waiting_on_a_limit_is_ok_and_open_stopped_or_stale_is_down() {
        let now: jiff::Timestamp = "2026-12-01T04:00:00Z".parse().unwrap();
        let fresh = "2026-12-01T03:59:55Z";
        let (code, body) = judge(
            Some(&status(
                DaemonState::Running,
                fresh,
                "closed (0 consecutive failed cycles)",
            )),
            now,
        );
        assert_eq!(
            (code, body["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );

        let mut usage_limit = status(DaemonState::Waiting, fresh, "");
        usage_limit.waiting = Some(Waiting {
            reason: "usage limit".to_owned(),
            until: "2026-12-01T05:00:00Z".to_owned(),
        });
        let (code, body) = judge(Some(&usage_limit), now);
        assert_eq!(
            (code, body["status"].as_str()),
            (StatusCode::OK, Some("degraded"))
        );
        assert_eq!(body["checks"]["waiting"], "usage limit");

        let (code, body) = judge(
            Some(&status(
                DaemonState::Running,
                fresh,
                "half-open (probe cycles passed: 0)",
            )),
            now,
        );
        assert_eq!(
            (code, body["status"].as_str()),
            (StatusCode::OK, Some("degraded"))
        );

        for (state, heartbeat, breaker) in [
            (
                DaemonState::Waiting,
                fresh,
                "open until 2026-12-01T05:00:00Z — x",
            ),
            (DaemonState::Stopped, fresh, ""),
            (DaemonState::Running, "2026-12-01T03:58:00Z", ""),
            (DaemonState::Running, "garbage", ""),
        ] {
            let (code, body) = judge(Some(&status(state, heartbeat, breaker)), now);
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["status"], "down");
        }
        assert_eq!(judge(None, now).0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
