//! The live web page of docs/design.md §11 (`GET /` and `GET /assets/…`):
//! plain HTML, CSS and JavaScript embedded in the binary at build time, the
//! page's CSRF token put into its HTML, served with a strict
//! Content-Security-Policy (nothing but the page's own files; no inline
//! script, no framing). The page itself (src/http/page/app.js) reads the API
//! and the event stream and shows agent text as text, never as HTML.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// Where the HTML takes the CSRF token.
const TOKEN_SLOT: &str = "{{csrf_token}}";
/// Where the HTML takes the id of the last event published, from which the
/// page replays the recent activity.
const LAST_ID_SLOT: &str = "{{last_event_id}}";

/// Only the page's own files, its own API, and the `data:` favicon; no
/// inline script or style, no plugin, no framing by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file besides the HTML.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// A strong ETag over the body, so a reload after an upgrade fetches
    /// the new file and otherwise gets 304.
    etag: u64,
}

const ASSETS: [Asset; 2] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: APP_JS,
        etag: fnv1a(APP_JS.as_bytes()),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: STYLE_CSS,
        etag: fnv1a(STYLE_CSS.as_bytes()),
    },
];

/// FNV-1a, at compile time: an ETag needs to change with the file, not to
/// resist anyone.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut index = 0;
    while index < bytes.len() {
        hash ^= bytes[index] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        index += 1;
    }
    hash
}

/// The page's routes: `GET /` and `GET /assets/{name}`.
pub(super) fn routes(_state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/assets/{name}", get(file))
}

async fn page(State(state): State<AppState>) -> Response {
    index(&state.csrf_token, state.events.last_id())
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    asset(&name, &headers)
}

/// `GET /`: the page, with `csrf_token` in its `<meta name="csrf-token">`
/// and the last event's id in `<meta name="last-event-id">`. Never cached:
/// the token belongs to this daemon's run.
fn index(csrf_token: &str, last_event_id: u64) -> Response {
    let html = INDEX_HTML
        .replacen(TOKEN_SLOT, &escape_html(csrf_token), 1)
        .replacen(LAST_ID_SLOT, &last_event_id.to_string(), 1);
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    protect(headers);
    response
}

/// `GET /assets/{name}`: an embedded script or style sheet, revalidated by
/// ETag on each load; 404 for any other name.
fn asset(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (StatusCode::OK, asset.body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    protect(headers);
    response
}

/// Headers every file of the page carries.
fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Text made safe inside HTML text or a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn the_page_carries_its_csrf_token_escaped_is_never_cached_and_allows_only_its_own_files() {
        let response = index("abc\"><script>x</script>", 42);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let html = body(response);
        assert!(
            html.contains(
                r#"<meta name="csrf-token" content="abc&quot;&gt;&lt;script&gt;x&lt;/script&gt;">"#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<meta name="last-event-id" content="42">"#),
            "{html}"
        );
        assert!(!html.contains("{{"), "every slot is filled");
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_for_the_policy_to_block() {
        let html = INDEX_HTML;
        for (at, _) in html.match_indices("<script") {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 1..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                !html[at + 1 + name.len()..].starts_with('='),
                "inline event handler {name}"
            );
        }
    }

    #[test]
    fn every_file_the_page_links_is_served_with_its_type_and_revalidated_by_etag() {
        let mut linked = 0;
        for (at, _) in INDEX_HTML.match_indices("\"/assets/") {
            let rest = &INDEX_HTML[at + "\"/assets/".len()..];
            let name = &rest[..rest.find('"').unwrap()];
            let response = asset(name, &HeaderMap::new());
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
            let expected = if name.ends_with(".js") {
                "text/javascript"
            } else {
                "text/css"
            };
            assert!(content_type.starts_with(expected), "{name}: {content_type}");
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
            let etag = response.headers()[header::ETAG].clone();
            let mut again = HeaderMap::new();
            again.insert(header::IF_NONE_MATCH, etag);
            assert_eq!(asset(name, &again).status(), StatusCode::NOT_MODIFIED);
            linked += 1;
        }
        assert_eq!(linked, ASSETS.len(), "every embedded file is linked");
        assert_eq!(
            asset("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    /// Agent text reaches the page only as text: the script never hands a
    /// string to the HTML parser (the browser test shows it end to end).
    #[test]
    fn the_script_never_parses_strings_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "DOMParser",
            "createContextualFragment",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }
}
