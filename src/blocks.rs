//! Text rules applied to a phase's final result text: the completion marker,
//! the fenced JSON blocks that end the backtest and report answers, and the
//! idea's title.
//!
//! Pure functions on `&str`: no I/O, no knowledge of the agent or of git. The
//! caller passes only the `result` text of a successful run, never tool
//! output or the prompt (see docs/design.md §4 "Completion").

use std::fmt;

use serde::Deserialize;

/// The line an agent writes, alone, to declare the work complete.
pub(crate) const COMPLETION_MARKER: &str = "<promise>COMPLETE</promise>";

/// Longest idea title, in characters (a commit subject line).
pub(crate) const TITLE_MAX_CHARS: usize = 72;

/// True when some line of `result_text`, trimmed, is exactly the marker.
///
/// The marker quoted inside a sentence does not count.
pub(crate) fn is_completion(result_text: &str) -> bool {
    result_text
        .lines()
        .any(|line| line.trim() == COMPLETION_MARKER)
}

/// The body of the last fenced JSON block of `text`, trimmed.
///
/// A fence tagged `json` always counts (so that an invalid body is reported,
/// not skipped); an untagged fence counts only when its body is a JSON
/// object; fences tagged with another language never count. Both ``` and
/// ~~~ fences are accepted, indented or not, and an unclosed fence runs to
/// the end of the text (as in CommonMark).
pub(crate) fn last_fenced_json_block(text: &str) -> Option<&str> {
    let mut last = None;
    let mut open: Option<OpenFence<'_>> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim();
        match &open {
            Some(fence) => {
                if fence.is_closed_by(trimmed) {
                    let body = &text[fence.body_start..line_start];
                    if fence.holds_json(body) {
                        last = Some(body.trim());
                    }
                    open = None;
                }
            }
            None => open = OpenFence::parse(trimmed, offset),
        }
    }
    if let Some(fence) = open {
        let body = &text[fence.body_start..];
        if fence.holds_json(body) {
            last = Some(body.trim());
        }
    }
    last
}

/// An opening code fence and where its body starts.
struct OpenFence<'a> {
    fence_char: char,
    fence_len: usize,
    info: &'a str,
    body_start: usize,
}

impl<'a> OpenFence<'a> {
    fn parse(trimmed_line: &'a str, body_start: usize) -> Option<OpenFence<'a>> {
        let fence_char = trimmed_line
            .chars()
            .next()
            .filter(|c| *c == '`' || *c == '~')?;
        let fence_len = trimmed_line.len() - trimmed_line.trim_start_matches(fence_char).len();
        if fence_len < 3 {
            return None;
        }
        let info = trimmed_line[fence_len..].trim();
        // CommonMark: a backtick fence's info string has no backtick.
        if fence_char == '`' && info.contains('`') {
            return None;
        }
        Some(OpenFence {
            fence_char,
            fence_len,
            info,
            body_start,
        })
    }

    fn is_closed_by(&self, trimmed_line: &str) -> bool {
        trimmed_line.len() >= self.fence_len && trimmed_line.chars().all(|c| c == self.fence_char)
    }

    fn holds_json(&self, body: &str) -> bool {
        let language = self.info.split_whitespace().next().unwrap_or("");
        if language.is_empty() {
            return serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|value| value.is_object());
        }
        language.eq_ignore_ascii_case("json")
    }
}

/// Why a fenced block could not be used; the caller logs it and carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BlockError {
    #[error("no fenced ```json {block} block at the end of the answer")]
    Missing { block: &'static str },
    #[error("invalid {block} block: {detail}")]
    Invalid { block: &'static str, detail: String },
}

/// The agent's judgement at the end of the backtest phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BacktestVerdict {
    pub(crate) verdict: Verdict,
    /// Empty when the block gave none.
    pub(crate) reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        })
    }
}

/// Parses the last fenced JSON block of a backtest answer:
/// `{"verdict":"pass"|"fail","reason":"…"}` (the verdict's case is ignored).
pub(crate) fn parse_backtest_verdict(result_text: &str) -> Result<BacktestVerdict, BlockError> {
    const BLOCK: &str = "backtest verdict";

    #[derive(Deserialize)]
    struct RawVerdict {
        verdict: String,
        #[serde(default)]
        reason: Option<String>,
    }

    let raw: RawVerdict = parse_block(result_text, BLOCK)?;
    let verdict = match raw.verdict.trim().to_ascii_lowercase().as_str() {
        "pass" => Verdict::Pass,
        "fail" => Verdict::Fail,
        _ => {
            return Err(BlockError::Invalid {
                block: BLOCK,
                detail: format!(
                    "verdict is {:?}, expected \"pass\" or \"fail\"",
                    raw.verdict
                ),
            });
        }
    };
    Ok(BacktestVerdict {
        verdict,
        reason: raw.reason.unwrap_or_default(),
    })
}

/// The agent's summary at the end of the report phase.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct ReportBlock {
    pub(crate) summary: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) learnings: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) patterns: Vec<String>,
    /// The prd.json story this cycle worked on, if any.
    #[serde(default)]
    pub(crate) story: Option<StoryUpdate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct StoryUpdate {
    pub(crate) id: String,
    pub(crate) passes: bool,
}

/// Parses the last fenced JSON block of a report answer:
/// `{"summary":…, "learnings":[…], "patterns":[…], "story":{"id":…,"passes":…}}`.
pub(crate) fn parse_report_block(result_text: &str) -> Result<ReportBlock, BlockError> {
    parse_block(result_text, "report")
}

fn parse_block<T: serde::de::DeserializeOwned>(
    result_text: &str,
    block: &'static str,
) -> Result<T, BlockError> {
    let body = last_fenced_json_block(result_text).ok_or(BlockError::Missing { block })?;
    serde_json::from_str(body).map_err(|error| BlockError::Invalid {
        block,
        detail: error.to_string(),
    })
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The title of an idea: the text after `TITLE:` on the first line that has
/// one (markdown emphasis and heading marks around it are ignored), else the
/// first non-empty line; at most [`TITLE_MAX_CHARS`] characters, one line.
pub(crate) fn idea_title(idea_text: &str) -> String {
    let mut first_line = None;
    for line in idea_text.lines().map(strip_decoration) {
        match line.get(..6) {
            Some(prefix) if prefix.eq_ignore_ascii_case("title:") => {
                let title = strip_decoration(&line[6..]);
                if !title.is_empty() {
                    return truncate_chars(title, TITLE_MAX_CHARS);
                }
            }
            _ if first_line.is_none() && !line.is_empty() => first_line = Some(line),
            _ => {}
        }
    }
    match first_line {
        Some(line) => truncate_chars(line, TITLE_MAX_CHARS),
        None => "untitled change".to_owned(),
    }
}

/// Trims whitespace and the markdown marks a model puts around a line.
fn strip_decoration(line: &str) -> &str {
    line.trim_matches(|c: char| c.is_whitespace() || matches!(c, '#' | '*' | '>'))
}

/// At most `max_chars` characters, with control characters as spaces and an
/// ellipsis when cut.
fn truncate_chars(text: &str, max_chars: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.chars().count() <= max_chars {
        return cleaned;
    }
    format!(
        "{}…",
        crate::text::head_chars(&cleaned, max_chars - 1).trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_marker() {
        #[track_caller]
        fn check(text: &str, expected: bool) {
            assert_eq!(is_completion(text), expected, "text: {text:?}");
        }
        check("<promise>COMPLETE</promise>", true);
        check("All stories pass.\n<promise>COMPLETE</promise>", true);
        check(
            "All stories pass.\n   <promise>COMPLETE</promise>  \t\nbye",
            true,
        );
        check("done\r\n<promise>COMPLETE</promise>\r\n", true);
        check("<promise>COMPLETE</promise>\r", true);
        check("I will print <promise>COMPLETE</promise> when done.", false);
        check("<promise>COMPLETE</promise>.", false);
        check("`<promise>COMPLETE</promise>`", false);
        check("<promise>COMP\nLETE</promise>", false);
        check("<promise>\nCOMPLETE\n</promise>", false);
        check("<promise>complete</promise>", false);
        check(
            "<promise>COMPLETE</promise><promise>COMPLETE</promise>",
            false,
        );
        check("", false);
    }

    #[test]
    fn last_json_fence_wins() {
        let text = "First:\n```json\n{\"verdict\":\"fail\",\"reason\":\"old\"}\n```\nThen:\n```json\n{\"verdict\":\"pass\",\"reason\":\"new\"}\n```\n";
        assert_eq!(
            last_fenced_json_block(text),
            Some("{\"verdict\":\"pass\",\"reason\":\"new\"}")
        );
    }

    #[test]
    fn fence_selection() {
        #[track_caller]
        fn check(text: &str, expected: Option<&str>) {
            assert_eq!(last_fenced_json_block(text), expected, "text: {text:?}");
        }
        // A bare fence holding an object counts.
        check("x\n```\n{\"a\":1}\n```", Some("{\"a\":1}"));
        // A bare fence holding something else does not.
        check(
            "```json\n{\"a\":1}\n```\n```\nnot json\n```",
            Some("{\"a\":1}"),
        );
        check("```\n[1,2]\n```", None);
        // Another language never counts, even with JSON inside.
        check(
            "```json\n{\"a\":1}\n```\n```rust\n{\"b\":2}\n```",
            Some("{\"a\":1}"),
        );
        // A json tag counts even when its body is invalid, so it can be reported.
        check(
            "```json\n{\"a\":1}\n```\n```json\n{oops\n```",
            Some("{oops"),
        );
        // Tag case, indentation, CRLF, longer and tilde fences.
        check("  ```JSON\r\n  {\"a\":1}\r\n  ```\r\n", Some("{\"a\":1}"));
        check("````json\n{\"a\":\"```\"}\n````", Some("{\"a\":\"```\"}"));
        check("~~~json\n{\"a\":1}\n~~~", Some("{\"a\":1}"));
        // A closing fence needs at least as many fence characters.
        check("````json\n{\"a\":1}\n```\n````", Some("{\"a\":1}\n```"));
        // An unclosed fence runs to the end.
        check("verdict:\n```json\n{\"a\":1}\n", Some("{\"a\":1}"));
        check("no fences at all {\"a\":1}", None);
        check("", None);
    }

    #[test]
    fn backtest_verdicts() {
        #[track_caller]
        fn check(text: &str, expected: Result<BacktestVerdict, BlockError>) {
            assert_eq!(parse_backtest_verdict(text), expected, "text: {text:?}");
        }
        let pass = |reason: &str| {
            Ok(BacktestVerdict {
                verdict: Verdict::Pass,
                reason: reason.to_owned(),
            })
        };
        check(
            "All good.\n```json\n{\"verdict\":\"pass\",\"reason\":\"tests pass\"}\n```",
            pass("tests pass"),
        );
        check("```json\n{\"verdict\":\"PASS\"}\n```", pass(""));
        check(
            "```json\n{\"verdict\":\"pass\",\"reason\":\"x\"}\n```\nOn second thought:\n```json\n{\"verdict\":\"fail\",\"reason\":\"flaky\"}\n```",
            Ok(BacktestVerdict {
                verdict: Verdict::Fail,
                reason: "flaky".to_owned(),
            }),
        );
        check(
            "I think it passes.",
            Err(BlockError::Missing {
                block: "backtest verdict",
            }),
        );
        assert!(matches!(
            parse_backtest_verdict("```json\n{\"verdict\":\"pass\",}\n```"),
            Err(BlockError::Invalid { .. })
        ));
        assert!(matches!(
            parse_backtest_verdict("```json\n{\"verdict\":\"maybe\"}\n```"),
            Err(BlockError::Invalid { detail, .. }) if detail.contains("maybe")
        ));
        assert!(matches!(
            parse_backtest_verdict("```json\n{\"reason\":\"no verdict\"}\n```"),
            Err(BlockError::Invalid { detail, .. }) if detail.contains("verdict")
        ));
    }

    #[test]
    fn report_blocks() {
        let text = "## Report\nDid things.\n```json\n{\"summary\":\"Added retries\",\"learnings\":[\"tests are slow\"],\"patterns\":[\"use anyhow\"],\"story\":{\"id\":\"US-002\",\"passes\":true},\"extra\":1}\n```\n";
        assert_eq!(
            parse_report_block(text),
            Ok(ReportBlock {
                summary: "Added retries".to_owned(),
                learnings: vec!["tests are slow".to_owned()],
                patterns: vec!["use anyhow".to_owned()],
                story: Some(StoryUpdate {
                    id: "US-002".to_owned(),
                    passes: true,
                }),
            })
        );
        assert_eq!(
            parse_report_block(
                "```json\n{\"summary\":\"s\",\"learnings\":null,\"story\":null}\n```"
            ),
            Ok(ReportBlock {
                summary: "s".to_owned(),
                learnings: vec![],
                patterns: vec![],
                story: None,
            })
        );
        assert_eq!(
            parse_report_block("no block"),
            Err(BlockError::Missing { block: "report" })
        );
        assert!(matches!(
            parse_report_block("```json\n{\"learnings\":[]}\n```"),
            Err(BlockError::Invalid { block: "report", detail }) if detail.contains("summary")
        ));
        assert!(matches!(
            parse_report_block("```json\n{\"summary\":\"s\",\"story\":{\"id\":\"US-1\"}}\n```"),
            Err(BlockError::Invalid { .. })
        ));
    }

    #[test]
    fn block_errors_read_well() {
        assert_eq!(
            BlockError::Missing { block: "report" }.to_string(),
            "no fenced ```json report block at the end of the answer"
        );
    }

    #[test]
    fn idea_titles() {
        #[track_caller]
        fn check(text: &str, expected: &str) {
            assert_eq!(idea_title(text), expected, "text: {text:?}");
        }
        check(
            "TITLE: Add retry to the fetcher\n\nDetails…",
            "Add retry to the fetcher",
        );
        check(
            "\n\n  title:   Cache the parsed config  \r\nmore",
            "Cache the parsed config",
        );
        check("**TITLE:** Split the parser", "Split the parser");
        check("# TITLE: Split the parser", "Split the parser");
        check("I looked around.\nTITLE: Late title\n", "Late title");
        check("TITLE:\nFix the flaky test", "Fix the flaky test");
        check(
            "TITLE: `Config::load` reads env",
            "`Config::load` reads env",
        );
        check(
            "\n\n## Improve error messages\nbody",
            "Improve error messages",
        );
        check("", "untitled change");
        check(" \n\t\n", "untitled change");
        let long = format!("TITLE: {}", "word ".repeat(30));
        let title = idea_title(&long);
        assert_eq!(title.chars().count(), TITLE_MAX_CHARS);
        assert!(title.ends_with(" w…"), "{title}");
        let exact = "é".repeat(TITLE_MAX_CHARS);
        check(&exact, &exact);
        check("TITLE: tab\there", "tab here");
    }
}
