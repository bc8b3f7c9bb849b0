//! The HTTP server of docs/design.md §11: the live page, the JSON API, the
//! event stream (SSE) and the control routes, served by axum on the daemon's
//! runtime. [`serve`] checks the `[http]` settings, binds, writes
//! `state/http.json` (the URL and CSRF token `ralphd pause|resume|stop`
//! use) and spawns the server; [`Server::stop`] ends every stream and the
//! server, within a bound, and removes `state/http.json`.
//!
//! Submodules: `routes` (the [`AppState`] and the router), `security` (the
//! token file, the Host/bearer/CSRF guard), `sse` (`/api/events`), `cycles`
//! (`/api/cycles…`), `health` (`/health`), `page` (`GET /`), `metrics`
//! (`GET /metrics`) and `listener` (at most 128 connections at once).

mod cycles;
mod health;
mod listener;
mod metrics;
mod page;
mod routes;
mod security;
mod sse;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::control::Control;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::state::{self, Durability, HomePaths};

pub(crate) use routes::{AppState, router};

/// How long the server may take to close its connections at exit before it
/// is dropped (a client that never reads must not hold the daemon up).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// `state/http.json`: how a command on the same machine reaches the running
/// daemon's server (mode 0600: it holds the CSRF token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HttpFile {
    pub(crate) version: u32,
    /// The daemon that serves it; a file whose pid does not hold the home's
    /// lock is stale.
    pub(crate) pid: u32,
    /// `http://127.0.0.1:41234/`
    pub(crate) url: String,
    pub(crate) csrf_token: String,
    /// The file holding the bearer token every route but `/health` needs;
    /// `None` when no token is needed.
    #[serde(default)]
    pub(crate) token_file: Option<PathBuf>,
}

/// The running server.
pub(crate) struct Server {
    url: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    http_file: PathBuf,
}

impl Server {
    /// The page's URL, `http://127.0.0.1:41234/`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Ends every event stream, then the server (within [`STOP_GRACE`]), and
    /// removes `state/http.json`.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, task).await.is_err()
        {
            tracing::warn!("the HTTP server did not close its connections in time; dropped");
        }
        remove_http_file(&self.http_file);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A start-up that failed after the bind: no stale URL is left behind.
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
            remove_http_file(&self.http_file);
        }
    }
}

fn remove_http_file(path: &std::path::Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), %error, "cannot remove the HTTP server's file");
    }
}

/// Starts the server of `[http]` on the current runtime, or returns `None`
/// when `listen = ""`. A refused setting (non-loopback without a token file,
/// a token file others can read) or an address that cannot be bound is an
/// error naming the key (exit 2).
pub(crate) async fn serve(
    settings: &HttpSettings,
    paths: &HomePaths,
    events: Events,
    control: Control,
    metrics: Metrics,
) -> Result<Option<Server>> {
    let http_file = paths.state_dir().join("http.json");
    let Some(listen) = settings.listen else {
        remove_http_file(&http_file);
        return Ok(None);
    };
    let bearer = security::load_token(listen, settings.token_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {listen} ([http] listen): {error}; choose another address or \
                 port (port 0 picks a free one), or set listen = \"\" to run without the server"
            )
        })?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}/");
    let stop = CancellationToken::new();
    let state = AppState::new(
        events,
        control,
        paths.clone(),
        bearer,
        security::accepted_hosts(bound, &settings.allowed_hosts),
        stop.clone(),
        metrics,
    );
    let file = HttpFile {
        version: state::VERSION,
        pid: std::process::id(),
        url: url.clone(),
        csrf_token: state.csrf_token.to_string(),
        token_file: state.bearer_token.as_ref().and(settings.token_file.clone()),
    };
    state::save_json_with(&http_file, &file, Durability::ProcessDeath)?;
    let app = router(state);
    let shutdown = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener::CappedListener::new(listener), app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP server stopped");
        }
    });
    Ok(Some(Server {
        url,
        stop,
        task: Some(task),
        http_file,
    }))
}
