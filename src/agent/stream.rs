//! Pure parser for the Claude Code CLI's `--output-format stream-json` output.
//!
//! [`parse_line`] turns one line into a typed [`Event`]; [`StreamSummary`] is
//! fed event by event and keeps only what the daemon needs once the run is
//! over (session, result, cost, limits, counts). Nothing here does I/O, knows
//! about processes, or stores lines, so memory does not grow with the length
//! of the stream.
//!
//! Only the fields we use are deserialised; unknown fields are skipped without
//! being buffered. The line is read twice: once for its `type`/`subtype`, then
//! into the struct of that type, so an odd field in an event type we ignore
//! can never make a line unreadable. Fields of the `result` event are read
//! leniently (a value of the wrong type becomes "absent"), because losing the
//! result line would turn a finished run into a failure. Of the model's text,
//! most of a busy stream's bytes, only the head is unescaped (see
//! [`TEXT_HEAD_BYTES`]).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// How much of an assistant text block is read: its head, as an
/// `agent_text` event shows it. The rest stays in the transcript.
pub(crate) const TEXT_HEAD_BYTES: usize = 2048;

/// How much of an unreadable line a [`ParseError`] quotes.
const EXCERPT_CHARS: usize = 120;

/// One line of the stream, reduced to what the daemon uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Event {
    /// `system/init`: the first line of a run.
    Init {
        session_id: Option<String>,
        model: Option<String>,
    },
    /// `system/api_retry`: the CLI is retrying a failed API request.
    ApiRetry {
        attempt: Option<u32>,
        /// HTTP status, `None` for connection errors and timeouts.
        error_status: Option<u16>,
        /// `rate_limit`, `overloaded`, `authentication_failed`, `server_error`, `unknown`.
        error: Option<String>,
    },
    /// `system/model_fallback`: the CLI switched to `--fallback-model`.
    ModelFallback {
        original_model: Option<String>,
        fallback_model: Option<String>,
    },
    /// Any other `system` subtype (`task_started`, `status`, …); ignored.
    OtherSystem { subtype: String },
    /// `assistant`: one content block of a model message (one line per block).
    Assistant {
        blocks: Vec<ContentBlock>,
        /// Set on the synthetic message the CLI writes for an API failure
        /// (`"error":"authentication_failed"`, `"rate_limit"`, …).
        error: Option<String>,
    },
    /// `user`: tool results going back to the model; only counted.
    User { tool_results: u32 },
    /// `rate_limit_event` (subscriber mode only).
    RateLimit(RateLimitInfo),
    /// `result`: the last line of a run.
    Result(Box<RunResult>),
    /// A `type` we don't know (`stream_event`, future types); ignored.
    Unknown(String),
}

/// One content block of an `assistant` line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ContentBlock {
    /// The text's head: its first [`TEXT_HEAD_BYTES`] once trimmed, empty
    /// for a blank text.
    Text(String),
    ToolUse {
        name: String,
        /// A one-line summary of the input (the command, path, pattern or
        /// URL), empty when the input has none of them.
        summary: String,
    },
    /// `thinking` and anything else.
    Other(String),
}

/// `rate_limit_event.rate_limit_info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RateLimitInfo {
    /// `allowed`, `allowed_warning`, `rejected`.
    pub(crate) status: Option<String>,
    /// When a rejected limit resets, in epoch seconds (`resetsAt`).
    pub(crate) resets_at: Option<i64>,
    /// `five_hour`, `seven_day`, … (`rateLimitType`).
    pub(crate) limit_type: Option<String>,
}

impl RateLimitInfo {
    pub(crate) fn is_rejected(&self) -> bool {
        self.status.as_deref() == Some("rejected")
    }
}

/// The `result` event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunResult {
    /// `success` (also for API errors), `error_max_turns`,
    /// `error_max_budget_usd`, `error_during_execution`; empty when absent.
    pub(crate) subtype: String,
    /// `true` when the field is absent or unreadable: only an explicit
    /// `false` may count as success.
    pub(crate) is_error: bool,
    /// HTTP status of the failed API call (`null` for connection errors).
    pub(crate) api_error_status: Option<u16>,
    /// The final text; absent on the `error_*` subtypes.
    pub(crate) result: Option<String>,
    /// What went wrong, on the `error_*` subtypes.
    pub(crate) errors: Vec<String>,
    pub(crate) total_cost_usd: Option<f64>,
    pub(crate) num_turns: Option<u32>,
    pub(crate) session_id: Option<String>,
    pub(crate) duration_ms: Option<u64>,
    /// Names of the tools whose use was denied.
    pub(crate) permission_denials: Vec<String>,
    /// `completed`, `max_turns`, `aborted_tools`, …
    pub(crate) terminal_reason: Option<String>,
    /// The tokens of the whole run (`usage`); zeros when absent.
    pub(crate) usage: TokenUsage,
}

/// Tokens a run used, by kind, as the result line's `usage` counts them.
/// Saved under the CLI's own names (`input_tokens`, …), a zero count left
/// out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub(crate) struct TokenUsage {
    #[serde(rename = "input_tokens", default, skip_serializing_if = "is_zero")]
    pub(crate) input: u64,
    #[serde(rename = "output_tokens", default, skip_serializing_if = "is_zero")]
    pub(crate) output: u64,
    #[serde(
        rename = "cache_read_input_tokens",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub(crate) cache_read: u64,
    #[serde(
        rename = "cache_creation_input_tokens",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub(crate) cache_creation: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl TokenUsage {
    /// Both runs' tokens (a retried phase run counts every attempt).
    pub(crate) fn plus(self, other: TokenUsage) -> TokenUsage {
        TokenUsage {
            input: self.input.saturating_add(other.input),
            output: self.output.saturating_add(other.output),
            cache_read: self.cache_read.saturating_add(other.cache_read),
            cache_creation: self.cache_creation.saturating_add(other.cache_creation),
        }
    }
}

impl RunResult {
    /// The only shape that counts as a successful phase run.
    pub(crate) fn is_success(&self) -> bool {
        self.subtype == "success" && !self.is_error
    }

    /// The result text, or the `errors` joined when there is none.
    pub(crate) fn text_or_errors(&self) -> String {
        match &self.result {
            Some(text) => text.clone(),
            None => self.errors.join("; "),
        }
    }
}

/// A line that is not a stream-json event. The caller logs it and skips it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum ParseError {
    /// Empty or whitespace only; not worth a log line.
    #[error("blank line")]
    Blank,
    /// Not a JSON object with a string `type`.
    #[error("not a stream-json event ({detail}): {excerpt}")]
    NotJson { detail: String, excerpt: String },
    /// A known event type whose fields have an unexpected shape.
    #[error("malformed {event_type} event: {detail}")]
    Malformed { event_type: String, detail: String },
}

/// Parses one line of stream-json output (a trailing `\r` is fine).
pub(crate) fn parse_line(line: &str) -> Result<Event, ParseError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(ParseError::Blank);
    }
    let not_json = |error: serde_json::Error| ParseError::NotJson {
        detail: error.to_string(),
        excerpt: excerpt(line),
    };
    let Some(head) = Head::from_prefix(line) else {
        let head: Head = serde_json::from_str(line).map_err(not_json)?;
        return event_of(line, head);
    };
    // Only the line's start was read: a line that is not JSON after all is
    // still reported as such, whatever its type claims.
    match event_of(line, head) {
        Err(ParseError::Malformed { .. }) | Ok(Event::Unknown(_) | Event::OtherSystem { .. }) => {
            serde_json::from_str::<serde::de::IgnoredAny>(line).map_err(not_json)?;
            event_of(line, Head::from_prefix(line).expect("read above"))
        }
        parsed => parsed,
    }
}

/// The typed event of a line whose `type` (and `subtype`) are known.
fn event_of(line: &str, head: Head) -> Result<Event, ParseError> {
    let Some(event_type) = head.event_type else {
        return Err(ParseError::NotJson {
            detail: "no string \"type\" field".to_owned(),
            excerpt: excerpt(line),
        });
    };
    let malformed = |error: serde_json::Error| ParseError::Malformed {
        event_type: event_type.clone(),
        detail: error.to_string(),
    };
    let event = match event_type.as_str() {
        "system" => match head.subtype.as_deref().unwrap_or("") {
            "init" => {
                let init: RawInit = serde_json::from_str(line).map_err(malformed)?;
                Event::Init {
                    session_id: init.session_id,
                    model: init.model,
                }
            }
            "api_retry" => {
                let retry: RawApiRetry = serde_json::from_str(line).map_err(malformed)?;
                Event::ApiRetry {
                    attempt: retry.attempt,
                    error_status: retry.error_status,
                    error: retry.error,
                }
            }
            "model_fallback" => {
                let fallback: RawModelFallback = serde_json::from_str(line).map_err(malformed)?;
                Event::ModelFallback {
                    original_model: fallback.original_model,
                    fallback_model: fallback.fallback_model,
                }
            }
            other => Event::OtherSystem {
                subtype: other.to_owned(),
            },
        },
        "assistant" => {
            let assistant: RawMessageLine = serde_json::from_str(line).map_err(malformed)?;
            let blocks = assistant
                .message
                .map(|message| message.content.0)
                .unwrap_or_default()
                .into_iter()
                .map(RawBlock::into_content_block)
                .collect();
            Event::Assistant {
                blocks,
                error: assistant.error,
            }
        }
        "user" => {
            let user: RawMessageLine = serde_json::from_str(line).map_err(malformed)?;
            let blocks = user
                .message
                .map(|message| message.content.0)
                .unwrap_or_default();
            let tool_results = blocks
                .iter()
                .filter(|block| block.block_type.as_deref() == Some("tool_result"))
                .count();
            Event::User {
                tool_results: u32::try_from(tool_results).unwrap_or(u32::MAX),
            }
        }
        "rate_limit_event" => {
            let event: RawRateLimitEvent = serde_json::from_str(line).map_err(malformed)?;
            let info = event.rate_limit_info.unwrap_or_default();
            Event::RateLimit(RateLimitInfo {
                status: info.status,
                resets_at: info.resets_at,
                limit_type: info.rate_limit_type,
            })
        }
        "result" => {
            let result: RawResult = serde_json::from_str(line).map_err(malformed)?;
            Event::Result(Box::new(result.into_run_result()))
        }
        _ => Event::Unknown(event_type),
    };
    Ok(event)
}

/// What a finished (or killed) run left behind, accumulated event by event.
///
/// Bounded: besides a few counters it holds the last `result` event and the
/// last agent error.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StreamSummary {
    /// From `system/init`, replaced by the result's when that has one.
    pub(crate) session_id: Option<String>,
    /// From `system/init` (e.g. `claude-opus-4-8[1m]`).
    pub(crate) model: Option<String>,
    /// The last `result` event, if one arrived.
    pub(crate) result: Option<RunResult>,
    /// Number of events read (any type, parse errors excluded).
    pub(crate) events: u64,
    /// Number of `system/api_retry` lines.
    pub(crate) api_retries: u32,
    /// The last `api_retry`'s HTTP status and error kind.
    pub(crate) last_api_retry: Option<(Option<u16>, Option<String>)>,
    /// The last `rate_limit_event` with status `rejected`, cleared by a later
    /// event with another status (the CLI got through after all).
    pub(crate) usage_limit: Option<RateLimitInfo>,
    /// The model switched to by `system/model_fallback`, if that happened.
    pub(crate) model_fallback: Option<String>,
    pub(crate) model_fallback_seen: bool,
    /// Number of text blocks in (non-synthetic) assistant messages.
    pub(crate) assistant_text_blocks: u32,
    /// Number of tool_use blocks in assistant messages.
    pub(crate) tool_uses: u32,
    /// Number of tool results returned to the model.
    pub(crate) tool_results: u32,
    /// The `error` of the last synthetic assistant message (the CLI's own
    /// report of an API failure), e.g. `authentication_failed`.
    pub(crate) last_agent_error: Option<String>,
}

impl StreamSummary {
    /// Takes one event into account.
    pub(crate) fn record(&mut self, event: Event) {
        self.events += 1;
        match event {
            Event::Init { session_id, model } => {
                if session_id.is_some() {
                    self.session_id = session_id;
                }
                if model.is_some() {
                    self.model = model;
                }
            }
            Event::ApiRetry {
                error_status,
                error,
                ..
            } => {
                self.api_retries = self.api_retries.saturating_add(1);
                self.last_api_retry = Some((error_status, error));
            }
            Event::ModelFallback { fallback_model, .. } => {
                self.model_fallback_seen = true;
                self.model_fallback = fallback_model;
            }
            Event::Assistant { blocks, error } => {
                let synthetic = error.is_some();
                if synthetic {
                    self.last_agent_error = error;
                }
                for block in blocks {
                    match block {
                        // A synthetic message's text is the CLI's error, which the
                        // result repeats; it is not counted as the agent's text.
                        ContentBlock::Text(_) if synthetic => {}
                        ContentBlock::Text(_) => {
                            self.assistant_text_blocks =
                                self.assistant_text_blocks.saturating_add(1);
                        }
                        ContentBlock::ToolUse { .. } => {
                            self.tool_uses = self.tool_uses.saturating_add(1);
                        }
                        ContentBlock::Other(_) => {}
                    }
                }
            }
            Event::User { tool_results } => {
                self.tool_results = self.tool_results.saturating_add(tool_results);
            }
            Event::RateLimit(info) => {
                if info.is_rejected() {
                    self.usage_limit = Some(info);
                } else if info.status.is_some() {
                    self.usage_limit = None;
                }
            }
            Event::Result(result) => {
                if result.session_id.is_some() {
                    self.session_id.clone_from(&result.session_id);
                }
                self.result = Some(*result);
            }
            Event::OtherSystem { .. } | Event::Unknown(_) => {}
        }
    }

    /// `total_cost_usd` of the result, 0 without one.
    pub(crate) fn cost_usd(&self) -> f64 {
        self.result
            .as_ref()
            .and_then(|result| result.total_cost_usd)
            .unwrap_or(0.0)
    }

    /// `num_turns` of the result.
    pub(crate) fn turns(&self) -> Option<u32> {
        self.result.as_ref().and_then(|result| result.num_turns)
    }

    /// The result's token usage, zeros without one.
    pub(crate) fn tokens(&self) -> TokenUsage {
        self.result
            .as_ref()
            .map(|result| result.usage)
            .unwrap_or_default()
    }

    /// Tool names from the result's `permission_denials`.
    pub(crate) fn permission_denials(&self) -> &[String] {
        self.result
            .as_ref()
            .map_or(&[], |result| result.permission_denials.as_slice())
    }
}

fn excerpt(line: &str) -> String {
    crate::text::head_chars_with_ellipsis(line, EXCERPT_CHARS)
}

/// Reads any JSON value and keeps it only if it has the expected type.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(T::deserialize(value).ok())
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    event_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    subtype: Option<String>,
}

impl Head {
    /// The CLI writes `type` first (and a system line's `subtype` second):
    /// read them from the line's start, so that a long line is parsed once,
    /// by its typed parse, not twice. `None` for any other shape, which then
    /// gets the full parse.
    fn from_prefix(line: &str) -> Option<Head> {
        let quoted = |text: &str, key: &str| -> Option<(String, usize)> {
            let rest = text.strip_prefix(key)?;
            let end = rest.find('"')?;
            let value = &rest[..end];
            // An escape would need the JSON parser: leave it to the full parse.
            (!value.contains('\\')).then(|| (value.to_owned(), key.len() + end + 1))
        };
        let (event_type, used) = quoted(line, "{\"type\":\"")?;
        let subtype = if event_type == "system" {
            Some(quoted(&line[used..], ",\"subtype\":\"")?.0)
        } else {
            None
        };
        Some(Head {
            event_type: Some(event_type),
            subtype,
        })
    }
}

#[derive(Deserialize)]
struct RawInit {
    #[serde(default, deserialize_with = "lenient")]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    model: Option<String>,
}

#[derive(Deserialize)]
struct RawApiRetry {
    #[serde(default, deserialize_with = "lenient")]
    attempt: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    error_status: Option<u16>,
    #[serde(default, deserialize_with = "lenient")]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawModelFallback {
    #[serde(default, deserialize_with = "lenient")]
    original_model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    fallback_model: Option<String>,
}

/// An `assistant` or `user` line.
#[derive(Deserialize)]
struct RawMessageLine {
    #[serde(default)]
    message: Option<RawMessage>,
    #[serde(default, deserialize_with = "lenient")]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    content: RawContent,
}

/// `message.content`: a list of blocks, or a plain string (a prompt) that
/// holds no blocks. Anything else counts as no blocks.
#[derive(Default)]
struct RawContent(Vec<RawBlock>);

impl<'de> Deserialize<'de> for RawContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = RawContent;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of content blocks or a string")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawContent, A::Error> {
                let mut blocks = Vec::new();
                while let Some(block) = seq.next_element::<RawBlock>()? {
                    blocks.push(block);
                }
                Ok(RawContent(blocks))
            }

            fn visit_str<E: de::Error>(self, _text: &str) -> Result<RawContent, E> {
                Ok(RawContent::default())
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawContent, E> {
                Ok(RawContent::default())
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawContent, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawContent::default())
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

/// A content block; of a tool_use's `input` only the fields a summary
/// names are read, and a tool_result's `content` is skipped.
#[derive(Deserialize)]
struct RawBlock {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    block_type: Option<String>,
    #[serde(default, deserialize_with = "text_head")]
    text: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    input: Option<RawToolInput>,
}

/// The input fields that say what a tool call is about, in the order a
/// summary prefers them.
#[derive(Deserialize)]
struct RawToolInput {
    #[serde(default, deserialize_with = "lenient")]
    command: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    file_path: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    notebook_path: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pattern: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    query: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    description: Option<String>,
}

impl RawToolInput {
    fn summary(self) -> String {
        let first = [
            self.command,
            self.file_path,
            self.notebook_path,
            self.pattern,
            self.path,
            self.url,
            self.query,
            self.description,
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_default();
        let line = first.lines().next().unwrap_or_default();
        crate::text::head_chars_with_ellipsis(line, TOOL_SUMMARY_CHARS)
    }
}

/// How much of a tool's input its summary keeps.
pub(crate) const TOOL_SUMMARY_CHARS: usize = 200;

/// The head of a JSON string (see [`head_of_json_string`]); `None` for a
/// value of another type.
fn text_head<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let raw = <&'de RawValue>::deserialize(deserializer)?;
    Ok(head_of_json_string(raw.get(), TEXT_HEAD_BYTES))
}

/// The first `limit` bytes of the text a JSON string literal (`raw`, quotes
/// included) holds, trimmed at both ends; `None` when `raw` is no string.
/// Only as much of the literal as that needs is unescaped: a long enough
/// prefix, cut between escapes, then a twice longer one if leading
/// whitespace left it short. An escape serde_json refuses (a lone UTF-16
/// surrogate, which JavaScript writes) leaves the text as it was written.
fn head_of_json_string(raw: &str, limit: usize) -> Option<String> {
    let content = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut cut = 2 * limit;
    loop {
        let whole = cut >= content.len();
        let end = if whole {
            content.len()
        } else {
            escape_boundary(content, cut)
        };
        let text = unescape(&content[..end]);
        let text = text.trim_start();
        if whole || text.len() > limit {
            return Some(crate::text::head_bytes(text, limit).trim_end().to_owned());
        }
        cut *= 2;
    }
}

/// The last place at or before `cut` in a JSON string's content that lies
/// between characters and escapes (a surrogate pair's two escapes are one).
fn escape_boundary(content: &str, cut: usize) -> usize {
    let bytes = content.as_bytes();
    let mut at = 0;
    while at < cut {
        let next = match bytes[at] {
            b'\\' if bytes.get(at + 1) == Some(&b'u') => {
                let high_surrogate = content
                    .get(at + 2..at + 6)
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    .is_some_and(|unit| (0xD800..0xDC00).contains(&unit));
                at + if high_surrogate { 12 } else { 6 }
            }
            b'\\' => at + 2,
            _ => at + 1,
        };
        if next > cut {
            break;
        }
        at = next;
    }
    while !content.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A JSON string's content unescaped, or as it stands if it cannot be.
fn unescape(content: &str) -> String {
    serde_json::from_str(&format!("\"{content}\"")).unwrap_or_else(|_| content.to_owned())
}

impl RawBlock {
    fn into_content_block(self) -> ContentBlock {
        match self.block_type.as_deref() {
            Some("text") => ContentBlock::Text(self.text.unwrap_or_default()),
            Some("tool_use") => ContentBlock::ToolUse {
                name: self.name.unwrap_or_default(),
                summary: self.input.map(RawToolInput::summary).unwrap_or_default(),
            },
            _ => ContentBlock::Other(self.block_type.unwrap_or_default()),
        }
    }
}

#[derive(Deserialize)]
struct RawRateLimitEvent {
    #[serde(default)]
    rate_limit_info: Option<RawRateLimitInfo>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRateLimitInfo {
    #[serde(default, deserialize_with = "lenient")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    resets_at: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    rate_limit_type: Option<String>,
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default, deserialize_with = "lenient")]
    subtype: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    is_error: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    api_error_status: Option<u16>,
    #[serde(default, deserialize_with = "lenient")]
    result: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    errors: Option<Vec<serde_json::Value>>,
    #[serde(default, deserialize_with = "lenient")]
    total_cost_usd: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    num_turns: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    duration_ms: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    permission_denials: Option<Vec<RawDenial>>,
    #[serde(default, deserialize_with = "lenient")]
    terminal_reason: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<RawUsage>,
}

/// The result's `usage`; a count of the wrong type reads as zero.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default, deserialize_with = "lenient")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawDenial {
    #[serde(default, deserialize_with = "lenient")]
    tool_name: Option<String>,
}

impl RawResult {
    fn into_run_result(self) -> RunResult {
        let errors = self
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(|error| match error {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect();
        let permission_denials = self
            .permission_denials
            .unwrap_or_default()
            .into_iter()
            .map(|denial| denial.tool_name.unwrap_or_else(|| "?".to_owned()))
            .collect();
        RunResult {
            subtype: self.subtype.unwrap_or_default(),
            is_error: self.is_error.unwrap_or(true),
            api_error_status: self.api_error_status,
            result: self.result,
            errors,
            total_cost_usd: self.total_cost_usd,
            num_turns: self.num_turns,
            session_id: self.session_id,
            duration_ms: self.duration_ms,
            permission_denials,
            terminal_reason: self.terminal_reason,
            usage: self
                .usage
                .map(|usage| TokenUsage {
                    input: usage.input_tokens.unwrap_or(0),
                    output: usage.output_tokens.unwrap_or(0),
                    cache_read: usage.cache_read_input_tokens.unwrap_or(0),
                    cache_creation: usage.cache_creation_input_tokens.unwrap_or(0),
                })
                .unwrap_or_default(),
        }
    }
}

/// Every line of a recorded stream, parsed and recorded; for tests.
#[cfg(test)]
pub(crate) fn summarize(jsonl: &str) -> StreamSummary {
    let mut summary = StreamSummary::default();
    for line in jsonl.lines() {
        match parse_line(line) {
            Ok(event) => summary.record(event),
            Err(ParseError::Blank) => {}
            Err(error) => panic!("fixture line does not parse: {error}"),
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(line: &str, expected: Event) {
        assert_eq!(parse_line(line), Ok(expected), "line: {line}");
    }

    fn result_line(fields: &str) -> String {
        format!(r#"{{"type":"result",{fields},"uuid":"u"}}"#)
    }

    fn parsed_result(line: &str) -> RunResult {
        match parse_line(line) {
            Ok(Event::Result(result)) => *result,
            other => panic!("expected a result event, got {other:?}"),
        }
    }

    #[test]
    fn system_init() {
        check(
            include_str!("../../tests/fixtures/stream/init.json").trim_end(),
            Event::Init {
                session_id: Some("5f0c2a4e-1b7d-4c11-9a0e-2d3b6c1e8f00".to_owned()),
                model: Some("claude-opus-4-8[1m]".to_owned()),
            },
        );
    }

    #[test]
    fn system_api_retry() {
        check(
            r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":1000,"error_status":429,"error":"rate_limit","session_id":"s","uuid":"u"}"#,
            Event::ApiRetry {
                attempt: Some(1),
                error_status: Some(429),
                error: Some("rate_limit".to_owned()),
            },
        );
        check(
            r#"{"type":"system","subtype":"api_retry","attempt":3,"max_retries":10,"retry_delay_ms":2500,"error_status":null,"error":"unknown","session_id":"s"}"#,
            Event::ApiRetry {
                attempt: Some(3),
                error_status: None,
                error: Some("unknown".to_owned()),
            },
        );
    }

    #[test]
    fn system_model_fallback() {
        check(
            r#"{"type":"system","subtype":"model_fallback","trigger":"overloaded","original_model":"claude-opus-4-8[1m]","fallback_model":"claude-sonnet-5","content":"Switched to Sonnet 5 due to high demand for Opus 4.8 (1M context)","session_id":"s","uuid":"u"}"#,
            Event::ModelFallback {
                original_model: Some("claude-opus-4-8[1m]".to_owned()),
                fallback_model: Some("claude-sonnet-5".to_owned()),
            },
        );
    }

    #[test]
    fn other_system_subtypes_are_named_and_ignored() {
        check(
            r#"{"type":"system","subtype":"task_started","task_id":"t1","tool_use_id":"toolu_1","description":"d","subagent_type":"general-purpose","prompt":"print <promise>COMPLETE</promise>"}"#,
            Event::OtherSystem {
                subtype: "task_started".to_owned(),
            },
        );
        check(
            r#"{"type":"system","subtype":"status","status":"requesting"}"#,
            Event::OtherSystem {
                subtype: "status".to_owned(),
            },
        );
    }

    #[test]
    fn assistant_text_and_tool_use() {
        check(
            r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"text","text":"I will create the file.\n"}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":5},"context_management":null},"parent_tool_use_id":null,"session_id":"s","uuid":"u","request_id":"req_1"}"#,
            Event::Assistant {
                blocks: vec![ContentBlock::Text("I will create the file.".to_owned())],
                error: None,
            },
        );
        check(
            r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{"type":"tool_use","id":"toolu_01","name":"Write","input":{"file_path":"/w/fake_output.txt","content":"<promise>COMPLETE</promise>\n","nested":{"a":[1,2,{"b":null}]}}}],"stop_reason":null,"stop_sequence":null,"usage":{}},"parent_tool_use_id":null,"session_id":"s","uuid":"u"}"#,
            Event::Assistant {
                blocks: vec![ContentBlock::ToolUse {
                    name: "Write".to_owned(),
                    summary: "/w/fake_output.txt".to_owned(),
                }],
                error: None,
            },
        );
        check(
            r#"{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hmm","signature":"x"}]}}"#,
            Event::Assistant {
                blocks: vec![ContentBlock::Other("thinking".to_owned())],
                error: None,
            },
        );
    }

    #[test]
    fn synthetic_assistant_carries_the_error() {
        check(
            r#"{"type":"assistant","message":{"id":"m","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"Not logged in · Please run /login"}]},"parent_tool_use_id":null,"session_id":"s","uuid":"u","error":"authentication_failed"}"#,
            Event::Assistant {
                blocks: vec![ContentBlock::Text(
                    "Not logged in · Please run /login".to_owned(),
                )],
                error: Some("authentication_failed".to_owned()),
            },
        );
    }

    #[test]
    fn user_lines_count_tool_results() {
        check(
            r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"File created successfully at: /w/fake_output.txt"}]},"parent_tool_use_id":null,"session_id":"s","uuid":"u","timestamp":"2026-01-20T10:00:00Z","tool_use_result":{"type":"create","filePath":"/w/f","content":"x","structuredPatch":[],"originalFile":null,"userModified":false}}"#,
            Event::User { tool_results: 1 },
        );
        // The Agent tool's result content is a list of blocks.
        check(
            r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_02","type":"tool_result","content":[{"type":"text","text":"sub-agent says <promise>COMPLETE</promise>"},{"type":"text","text":"agentId: a1"}]},{"tool_use_id":"toolu_03","type":"tool_result","content":"from-bash","is_error":false}]}}"#,
            Event::User { tool_results: 2 },
        );
        // A sub-agent prompt comes as a plain string.
        check(
            r#"{"type":"user","message":{"role":"user","content":"Look at the repo"},"parent_tool_use_id":"toolu_02"}"#,
            Event::User { tool_results: 0 },
        );
    }

    #[test]
    fn rate_limit_events() {
        check(
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","isUsingOverage":false},"uuid":"u","session_id":"s"}"#,
            Event::RateLimit(RateLimitInfo {
                status: Some("allowed".to_owned()),
                resets_at: None,
                limit_type: None,
            }),
        );
        check(
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1795326126,"rateLimitType":"five_hour","overageStatus":"rejected","overageDisabledReason":"org_level_disabled","isUsingOverage":false},"uuid":"u","session_id":"s"}"#,
            Event::RateLimit(RateLimitInfo {
                status: Some("rejected".to_owned()),
                resets_at: Some(1_795_326_126),
                limit_type: Some("five_hour".to_owned()),
            }),
        );
    }

    #[test]
    fn result_success() {
        let result = parsed_result(
            r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":318,"duration_api_ms":81,"ttft_ms":233,"num_turns":2,"result":"The file fake_output.txt was created.\n<promise>COMPLETE</promise>","stop_reason":"end_turn","session_id":"s-1","total_cost_usd":0.197,"usage":{"input_tokens":39012,"server_tool_use":{"web_search_requests":0}},"modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":39012,"costUSD":0.197}},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"u"}"#,
        );
        assert_eq!(
            result,
            RunResult {
                subtype: "success".to_owned(),
                is_error: false,
                api_error_status: None,
                result: Some(
                    "The file fake_output.txt was created.\n<promise>COMPLETE</promise>".to_owned()
                ),
                errors: vec![],
                total_cost_usd: Some(0.197),
                num_turns: Some(2),
                session_id: Some("s-1".to_owned()),
                duration_ms: Some(318),
                permission_denials: vec![],
                terminal_reason: Some("completed".to_owned()),
                usage: TokenUsage {
                    input: 39012,
                    ..TokenUsage::default()
                },
            }
        );
        assert!(result.is_success());
    }

    #[test]
    fn the_result_line_token_usage_is_read_and_a_missing_or_odd_count_is_zero() {
        let result = parsed_result(&result_line(
            r#""subtype":"success","is_error":false,"result":"ok","usage":{"input_tokens":39012,"cache_creation_input_tokens":1200,"cache_read_input_tokens":88000,"output_tokens":79,"server_tool_use":{"web_search_requests":0}}"#,
        ));
        assert_eq!(
            result.usage,
            TokenUsage {
                input: 39012,
                output: 79,
                cache_read: 88000,
                cache_creation: 1200,
            }
        );
        let odd = parsed_result(&result_line(
            r#""subtype":"success","is_error":false,"result":"ok","usage":{"input_tokens":"many","output_tokens":5}"#,
        ));
        assert_eq!(odd.usage.input, 0);
        assert_eq!(odd.usage.output, 5);
        let none = parsed_result(&result_line(r#""subtype":"success","is_error":false"#));
        assert_eq!(none.usage, TokenUsage::default());
    }

    #[test]
    fn result_error_max_turns_has_errors_and_no_result() {
        let result = parsed_result(&result_line(
            r#""subtype":"error_max_turns","is_error":true,"duration_ms":900,"num_turns":4,"stop_reason":"tool_use","session_id":"s","total_cost_usd":0.41,"permission_denials":[],"terminal_reason":"max_turns","errors":["Reached maximum number of turns (3)"]"#,
        ));
        assert_eq!(result.subtype, "error_max_turns");
        assert_eq!(result.result, None);
        assert_eq!(result.errors, ["Reached maximum number of turns (3)"]);
        assert_eq!(
            result.text_or_errors(),
            "Reached maximum number of turns (3)"
        );
        assert!(!result.is_success());
    }

    #[test]
    fn result_api_error_status() {
        for (status_json, expected) in [
            ("429", Some(429)),
            ("529", Some(529)),
            ("401", Some(401)),
            ("null", None),
        ] {
            let result = parsed_result(&result_line(&format!(
                r#""subtype":"success","is_error":true,"api_error_status":{status_json},"result":"API Error: x","total_cost_usd":0"#
            )));
            assert_eq!(result.api_error_status, expected, "status {status_json}");
            assert!(result.is_error);
            assert!(!result.is_success());
        }
    }

    #[test]
    fn result_permission_denials_keep_tool_names() {
        let result = parsed_result(&result_line(
            r#""subtype":"success","is_error":false,"result":"done","permission_denials":[{"tool_name":"Write","tool_use_id":"toolu_1","tool_input":{"file_path":"/w/f","content":"x"}},{"tool_name":"Bash","tool_use_id":"toolu_2","tool_input":{"command":"rm -rf /"}}]"#,
        ));
        assert_eq!(result.permission_denials, ["Write", "Bash"]);
    }

    #[test]
    fn result_fields_of_the_wrong_type_read_as_absent() {
        let result = parsed_result(&result_line(
            r#""subtype":"success","is_error":"no","api_error_status":"oops","result":"text","total_cost_usd":"0.1","num_turns":-1"#,
        ));
        // An unreadable is_error must never pass as success.
        assert!(result.is_error);
        assert_eq!(result.api_error_status, None);
        assert_eq!(result.total_cost_usd, None);
        assert_eq!(result.num_turns, None);
        assert_eq!(result.result.as_deref(), Some("text"));

        let missing = parsed_result(r#"{"type":"result","result":"text"}"#);
        assert!(missing.is_error);
        assert_eq!(missing.subtype, "");
    }

    #[test]
    fn unknown_types_are_named() {
        check(
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"<promise>COMP"}},"session_id":"s"}"#,
            Event::Unknown("stream_event".to_owned()),
        );
        check(
            r#"{"type":"brand_new","x":[1,{"y":2}]}"#,
            Event::Unknown("brand_new".to_owned()),
        );
        // Other spellings than the CLI's (spaces, key order) take the full parse.
        check(
            r#"{ "x": 1, "type": "brand_new" }"#,
            Event::Unknown("brand_new".to_owned()),
        );
        // A line that only starts like an event is still not JSON.
        for line in [
            r#"{"type":"brand_new","x":[1"#,
            r#"{"type":"system","subtype":"what"#,
        ] {
            assert!(
                matches!(parse_line(line), Err(ParseError::NotJson { .. })),
                "{line}"
            );
        }
    }

    #[test]
    fn blank_and_non_json_lines_are_errors() {
        assert_eq!(parse_line(""), Err(ParseError::Blank));
        assert_eq!(parse_line("  \r"), Err(ParseError::Blank));
        for line in [
            "Warning: no stdin data received in 3s, proceeding without it.",
            "{\"type\":\"result\",\"subtype\":\"succ",
            "[1,2,3]",
            "42",
            r#"{"no_type":true}"#,
            r#"{"type":7}"#,
        ] {
            assert!(
                matches!(parse_line(line), Err(ParseError::NotJson { .. })),
                "line {line:?} gave {:?}",
                parse_line(line)
            );
        }
    }

    #[test]
    fn not_json_error_quotes_a_bounded_excerpt() {
        let line = "x".repeat(10_000);
        let Err(error) = parse_line(&line) else {
            panic!("a line of x parsed");
        };
        assert!(error.to_string().len() < 400, "{error}");
    }

    #[test]
    fn a_known_type_with_a_broken_shape_is_malformed() {
        assert!(matches!(
            parse_line(r#"{"type":"assistant","message":{"content":[1,2]}}"#),
            Err(ParseError::Malformed { event_type, .. }) if event_type == "assistant"
        ));
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        check(
            "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"m\"}\r",
            Event::Init {
                session_id: Some("s".to_owned()),
                model: Some("m".to_owned()),
            },
        );
    }

    #[test]
    fn summary_of_a_successful_run() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/success-complete.jsonl"
        ));
        assert_eq!(
            summary.session_id.as_deref(),
            Some("5f0c2a4e-1b7d-4c11-9a0e-2d3b6c1e8f00")
        );
        assert_eq!(summary.model.as_deref(), Some("claude-opus-4-8[1m]"));
        assert_eq!(summary.assistant_text_blocks, 2);
        assert_eq!(summary.tool_uses, 1);
        assert_eq!(summary.tool_results, 1);
        assert_eq!(summary.cost_usd(), 0.197);
        assert_eq!(summary.turns(), Some(2));
        assert!(summary.permission_denials().is_empty());
        assert!(summary.result.as_ref().is_some_and(RunResult::is_success));
        assert_eq!(summary.api_retries, 0);
        assert!(!summary.model_fallback_seen);
        assert_eq!(summary.events, 6);
    }

    #[test]
    fn summary_counts_retries_and_fallback() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/overloaded-fallback.jsonl"
        ));
        assert_eq!(summary.api_retries, 3);
        assert_eq!(
            summary.last_api_retry,
            Some((Some(529), Some("overloaded".to_owned())))
        );
        assert!(summary.model_fallback_seen);
        assert_eq!(summary.model_fallback.as_deref(), Some("claude-sonnet-5"));
        assert!(summary.result.as_ref().is_some_and(RunResult::is_success));
    }

    #[test]
    fn summary_keeps_the_last_rejected_rate_limit() {
        let summary = summarize(include_str!(
            "../../tests/fixtures/stream/usage-limit-session.jsonl"
        ));
        let limit = summary.usage_limit.expect("a rejected rate_limit_event");
        assert_eq!(limit.resets_at, Some(1_795_326_126));
        assert_eq!(limit.limit_type.as_deref(), Some("five_hour"));
        assert_eq!(summary.last_agent_error.as_deref(), Some("rate_limit"));
        // The synthetic error message is not phase output.
        assert_eq!(summary.assistant_text_blocks, 0);
    }

    #[test]
    fn a_later_allowed_rate_limit_clears_the_rejection() {
        let mut summary = StreamSummary::default();
        for line in [
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":100,"rateLimitType":"seven_day_opus"}}"#,
            r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","isUsingOverage":false}}"#,
        ] {
            summary.record(parse_line(line).expect("parses"));
        }
        assert_eq!(summary.usage_limit, None);
    }

    #[test]
    fn result_session_id_wins_over_init() {
        let mut summary = StreamSummary::default();
        summary.record(
            parse_line(r#"{"type":"system","subtype":"init","session_id":"a"}"#).expect("parses"),
        );
        summary.record(
            parse_line(
                r#"{"type":"result","subtype":"success","is_error":false,"session_id":"b"}"#,
            )
            .expect("parses"),
        );
        assert_eq!(summary.session_id.as_deref(), Some("b"));
    }

    /// The text block of an assistant line holding `text`, escaped as the
    /// CLI (JavaScript's `JSON.stringify`) would.
    fn text_block_of(text: &str) -> ContentBlock {
        let line = serde_json::json!({
            "type": "assistant",
            "message": {"content": [{"type": "text", "text": text}]}
        });
        let Ok(Event::Assistant { mut blocks, .. }) = parse_line(&line.to_string()) else {
            panic!("an assistant line");
        };
        blocks.remove(0)
    }

    #[test]
    fn a_text_block_keeps_its_trimmed_head() {
        // Escapes everywhere, multi-byte characters at the cut, and leading
        // whitespace longer than the part read first.
        let sentence = "She said \"déjà vu\"\tand left.\n";
        let text = format!("{}{}", "\n ".repeat(3000), sentence.repeat(500));
        let ContentBlock::Text(head) = text_block_of(&text) else {
            panic!("a text block");
        };
        let expected = crate::text::head_bytes(text.trim(), TEXT_HEAD_BYTES).trim_end();
        assert_eq!(head, expected);
        assert!(head.len() > TEXT_HEAD_BYTES - 8, "{}", head.len());
        assert!(head.starts_with("She said \"déjà vu\"\tand left."));

        for short in ["  Done.\n", "Tschüß 👋", "", " \n\t "] {
            assert_eq!(
                text_block_of(short),
                ContentBlock::Text(short.trim().to_owned()),
                "{short:?}"
            );
        }
    }

    #[test]
    fn a_text_head_never_splits_an_escape() {
        // Each cut place in turn: before, inside and after `\n`, `\u00e9`
        // and a surrogate pair (`\ud83d\ude00`, one emoji).
        let written = r#"ab\n\u00e9\ud83d\ude00cd"#;
        let whole: String = serde_json::from_str(&format!("\"{written}\"")).expect("valid");
        for limit in 1..=whole.len() {
            let literal = format!("\"{}\"", written.repeat(1 + 4 * limit));
            let head = head_of_json_string(&literal, limit).expect("a string");
            let full = whole.repeat(1 + 4 * limit);
            let expected = crate::text::head_bytes(&full, limit).trim_end();
            assert_eq!(head, expected, "limit {limit}");
        }
        // What serde_json cannot unescape stays as it was written.
        assert_eq!(
            head_of_json_string(r#""lone \ud83d here""#, 100).as_deref(),
            Some(r"lone \ud83d here")
        );
        assert_eq!(head_of_json_string("42", 100), None);
    }

    #[test]
    fn memory_does_not_grow_with_the_stream() {
        let mut summary = StreamSummary::default();
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"thinking out loud"},{"type":"tool_use","name":"Read","input":{}}]}}"#;
        for _ in 0..10_000 {
            summary.record(parse_line(line).expect("parses"));
        }
        assert_eq!(summary.assistant_text_blocks, 10_000);
        assert_eq!(summary.tool_uses, 10_000);
    }
}
