//! `GET /`: the live web page (docs/design.md §11 "The web page").

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::AppState;

/// The page's routes.
pub(super) fn routes(_state: &AppState) -> Router<AppState> {
    Router::new().route("/", get(page))
}

async fn page() -> Html<&'static str> {
    Html("<!doctype html><title>ralphd</title><p>ralphd is running. See /api/status.</p>")
}
