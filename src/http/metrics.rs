//! `GET /metrics`: the OpenMetrics text of docs/design.md §11 "Metrics".

use axum::Router;

use super::AppState;

/// The metrics route.
pub(super) fn routes(_state: &AppState) -> Router<AppState> {
    Router::new()
}
