//! The router: every route of docs/design.md §11 behind the security guard,
//! and the [`AppState`] the handlers share. `GET /` and `GET /metrics` come
//! from `page.rs` and `metrics.rs`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{cycles, health, metrics, page, security, sse};
use crate::control::Control;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::state::HomePaths;

/// The most a request body may hold; the control routes need none.
pub(crate) const BODY_LIMIT: usize = 16 * 1024;

/// What every handler can reach. Cloning is cheap (handles and `Arc`s).
#[derive(Clone)]
pub(crate) struct AppState {
    /// The event bus: live events for SSE (and metrics).
    pub(crate) events: Events,
    /// Requests to the loop: pause, resume, stop, breaker reset.
    pub(crate) control: Control,
    /// The home: status.json, progress.json, cycles/, events.jsonl.
    pub(crate) paths: HomePaths,
    /// The token every POST must carry in `X-CSRF-Token`; the page gets it
    /// in its HTML, the CLI from `state/http.json`.
    pub(crate) csrf_token: Arc<str>,
    /// The bearer token of `[http] token_file`, when set.
    pub(crate) bearer_token: Option<Arc<str>>,
    /// The `Host` values accepted (lower case).
    pub(crate) allowed_hosts: Arc<[String]>,
    /// Cancelled when the server stops: every event stream ends.
    pub(crate) shutdown: CancellationToken,
    /// The registry `GET /metrics` renders.
    pub(crate) metrics: Metrics,
}

impl AppState {
    pub(crate) fn new(
        events: Events,
        control: Control,
        paths: HomePaths,
        bearer_token: Option<String>,
        allowed_hosts: Vec<String>,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> AppState {
        AppState {
            events,
            control,
            paths,
            csrf_token: security::random_token().into(),
            bearer_token: bearer_token.map(Into::into),
            allowed_hosts: allowed_hosts.into(),
            shutdown,
            metrics,
        }
    }
}

/// Every route, behind the guard and the body cap.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/api/status", get(status))
        .route("/api/cycles", get(cycles::list))
        .route("/api/cycles/{cycle}", get(cycles::one))
        .route(
            "/api/cycles/{cycle}/{phase}/transcript",
            get(cycles::transcript),
        )
        .route("/api/events", get(sse::events))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/api/stop", post(stop))
        .route("/api/breaker/reset", post(reset_breaker))
        // ── The live page (`GET /`, page.rs) and the metrics (`GET /metrics`,
        // metrics.rs): their own files, behind the same guard. ──
        .merge(page::routes(&state))
        .merge(metrics::routes(&state))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// An error answer: `{"error": "…"}` with its status.
pub(crate) fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// A failure inside a handler (a corrupt state file, a read error): 500
/// with the message, which names the file.
pub(crate) struct Failure(pub(crate) anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let message = crate::redact::redact(&format!("{:#}", self.0)).into_owned();
        error_response(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// Runs a blocking read (files, git) off the async threads.
pub(crate) async fn off_thread<T: Send + 'static>(
    read: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(Failure),
        Err(error) => Err(Failure(anyhow::anyhow!("the read failed: {error}"))),
    }
}

/// `GET /api/status`: the object of `ralphd status --json`.
async fn status(State(state): State<AppState>) -> Result<Response, Failure> {
    let home = state.paths.home.clone();
    let report = off_thread(move || crate::status::collect(&home)).await?;
    Ok(Json(report).into_response())
}

/// The answer of a control route.
fn answer(said: &str) -> Json<serde_json::Value> {
    Json(json!({ "ok": true, "answer": said }))
}

// The control routes read (and drop) a body, so that the body cap applies.

async fn pause(State(state): State<AppState>, _body: Bytes) -> Json<serde_json::Value> {
    answer(state.control.pause())
}

async fn resume(State(state): State<AppState>, _body: Bytes) -> Json<serde_json::Value> {
    answer(state.control.resume())
}

async fn stop(State(state): State<AppState>, _body: Bytes) -> Json<serde_json::Value> {
    answer(state.control.stop_after_cycle())
}

async fn reset_breaker(State(state): State<AppState>, _body: Bytes) -> Json<serde_json::Value> {
    answer(state.control.reset_breaker())
}
