//! A scripted fake of the Anthropic Messages API for driving the **real** `claude` CLI.
//!
//! The server binds `127.0.0.1:0` and runs on its own thread with its own Tokio runtime,
//! so plain `#[test]` functions that spawn processes can use it; dropping the [`FakeApi`]
//! stops it. Point the CLI at it with `ANTHROPIC_BASE_URL` (see `real_cli::CliEnv`).
//!
//! What it speaks (the requests the pinned CLI of `.ci/install-claude` sends): `HEAD /` and any other path are
//! answered harmlessly (200 for `/`, 404 elsewhere, `count_tokens` gets a small number);
//! every `POST /v1/messages` is recorded as a [`RecordedRequest`] and answered with the
//! next [`Step`] of the [`Script`]: SSE with `event:` lines when the request has
//! `"stream": true`, a plain JSON message otherwise (the CLI's fallback after a broken
//! stream). In tool inputs, the text `{cwd}` inside string values is replaced by the
//! path on the request's "Primary working directory:" line, because the CLI wants
//! absolute paths.
//!
//! Scripts:
//! * [`Script::per_session`]: each CLI run (`X-Claude-Code-Session-Id`) walks the same
//!   list from the start, which suits one list for several phases of a ralphd cycle;
//! * [`Script::global`]: one list for all requests, in arrival order;
//! * [`Script::responder`]: a function of the recorded request, e.g. answer by the
//!   phase named in the prompt, or by whether the last message carries a tool_result.
//!
//! When a list runs out, the fake answers 400 `fake api: script exhausted`, which the
//! CLI does not retry and shows in its result text.
//!
//! ```ignore
//! // One list, replayed by every CLI run: write a file, then claim completion.
//! let api = FakeApi::start(Script::per_session([
//!     Step::tool_use("Write", json!({"file_path": "{cwd}/out.txt", "content": "hi\n"})),
//!     Step::text("Done.\n<promise>COMPLETE</promise>"),
//! ]));
//! // Or decide per request, e.g. by the phase named in ralphd's prompt:
//! let api = FakeApi::start(Script::responder(|req| {
//!     if !req.tool_results.is_empty() {
//!         Step::text("done")
//!     } else if req.prompt.contains("code-edit") {
//!         Step::tool_use("Bash", json!({"command": "cargo test", "description": "checks"}))
//!     } else {
//!         Step::usage_limit(now_secs() + 3)
//!     }
//! }));
//! let mut cmd = Command::new(ralphd_bin);
//! CliEnv::new(&api, tmp.path()).auth(Auth::OAuth).apply(&mut cmd); // real_cli.rs
//! // ... run it, then assert on what the CLI sent:
//! assert!(api.wait_for(Duration::from_secs(5), |reqs| reqs.len() >= 2));
//! let requests = api.requests();
//! assert!(requests[1].tool_results[0].is_error);
//! assert!(!requests[0].tools.contains(&"Write".to_owned()));
//! ```
//!
//! Other steps: [`Step::text_deltas`] (text split across `text_delta` events),
//! [`Step::error`] / [`Step::rate_limited`] / [`Step::overloaded`] /
//! [`Step::unauthorized`] / [`Step::usage_limit`] (HTTP errors with headers),
//! [`Step::stream_error`] / [`Step::stream_error_at`] (an `event: error` once the stream
//! has started; [`BreakAt`] documents what the CLI does at each point), [`Step::Hang`]
//! (never answer: the CLI gives up after `API_TIMEOUT_MS`), [`Step::Stall`] (send
//! `message_start`, then go silent: `API_TIMEOUT_MS` does **not** end that, only the
//! caller's own timeout does), and [`Step::delayed`]. Builders: [`Step::with_header`],
//! [`Step::with_usage`], [`Step::then_tool_use`] (text, then a tool call, in one message).
//! Answers report small token counts ([`Usage`]), so `total_cost_usd` stays near $0.001.

// Test support shared by several test modules: not every item is used by every module yet.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Token counts the fake reports when a step does not say otherwise. Small, so that
/// the CLI's computed `total_cost_usd` stays well under a cent per turn.
const DEFAULT_USAGE: Usage = Usage {
    input_tokens: 100,
    output_tokens: 20,
};

/// The `usage` of one answer; the CLI computes `total_cost_usd` from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One content block of a scripted assistant message.
#[derive(Clone, Debug)]
pub(crate) enum Block {
    /// A text block, sent as one `text_delta` per part.
    Text(Vec<String>),
    /// A tool call; `{cwd}` in string values of `input` becomes the CLI's working directory.
    ToolUse { name: String, input: Value },
}

/// Where a [`Step::StreamError`] breaks the stream, and what CLI 2.1.197 then does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BreakAt {
    /// The error is the first event: the CLI retries the request, streaming again
    /// (no `api_retry` line).
    First,
    /// After `message_start`: as [`BreakAt::First`].
    AfterMessageStart,
    /// After `content_block_start`: the CLI re-sends the turn with `"stream": false`.
    AfterBlockStart,
    /// After a `text_delta`: as [`BreakAt::AfterBlockStart`]; the partial text is dropped.
    AfterTextDelta,
    /// After `content_block_stop`: no retry and no fallback; the run ends with
    /// `is_error: true`, `api_error_status: null`, result `API Error: <message>`, exit 1.
    AfterBlockStop,
}

impl BreakAt {
    /// How many events of a text answer go out before the error.
    fn events_before(self) -> usize {
        match self {
            BreakAt::First => 0,
            BreakAt::AfterMessageStart => 1,
            BreakAt::AfterBlockStart => 2,
            BreakAt::AfterTextDelta => 3,
            BreakAt::AfterBlockStop => 4,
        }
    }
}

/// What the fake does with one `POST /v1/messages`.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// A normal answer (SSE or JSON, following the request's `stream` flag).
    /// `stop_reason` is `tool_use` when a block is a tool call, else `end_turn`.
    Reply {
        blocks: Vec<Block>,
        usage: Usage,
        headers: Vec<(String, String)>,
    },
    /// An HTTP error with the API's error body `{"type":"error","error":{...}}`.
    Error {
        status: u16,
        error_type: String,
        message: String,
        headers: Vec<(String, String)>,
    },
    /// 200 and the start of a text answer up to `at`, then `event: error` and the end of
    /// the body. What the CLI does depends on `at` (see [`BreakAt`]); its retry or
    /// fallback request takes the next step. A non-streaming request that meets this
    /// step gets a 529 instead.
    StreamError {
        at: BreakAt,
        error_type: String,
        message: String,
    },
    /// Never answer (until the client gives up or the server is dropped).
    Hang,
    /// 200 and `message_start`, then silence with the connection open.
    Stall,
    /// Wait, then do the inner step.
    Delay(Duration, Box<Step>),
}

impl Step {
    /// A text answer in one delta.
    pub(crate) fn text(text: impl Into<String>) -> Step {
        Step::text_deltas([text.into()])
    }

    /// A text answer split across several `text_delta` events (e.g. a split marker).
    pub(crate) fn text_deltas<S: Into<String>>(parts: impl IntoIterator<Item = S>) -> Step {
        Step::reply(vec![Block::Text(
            parts.into_iter().map(Into::into).collect(),
        )])
    }

    /// A single tool call, e.g. `Step::tool_use("Write", json!({"file_path": "{cwd}/f"}))`.
    pub(crate) fn tool_use(name: impl Into<String>, input: Value) -> Step {
        Step::reply(vec![Block::ToolUse {
            name: name.into(),
            input,
        }])
    }

    /// An answer made of arbitrary blocks.
    pub(crate) fn reply(blocks: Vec<Block>) -> Step {
        Step::Reply {
            blocks,
            usage: DEFAULT_USAGE,
            headers: Vec::new(),
        }
    }

    /// An HTTP error answer.
    pub(crate) fn error(
        status: u16,
        error_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Step {
        Step::Error {
            status,
            error_type: error_type.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 429 `rate_limit_error` with `retry-after: 0` (an API-key rate limit; retried by the CLI).
    pub(crate) fn rate_limited() -> Step {
        Step::error(429, "rate_limit_error", "fake rate limit").with_header("retry-after", "0")
    }

    /// 529 `overloaded_error` (retried by the CLI; drives `--fallback-model` after 3).
    pub(crate) fn overloaded() -> Step {
        Step::error(529, "overloaded_error", "Overloaded")
    }

    /// 401 `authentication_error`.
    pub(crate) fn unauthorized() -> Step {
        Step::error(401, "authentication_error", "invalid x-api-key")
    }

    /// A subscriber usage limit: 429 with `anthropic-ratelimit-unified-status: rejected`,
    /// `-reset: <resets_at>` (epoch seconds) and `-representative-claim: five_hour`.
    /// Only meaningful with `CLAUDE_CODE_OAUTH_TOKEN`; the CLI then emits a
    /// `rate_limit_event` with `status: "rejected"` and `resetsAt`.
    pub(crate) fn usage_limit(resets_at: u64) -> Step {
        Step::error(429, "rate_limit_error", "usage limit reached")
            .with_header("anthropic-ratelimit-unified-status", "rejected")
            .with_header("anthropic-ratelimit-unified-reset", &resets_at.to_string())
            .with_header(
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            )
    }

    /// A mid-stream `event: error` (`overloaded_error`) right after `content_block_start`:
    /// the CLI asks the same turn again with `"stream": false`.
    pub(crate) fn stream_error() -> Step {
        Step::stream_error_at(BreakAt::AfterBlockStart)
    }

    /// A mid-stream `event: error` (`overloaded_error`) at `at`.
    pub(crate) fn stream_error_at(at: BreakAt) -> Step {
        Step::StreamError {
            at,
            error_type: "overloaded_error".to_owned(),
            message: "Overloaded".to_owned(),
        }
    }

    /// `step`, answered after `delay`.
    pub(crate) fn delayed(delay: Duration, step: Step) -> Step {
        Step::Delay(delay, Box::new(step))
    }

    /// Adds a response header to a `Reply` or `Error` (inside a `Delay` too).
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Step {
        match &mut self {
            Step::Reply { headers, .. } | Step::Error { headers, .. } => {
                headers.push((name.to_owned(), value.to_owned()));
            }
            Step::Delay(_, inner) => {
                let step = std::mem::replace(inner.as_mut(), Step::Hang);
                **inner = step.with_header(name, value);
            }
            Step::StreamError { .. } | Step::Hang | Step::Stall => {
                panic!("with_header: only Reply and Error steps carry headers")
            }
        }
        self
    }

    /// Sets the `usage` of a `Reply` (e.g. large numbers for `--max-budget-usd` tests).
    pub(crate) fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Step {
        match &mut self {
            Step::Reply { usage, .. } => {
                *usage = Usage {
                    input_tokens,
                    output_tokens,
                };
            }
            _ => panic!("with_usage: only Reply steps carry usage"),
        }
        self
    }

    /// Appends a tool call to a `Reply` (a text block, then a tool_use, in one message).
    pub(crate) fn then_tool_use(mut self, name: impl Into<String>, input: Value) -> Step {
        match &mut self {
            Step::Reply { blocks, .. } => blocks.push(Block::ToolUse {
                name: name.into(),
                input,
            }),
            _ => panic!("then_tool_use: only Reply steps carry blocks"),
        }
        self
    }

    fn exhausted(n_steps: usize) -> Step {
        Step::error(
            400,
            "invalid_request_error",
            format!("fake api: script exhausted after {n_steps} steps"),
        )
    }
}

/// Decides the [`Step`] for each recorded `POST /v1/messages`.
pub(crate) struct Script {
    respond: Box<dyn Fn(&RecordedRequest) -> Step + Send + Sync>,
}

impl Script {
    /// Each CLI session (`X-Claude-Code-Session-Id`) walks `steps` from the start.
    pub(crate) fn per_session(steps: impl IntoIterator<Item = Step>) -> Script {
        let steps: Vec<Step> = steps.into_iter().collect();
        Script::responder(move |request| {
            steps
                .get(request.session_seq)
                .cloned()
                .unwrap_or_else(|| Step::exhausted(steps.len()))
        })
    }

    /// All requests share one list, in arrival order.
    pub(crate) fn global(steps: impl IntoIterator<Item = Step>) -> Script {
        let steps: Vec<Step> = steps.into_iter().collect();
        Script::responder(move |request| {
            steps
                .get(request.seq)
                .cloned()
                .unwrap_or_else(|| Step::exhausted(steps.len()))
        })
    }

    /// Answers with whatever `respond` returns for the recorded request.
    pub(crate) fn responder(
        respond: impl Fn(&RecordedRequest) -> Step + Send + Sync + 'static,
    ) -> Script {
        Script {
            respond: Box::new(respond),
        }
    }
}

/// A `tool_result` block of the last user message.
#[derive(Clone, Debug)]
pub(crate) struct ToolResult {
    pub tool_use_id: String,
    /// The content as text (text blocks joined with `\n` when it is a list).
    pub content: String,
    pub is_error: bool,
}

/// One `POST /v1/messages`, as the CLI sent it.
#[derive(Clone, Debug)]
pub(crate) struct RecordedRequest {
    /// Index among all message requests (0-based).
    pub seq: usize,
    /// Index among the message requests of the same session (0-based).
    pub session_seq: usize,
    /// When it arrived.
    pub at: Instant,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// All headers, names lower-cased (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// `X-Claude-Code-Session-Id`, or `""`.
    pub session_id: String,
    pub model: String,
    pub stream: bool,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// The text of the system prompt (all blocks, joined with `\n`).
    pub system: String,
    /// The path on the "Primary working directory:" line, if any.
    pub cwd: Option<PathBuf>,
    /// The text of the first user message (the prompt, with any reminders the CLI adds).
    pub prompt: String,
    /// The text blocks of the last user message.
    pub last_user_text: String,
    /// The tool_result blocks of the last user message.
    pub tool_results: Vec<ToolResult>,
    /// The whole JSON body, for anything else.
    pub body: Value,
}

impl RecordedRequest {
    /// A header by lower-case name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The running fake; dropping it stops the server.
pub(crate) struct FakeApi {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    /// Dropping (or sending on) this ends the server's runtime, hanging requests included.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    script: Script,
    log: Mutex<Log>,
    /// Notified after every recorded request, for [`FakeApi::wait_for`].
    changed: Condvar,
    /// Source of unique message, tool and request ids.
    next_id: AtomicU64,
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    others: Vec<String>,
    per_session: HashMap<String, usize>,
}

impl FakeApi {
    /// Binds 127.0.0.1:0 and serves `script` on a background thread.
    pub(crate) fn start(script: Script) -> FakeApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            script,
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(1),
        });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("fake-api-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake api runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    // Not a graceful shutdown: hanging requests must not keep us alive.
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => {
                            served.expect("fake api server");
                        }
                        _ = shutdown_rx => {}
                    }
                });
            })
            .expect("spawn fake api thread");
        FakeApi {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for `ANTHROPIC_BASE_URL`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `POST /v1/messages` so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().requests.clone()
    }

    /// The other requests so far, as `"METHOD /path"` (e.g. the `HEAD /` probe).
    pub(crate) fn other_requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().others.clone()
    }

    /// Blocks until `done(requests)` holds or `timeout` passes; returns whether it held.
    pub(crate) fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[RecordedRequest]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().unwrap();
        loop {
            if done(&log.requests) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            log = self
                .shared
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the server thread was already printed; don't double-panic here.
            let _ = thread.join();
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |pq| pq.as_str().to_owned(),
    );
    let bare_path = request.uri().path().to_owned();
    let headers = collect_headers(request.headers());
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();

    if method != Method::POST || bare_path != "/v1/messages" {
        shared
            .log
            .lock()
            .unwrap()
            .others
            .push(format!("{method} {path}"));
        return match (method, bare_path.as_str()) {
            (_, "/") => plain(StatusCode::OK, "", "text/plain"),
            (Method::POST, "/v1/messages/count_tokens") => plain(
                StatusCode::OK,
                &json!({"input_tokens": DEFAULT_USAGE.input_tokens}).to_string(),
                "application/json",
            ),
            _ => error_response(
                404,
                "not_found_error",
                "fake api: no such path",
                &[],
                "req_fake_404",
            ),
        };
    }

    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = {
        let mut log = shared.log.lock().unwrap();
        let session_id = headers
            .get("x-claude-code-session-id")
            .cloned()
            .unwrap_or_default();
        let session_seq = {
            let n = log.per_session.entry(session_id.clone()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let recorded = record(
            log.requests.len(),
            session_seq,
            path,
            headers,
            session_id,
            body,
        );
        log.requests.push(recorded.clone());
        shared.changed.notify_all();
        recorded
    };
    let step = (shared.script.respond)(&recorded);
    respond(&shared, &recorded, step).await
}

fn collect_headers(headers: &axum::http::HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

fn record(
    seq: usize,
    session_seq: usize,
    path: String,
    headers: BTreeMap<String, String>,
    session_id: String,
    body: Value,
) -> RecordedRequest {
    let system = match &body["system"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let user_messages: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    let prompt = user_messages
        .first()
        .map(|m| message_text(m))
        .unwrap_or_default();
    let last_user_text = user_messages
        .last()
        .map(|m| message_text(m))
        .unwrap_or_default();
    let tool_results = user_messages
        .last()
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| ToolResult {
                    tool_use_id: b["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                    content: match &b["content"] {
                        Value::String(text) => text.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    },
                    is_error: b["is_error"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    let cwd = primary_working_directory(&system).or_else(|| {
        messages
            .iter()
            .find_map(|m| primary_working_directory(&message_text(m)))
    });
    RecordedRequest {
        seq,
        session_seq,
        at: Instant::now(),
        path,
        headers,
        session_id,
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        stream: body["stream"].as_bool().unwrap_or(false),
        tools: body["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        system,
        cwd,
        prompt,
        last_user_text,
        tool_results,
        body,
    }
}

/// The text blocks of a message (or its string content), joined with `\n`.
fn message_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The path after "Primary working directory:" on its line, if the text has one.
pub(crate) fn primary_working_directory(text: &str) -> Option<PathBuf> {
    const LABEL: &str = "Primary working directory:";
    let start = text.find(LABEL)? + LABEL.len();
    let line = text[start..].lines().next().unwrap_or_default().trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

/// Replaces `{cwd}` in every string value (not keys) of `value`.
pub(crate) fn substitute_cwd(value: &Value, cwd: &str) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace("{cwd}", cwd)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute_cwd(v, cwd)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute_cwd(v, cwd)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn respond(shared: &Shared, request: &RecordedRequest, mut step: Step) -> Response {
    while let Step::Delay(delay, inner) = step {
        tokio::time::sleep(delay).await;
        step = *inner;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("req_fake_{id}");
    let model = if request.model.is_empty() {
        "claude-fake".to_owned()
    } else {
        request.model.clone()
    };
    match step {
        Step::Reply {
            blocks,
            usage,
            headers,
        } => {
            let cwd = request
                .cwd
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "{cwd}".to_owned());
            let content = content_blocks(&blocks, id, &cwd);
            let message = Message {
                id: format!("msg_fake_{id}"),
                model,
                content,
                usage,
            };
            let response = if request.stream {
                sse_response(message.sse_events(), false, &request_id)
            } else {
                plain(
                    StatusCode::OK,
                    &message.json().to_string(),
                    "application/json",
                )
            };
            with_headers(response, &headers, &request_id)
        }
        Step::Error {
            status,
            error_type,
            message,
            headers,
        } => error_response(status, &error_type, &message, &headers, &request_id),
        Step::StreamError {
            at,
            error_type,
            message,
        } => {
            if !request.stream {
                return error_response(529, &error_type, &message, &[], &request_id);
            }
            let partial = Message {
                id: format!("msg_fake_{id}"),
                model,
                content: content_blocks(&[Block::Text(vec!["Let me".to_owned()])], id, ""),
                usage: DEFAULT_USAGE,
            };
            let mut events = partial.sse_events();
            events.truncate(at.events_before());
            events.push(sse_event(
                "error",
                &json!({"type": "error", "error": {"type": error_type, "message": message}}),
            ));
            sse_response(events, false, &request_id)
        }
        Step::Hang => std::future::pending::<Response>().await,
        Step::Stall => {
            let start = Message {
                id: format!("msg_fake_{id}"),
                model,
                content: Vec::new(),
                usage: DEFAULT_USAGE,
            };
            let mut events = start.sse_events();
            events.truncate(1);
            sse_response(events, true, &request_id)
        }
        Step::Delay(..) => unreachable!("delays were unwrapped above"),
    }
}

/// Turns scripted blocks into API content blocks, with ids and `{cwd}` filled in.
fn content_blocks(blocks: &[Block], id: u64, cwd: &str) -> Vec<Value> {
    blocks
        .iter()
        .enumerate()
        .map(|(index, block)| match block {
            Block::Text(parts) => json!({"type": "text", "text": parts.concat(), "parts": parts}),
            Block::ToolUse { name, input } => json!({
                "type": "tool_use",
                "id": format!("toolu_fake_{id}_{index}"),
                "name": name,
                "input": substitute_cwd(input, cwd),
            }),
        })
        .collect()
}

/// An assistant message; text blocks carry a private `parts` list for the deltas.
struct Message {
    id: String,
    model: String,
    content: Vec<Value>,
    usage: Usage,
}

impl Message {
    fn stop_reason(&self) -> &'static str {
        if self.content.iter().any(|b| b["type"] == "tool_use") {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn usage_json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.usage.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        })
    }

    /// The non-streaming answer.
    fn json(&self) -> Value {
        let content: Vec<Value> = self
            .content
            .iter()
            .map(|b| {
                let mut b = b.clone();
                if let Some(map) = b.as_object_mut() {
                    map.remove("parts");
                }
                b
            })
            .collect();
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason(),
            "stop_sequence": null,
            "usage": self.usage_json(self.usage.output_tokens),
        })
    }

    /// The SSE events of the streaming answer, in order.
    fn sse_events(&self) -> Vec<String> {
        let mut events = vec![sse_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": self.usage_json(1),
            }}),
        )];
        for (index, block) in self.content.iter().enumerate() {
            if block["type"] == "tool_use" {
                let mut start = block.clone();
                start["input"] = json!({});
                events.push(sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": start}),
                ));
                let input = block["input"].to_string();
                let (a, b) = input.split_at(input.len() / 2);
                let (a, b) = if input.is_char_boundary(input.len() / 2) {
                    (a, b)
                } else {
                    (input.as_str(), "")
                };
                for piece in [a, b].into_iter().filter(|p| !p.is_empty()) {
                    events.push(sse_event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            } else {
                events.push(sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "text", "text": ""}}),
                ));
                let parts: Vec<&str> = block["parts"]
                    .as_array()
                    .map(|p| p.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for part in parts {
                    events.push(sse_event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "text_delta", "text": part}}),
                    ));
                }
            }
            events.push(sse_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
        events.push(sse_event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                    "usage": {"output_tokens": self.usage.output_tokens}}),
        ));
        events.push(sse_event("message_stop", &json!({"type": "message_stop"})));
        events
    }
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A `text/event-stream` response, one chunk per event; `then_stall` keeps it open.
fn sse_response(events: Vec<String>, then_stall: bool, request_id: &str) -> Response {
    let chunks = futures_util::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<Bytes, Infallible>(Bytes::from(e))),
    );
    let body = if then_stall {
        Body::from_stream(chunks.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(chunks)
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    with_headers(response, &[], request_id)
}

fn error_response(
    status: u16,
    error_type: &str,
    message: &str,
    headers: &[(String, String)],
    request_id: &str,
) -> Response {
    let body = json!({
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    });
    let status = StatusCode::from_u16(status).expect("valid HTTP status in script");
    with_headers(
        plain(status, &body.to_string(), "application/json"),
        headers,
        request_id,
    )
}

fn plain(status: StatusCode, body: &str, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

fn with_headers(
    mut response: Response,
    headers: &[(String, String)],
    request_id: &str,
) -> Response {
    let map = response.headers_mut();
    map.insert(
        "request-id",
        HeaderValue::from_str(request_id).expect("ascii request id"),
    );
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name in script"),
            HeaderValue::from_str(value).expect("valid header value in script"),
        );
    }
    response
}

#[test]
fn primary_working_directory_is_read_from_its_line() {
    let system =
        "You are...\n - Primary working directory: /tmp/x y/repo\n - Is a git repository: true";
    assert_eq!(
        primary_working_directory(system),
        Some(PathBuf::from("/tmp/x y/repo"))
    );
    assert_eq!(primary_working_directory("no such line"), None);
}

#[test]
fn cwd_is_substituted_in_string_values_only() {
    let input = json!({"file_path": "{cwd}/a.txt", "{cwd}": ["{cwd}", 1], "n": 2});
    assert_eq!(
        substitute_cwd(&input, "/r"),
        json!({"file_path": "/r/a.txt", "{cwd}": ["/r", 1], "n": 2})
    );
}

#[test]
fn sse_has_event_lines_and_block_stops() {
    let message = Message {
        id: "msg_1".to_owned(),
        model: "m".to_owned(),
        content: content_blocks(
            &[
                Block::Text(vec![
                    "<promise>COMP".to_owned(),
                    "LETE</promise>".to_owned(),
                ]),
                Block::ToolUse {
                    name: "Write".to_owned(),
                    input: json!({"file_path": "{cwd}/f"}),
                },
            ],
            1,
            "/w",
        ),
        usage: DEFAULT_USAGE,
    };
    let names: Vec<String> = message
        .sse_events()
        .iter()
        .map(|e| e.lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "event: message_start",
            "event: content_block_start",
            "event: content_block_delta",
            "event: content_block_delta",
            "event: content_block_stop",
            "event: content_block_start",
            "event: content_block_delta",
            "event: content_block_delta",
            "event: content_block_stop",
            "event: message_delta",
            "event: message_stop",
        ]
    );
    let json = message.json();
    assert_eq!(json["stop_reason"], "tool_use");
    assert_eq!(
        json["content"][0],
        json!({"type": "text", "text": "<promise>COMPLETE</promise>"})
    );
    assert_eq!(json["content"][1]["input"]["file_path"], "/w/f");
}

/// Sends one HTTP/1.1 request with `Connection: close` and returns the raw response.
#[cfg(test)]
fn raw_http(api: &FakeApi, head: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api.addr).expect("connect to the fake");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let request = format!(
        "{head}\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        api.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    response
}

#[test]
fn fake_api_serves_scripted_steps_per_session_and_records_requests() {
    let api = FakeApi::start(Script::per_session([
        Step::tool_use("Write", json!({"file_path": "{cwd}/f.txt"})),
        Step::text("done"),
    ]));
    let body = json!({
        "model": "claude-test",
        "stream": true,
        "system": [{"type": "text", "text": " - Primary working directory: /repo\n"}],
        "tools": [{"name": "Read"}, {"name": "Write"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "phase: scan"}]}],
    })
    .to_string();
    let post = |session: &str, body: &str| {
        raw_http(
            &api,
            &format!("POST /v1/messages?beta=true HTTP/1.1\r\nX-Claude-Code-Session-Id: {session}"),
            body,
        )
    };

    let first = post("a", &body);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("content-type: text/event-stream"), "{first}");
    // The tool input arrives as input_json_delta pieces of a JSON string.
    assert!(first.contains(r#"\"/repo/f.txt\"}"#), "{first}");
    assert!(first.contains(r#""stop_reason":"tool_use""#), "{first}");
    // Another session starts the list again; a non-streaming request gets JSON.
    let other = post("b", &body.replace(r#""stream":true"#, r#""stream":false"#));
    assert!(other.contains("content-type: application/json"), "{other}");
    assert!(
        other.contains(r#""input":{"file_path":"/repo/f.txt"}"#),
        "{other}"
    );
    let second = post("a", &body);
    assert!(second.contains(r#""text":"done""#), "{second}");
    let exhausted = post("a", &body);
    assert!(exhausted.starts_with("HTTP/1.1 400"), "{exhausted}");
    assert!(
        exhausted.contains("script exhausted after 2 steps"),
        "{exhausted}"
    );
    let probe = raw_http(&api, "HEAD / HTTP/1.1", "");
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");

    assert!(api.wait_for(Duration::from_secs(5), |requests| requests.len() == 4));
    let requests = api.requests();
    let sequence: Vec<(usize, &str, usize)> = requests
        .iter()
        .map(|r| (r.seq, r.session_id.as_str(), r.session_seq))
        .collect();
    assert_eq!(
        sequence,
        [(0, "a", 0), (1, "b", 0), (2, "a", 1), (3, "a", 2)]
    );
    let first = &requests[0];
    assert_eq!(first.model, "claude-test");
    assert_eq!(first.tools, ["Read", "Write"]);
    assert_eq!(first.cwd.as_deref(), Some(std::path::Path::new("/repo")));
    assert_eq!(first.prompt, "phase: scan");
    assert!(first.stream && !requests[1].stream);
    assert_eq!(api.other_requests(), ["HEAD /"]);
}

#[test]
fn fake_api_errors_carry_their_headers() {
    let api = FakeApi::start(Script::global([Step::usage_limit(1_800_000_000)]));
    let response = raw_http(&api, "POST /v1/messages HTTP/1.1", "{}");
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.contains("anthropic-ratelimit-unified-status: rejected"),
        "{response}"
    );
    assert!(
        response.contains("anthropic-ratelimit-unified-reset: 1800000000"),
        "{response}"
    );
    assert!(
        response.contains(r#""type":"rate_limit_error""#),
        "{response}"
    );
}
