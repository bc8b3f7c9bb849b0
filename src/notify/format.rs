//! What a webhook receives (docs/design.md §12): one small, readable
//! message per event — what happened, the cycle, its title and cost, the
//! dashboard's URL when the server is on — in the shape each service
//! accepts: the event's own JSON, Slack, ntfy or Discord. Pure.

use serde_json::{Value, json};

use crate::config::WebhookFormat;
use crate::events::{Event, EventKind};
use crate::state::Outcome;
use crate::text::head_chars_with_ellipsis;

/// What the message is about, beyond the event.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// The repository's directory name, to tell several daemons apart.
    pub(crate) repo_name: String,
    /// The web page's URL, when the HTTP server is on.
    pub(crate) dashboard: Option<String>,
}

/// One event in words.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    /// `ralphd · <repo>`.
    pub(crate) title: String,
    /// What happened, in one line.
    pub(crate) headline: String,
    /// Details, one per line (reason, commit, cost…).
    pub(crate) details: Vec<String>,
    /// ntfy's 1 (min) to 5 (max): 4 for what needs a look.
    pub(crate) priority: u8,
    /// ntfy tags (emoji names).
    pub(crate) tags: &'static [&'static str],
    pub(crate) dashboard: Option<String>,
}

/// A request body with its content type and extra headers (ntfy's).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: String,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// The body of `event` (whose redacted JSON line is `json`) for `format`.
pub(crate) fn body(format: WebhookFormat, event: &Event, json: &str, context: &Context) -> Body {
    match format {
        WebhookFormat::Json => Body {
            content_type: "application/json",
            bytes: json.to_owned(),
            headers: Vec::new(),
        },
        WebhookFormat::Slack => json_body(slack(&message(event, context))),
        WebhookFormat::Discord => json_body(discord(&message(event, context))),
        WebhookFormat::Ntfy => ntfy(&message(event, context)),
    }
}

fn json_body(value: Value) -> Body {
    Body {
        content_type: "application/json",
        bytes: value.to_string(),
        headers: Vec::new(),
    }
}

/// The event in words.
pub(crate) fn message(event: &Event, context: &Context) -> Message {
    let mut message = Message {
        title: if context.repo_name.is_empty() {
            "ralphd".to_owned()
        } else {
            format!("ralphd · {}", context.repo_name)
        },
        headline: String::new(),
        details: Vec::new(),
        priority: 3,
        tags: &[],
        dashboard: context.dashboard.clone(),
    };
    let details = &mut message.details;
    message.headline = match &event.kind {
        EventKind::DaemonStarted {
            pid,
            version,
            branch,
            dashboard,
            ..
        } => {
            if message.dashboard.is_none() {
                message.dashboard.clone_from(dashboard);
            }
            message.tags = &["arrow_forward"];
            details.push(format!("pid {pid}, ralphd {version}"));
            format!("started on branch {branch}")
        }
        EventKind::CycleStarted { cycle } => format!("cycle {cycle} started"),
        EventKind::PhaseStarted {
            cycle,
            phase,
            attempt,
        } => match attempt {
            1 => format!("cycle {cycle}: {phase} started"),
            _ => format!("cycle {cycle}: {phase} started (attempt {attempt})"),
        },
        EventKind::AgentText { cycle, phase, text } => {
            format!("cycle {cycle} · {phase}: {}", one_line(text, 300))
        }
        EventKind::ToolUse {
            cycle,
            phase,
            tool,
            summary,
        } => format!("cycle {cycle} · {phase}: {tool} {}", one_line(summary, 200)),
        EventKind::PhaseFinished {
            cycle,
            phase,
            status,
            duration_ms,
            cost_usd,
            error,
            ..
        } => {
            details.push(format!(
                "took {} · cost ${cost_usd:.2}",
                seconds(*duration_ms)
            ));
            details.extend(error.iter().map(|error| one_line(error, 300)));
            format!("cycle {cycle}: {phase} {status}")
        }
        EventKind::CheckFinished {
            cycle,
            command,
            exit,
            passed,
            duration_ms,
        } => {
            details.push(format!("took {}", seconds(*duration_ms)));
            let verdict = if *passed { "passed" } else { "failed" };
            let exit = exit.map_or("killed".to_owned(), |code| format!("exit {code}"));
            format!(
                "cycle {cycle}: check `{}` {verdict} ({exit})",
                one_line(command, 100)
            )
        }
        EventKind::CycleFinished {
            cycle,
            outcome,
            title,
            reason,
            commit,
            attempt_ref,
            cost_usd,
            duration_ms,
        } => {
            let landed = matches!(outcome, Outcome::Committed | Outcome::Complete);
            message.tags = if landed {
                &["white_check_mark"]
            } else {
                &["x"]
            };
            message.priority = if landed { 3 } else { 2 };
            details.extend(reason.iter().map(|reason| one_line(reason, 300)));
            if let Some(commit) = commit {
                details.push(format!("commit {}", crate::text::head_chars(commit, 12)));
            }
            if let Some(attempt) = attempt_ref {
                details.push(format!("attempt saved as {attempt}"));
            }
            details.push(format!(
                "cost ${cost_usd:.2} · took {}",
                seconds(*duration_ms)
            ));
            let outcome = outcome.name().replace('_', " ");
            match title {
                Some(title) => format!("cycle {cycle} {outcome}: {}", one_line(title, 200)),
                None => format!("cycle {cycle} {outcome}"),
            }
        }
        EventKind::Waiting { detail, until, .. } => format!("waiting: {detail} until {until}"),
        EventKind::BreakerChanged { state, detail } => {
            if state == "open" {
                message.priority = 4;
                message.tags = &["warning"];
            }
            details.push(one_line(detail, 400));
            format!("circuit breaker {}", state.replace('_', "-"))
        }
        EventKind::Paused {} => "paused".to_owned(),
        EventKind::Resumed {} => "resumed".to_owned(),
        EventKind::StopRequested {} => "stop requested: stopping after this cycle".to_owned(),
        EventKind::DaemonStopped {
            exit_code,
            reason,
            digest,
        } => {
            (message.priority, message.tags) = match exit_code {
                0 => (3, &["white_check_mark"][..]),
                1 => (3, &["stop_sign"][..]),
                _ => (4, &["rotating_light"][..]),
            };
            details.extend(digest.as_ref().and_then(digest_line));
            format!("stopped: {}", one_line(reason, 400))
        }
        EventKind::Stalled {
            since,
            cycles_without_commit,
            cost_usd,
        } => {
            message.priority = 4;
            message.tags = &["hourglass", "warning"];
            details.push(format!(
                "{cycles_without_commit} cycles since then, none committed · cost ${cost_usd:.2}"
            ));
            format!("stalled: no verified commit since {since}")
        }
    };
    message
}

/// Slack incoming webhook: `text` (the notification) and blocks.
pub(crate) fn slack(message: &Message) -> Value {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut section = format!(
        "*{}*\n{}",
        escape(&message.title),
        escape(&message.headline)
    );
    for line in &message.details {
        section.push('\n');
        section.push_str(&escape(line));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": head_chars_with_ellipsis(&section, 2900)},
    })];
    if let Some(url) = &message.dashboard {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{url}|dashboard>")}],
        }));
    }
    json!({
        "text": escape(&format!("{}: {}", message.title, message.headline)),
        "blocks": blocks,
    })
}

/// Discord webhook: `content` and one embed; mentions in agent text never
/// ping anyone.
pub(crate) fn discord(message: &Message) -> Value {
    let mut embed = json!({
        "title": head_chars_with_ellipsis(&message.headline, 256),
        "color": if message.priority >= 4 { 0x00E0_3E3E } else { 0x0058_65F2 },
    });
    if !message.details.is_empty() {
        embed["description"] = json!(head_chars_with_ellipsis(&message.details.join("\n"), 4000));
    }
    if let Some(url) = &message.dashboard {
        embed["url"] = json!(url);
    }
    json!({
        "content": head_chars_with_ellipsis(&format!("**{}**: {}", message.title, message.headline), 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
}

/// ntfy: a plain-text body with `Title`, `Priority`, `Tags` and `Click`
/// headers. Header values are ASCII: a title that is not is sent as an
/// RFC 2047 encoded word, which ntfy decodes.
pub(crate) fn ntfy(message: &Message) -> Body {
    let mut text = message.headline.clone();
    for line in &message.details {
        text.push('\n');
        text.push_str(line);
    }
    if let Some(url) = &message.dashboard {
        text.push_str(&format!("\n{url}"));
    }
    let mut headers = vec![
        ("Title", header_text(&message.title)),
        ("Priority", message.priority.to_string()),
    ];
    if !message.tags.is_empty() {
        headers.push(("Tags", message.tags.join(",")));
    }
    if let Some(url) = &message.dashboard {
        headers.push(("Click", url.clone()));
    }
    Body {
        content_type: "text/plain; charset=utf-8",
        bytes: text,
        headers,
    }
}

/// A header value: printable ASCII as is, anything else as an RFC 2047
/// encoded word (`=?UTF-8?B?…?=`).
fn header_text(text: &str) -> String {
    if text.bytes().all(|byte| (0x20..0x7f).contains(&byte)) {
        return text.to_owned();
    }
    format!("=?UTF-8?B?{}?=", base64(text.as_bytes()))
}

/// Standard base64 with padding (a title's worth of bytes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, byte)| {
            word | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(word >> (18 - 6 * index) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The run in one line from its digest (`ralphd report --format json`):
/// `6 cycles: 2 committed, 3 rolled back, 1 failed · cost $1.25`.
fn digest_line(digest: &Value) -> Option<String> {
    let total = digest.pointer("/cycles/total")?.as_u64()?;
    let outcomes: Vec<String> = digest
        .pointer("/cycles/by_outcome")
        .and_then(Value::as_object)
        .map(|by_outcome| {
            by_outcome
                .iter()
                .filter_map(|(outcome, count)| {
                    Some(format!("{} {}", count.as_u64()?, outcome.replace('_', " ")))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut line = match (total, outcomes.is_empty()) {
        (1, true) => "1 cycle".to_owned(),
        (_, true) => format!("{total} cycles"),
        (1, false) => format!("1 cycle: {}", outcomes.join(", ")),
        (_, false) => format!("{total} cycles: {}", outcomes.join(", ")),
    };
    if let Some(usd) = digest.pointer("/cost/usd").and_then(Value::as_f64) {
        line.push_str(&format!(" · cost ${usd:.2}"));
    }
    Some(line)
}

/// The first line of `text`, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    head_chars_with_ellipsis(line.trim(), max)
}

/// `3m 12s` from milliseconds.
fn seconds(milliseconds: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(milliseconds / 1000)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            id: 7,
            at: "2026-12-01T02:00:00.000Z".to_owned(),
            kind,
        }
    }

    fn committed() -> Event {
        event(EventKind::CycleFinished {
            cycle: 12,
            outcome: Outcome::Committed,
            title: Some("Parse <dates> & times".to_owned()),
            reason: Some("the checks passed and the agent said pass".to_owned()),
            commit: Some("0123456789abcdef0123".to_owned()),
            attempt_ref: None,
            cost_usd: 0.4213,
            duration_ms: 192_000,
        })
    }

    fn context() -> Context {
        Context {
            repo_name: "parser".to_owned(),
            dashboard: Some("http://127.0.0.1:41234/".to_owned()),
        }
    }

    #[test]
    fn a_committed_cycle_reads_as_what_happened_its_title_commit_cost_and_dashboard() {
        let message = message(&committed(), &context());
        assert_eq!(message.title, "ralphd · parser");
        assert_eq!(
            message.headline,
            "cycle 12 committed: Parse <dates> & times"
        );
        assert_eq!(
            message.details,
            [
                "the checks passed and the agent said pass",
                "commit 0123456789ab",
                "cost $0.42 · took 3m 12s"
            ]
        );
        assert_eq!(
            message.dashboard.as_deref(),
            Some("http://127.0.0.1:41234/")
        );
    }

    #[test]
    fn the_json_format_is_the_event_line_as_is() {
        let line = r#"{"id":7,"type":"paused"}"#;
        let body = body(
            WebhookFormat::Json,
            &event(EventKind::Paused {}),
            line,
            &context(),
        );
        assert_eq!(body.bytes, line);
        assert_eq!(body.content_type, "application/json");
    }

    #[test]
    fn slack_gets_text_and_mrkdwn_blocks_with_its_special_characters_escaped() {
        let body = body(WebhookFormat::Slack, &committed(), "", &context());
        let value: Value = serde_json::from_str(&body.bytes).unwrap();
        assert_eq!(
            value["text"],
            "ralphd · parser: cycle 12 committed: Parse &lt;dates&gt; &amp; times"
        );
        let blocks = value["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        let section = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(
            section.starts_with("*ralphd · parser*\ncycle 12 committed"),
            "{section}"
        );
        assert!(section.contains("cost $0.42"), "{section}");
        assert_eq!(blocks[1]["type"], "context");
        assert_eq!(
            blocks[1]["elements"][0]["text"],
            "<http://127.0.0.1:41234/|dashboard>"
        );
    }

    #[test]
    fn discord_gets_content_and_an_embed_and_pings_nobody() {
        let body = body(WebhookFormat::Discord, &committed(), "", &context());
        let value: Value = serde_json::from_str(&body.bytes).unwrap();
        assert_eq!(
            value["content"],
            "**ralphd · parser**: cycle 12 committed: Parse <dates> & times"
        );
        let embed = &value["embeds"][0];
        assert_eq!(embed["title"], "cycle 12 committed: Parse <dates> & times");
        assert!(
            embed["description"]
                .as_str()
                .unwrap()
                .contains("commit 0123456789ab")
        );
        assert_eq!(embed["url"], "http://127.0.0.1:41234/");
        assert!(embed["color"].is_u64());
        assert_eq!(value["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn ntfy_gets_plain_text_with_title_priority_tags_and_click_headers() {
        let stopped = event(EventKind::DaemonStopped {
            exit_code: 3,
            reason: "halted by a guard (budget or circuit breaker) (exit 3)".to_owned(),
            digest: Some(json!({
                "cycles": {"total": 6, "by_outcome": {"committed": 2, "rolled_back": 3, "failed": 1}},
                "cost": {"usd": 1.25},
            })),
        });
        let body = body(WebhookFormat::Ntfy, &stopped, "", &context());
        assert_eq!(body.content_type, "text/plain; charset=utf-8");
        assert_eq!(
            body.bytes,
            "stopped: halted by a guard (budget or circuit breaker) (exit 3)\n\
             6 cycles: 2 committed, 3 rolled back, 1 failed · cost $1.25\n\
             http://127.0.0.1:41234/"
        );
        let header = |name: &str| {
            body.headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| value.as_str())
        };
        // "ralphd · parser" is not ASCII: an RFC 2047 encoded word.
        assert_eq!(
            header("Title"),
            Some("=?UTF-8?B?cmFscGhkIMK3IHBhcnNlcg==?=")
        );
        assert_eq!(header("Priority"), Some("4"));
        assert_eq!(header("Tags"), Some("rotating_light"));
        assert_eq!(header("Click"), Some("http://127.0.0.1:41234/"));
    }

    #[test]
    fn stalled_and_an_open_breaker_ask_for_a_look() {
        let stalled = message(
            &event(EventKind::Stalled {
                since: "2026-12-01T00:00:00Z".to_owned(),
                cycles_without_commit: 18,
                cost_usd: 4.2,
            }),
            &Context::default(),
        );
        assert_eq!(stalled.title, "ralphd");
        assert_eq!(
            stalled.headline,
            "stalled: no verified commit since 2026-12-01T00:00:00Z"
        );
        assert_eq!(
            stalled.details,
            ["18 cycles since then, none committed · cost $4.20"]
        );
        assert_eq!(stalled.priority, 4);
        let open = message(
            &event(EventKind::BreakerChanged {
                state: "open".to_owned(),
                detail: "open until 03:00 — cycle 4: failed".to_owned(),
            }),
            &Context::default(),
        );
        assert_eq!(open.headline, "circuit breaker open");
        assert_eq!(open.priority, 4);
    }
}
