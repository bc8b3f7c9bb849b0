//! `GET /metrics`: the scrape of docs/design.md §11 "Metrics" — OpenMetrics
//! text when the client asks for it (Prometheus does), the classic
//! Prometheus text format otherwise (`curl`, `promtool check metrics`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use crate::metrics::Format;

/// The metrics route.
pub(super) fn routes(_state: &AppState) -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::for_accept(accept);
    let text = state.metrics.render(format, std::time::SystemTime::now());
    ([(header::CONTENT_TYPE, format.content_type())], text)
}
