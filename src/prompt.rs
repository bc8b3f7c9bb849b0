//! Renders the phase prompt templates from a [`PromptContext`].
//!
//! The template language is deliberately tiny: `{{name}}` inserts a variable, and
//! `{{#name}} … {{/name}}` keeps its body only when the variable is non-empty, so that
//! an empty context leaves no dangling headings. A section tag alone on its line
//! takes the whole line with it. There are no loops, no escapes and no other syntax.
//!
//! Inserted values are never parsed again, so an earlier phase's output that happens
//! to contain `{{…}}` stays as it is. Unknown placeholders are kept verbatim and
//! reported, so that the caller can log a typo in a user's override. Pure: no I/O.

use std::fmt::Write as _;

/// Everything a template can refer to. The caller fills it; an empty field means
/// "not available in this phase" and makes its optional section disappear.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PromptContext {
    /// Absolute path of the repository being improved.
    pub(crate) repo: String,
    pub(crate) branch: String,
    pub(crate) cycle: u64,
    /// The phase's name, as written by `Phase::name`.
    pub(crate) phase: String,
    /// The text of `<home>/PROMPT.md`, or empty.
    pub(crate) steering: String,
    /// Learnings from progress.json, most recent last; only the last
    /// [`MAX_LEARNINGS`] are shown.
    pub(crate) learnings: Vec<String>,
    /// Codebase patterns from progress.json; only the last [`MAX_PATTERNS`] are shown.
    pub(crate) patterns: Vec<String>,
    /// The last cycles' titles, outcomes and reasons, one line each, oldest
    /// first (see `record::recent_outcomes`), so a rejected approach is not
    /// retried blindly.
    pub(crate) recent_outcomes: Vec<String>,
    /// The stories of prd.json that do not pass yet, in any order.
    pub(crate) open_stories: Vec<StoryBrief>,
    /// The final texts of this cycle's earlier phases, empty when not run (yet).
    pub(crate) scan: String,
    pub(crate) idea: String,
    pub(crate) code_edit: String,
    /// What changed since the cycle's start commit, as the daemon measured it.
    pub(crate) diff_summary: String,
    /// The results of the configured checks, in the order they ran.
    pub(crate) checks: Vec<CheckBrief>,
    pub(crate) backtest: String,
    /// What the daemon decided for this cycle, e.g. `pass: all checks passed`.
    pub(crate) verdict: String,
    /// The completion marker; templates reach it only through `{{marker}}`.
    pub(crate) marker: String,
}

/// One open story of prd.json, as much of it as a prompt needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoryBrief {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) acceptance_criteria: Vec<String>,
    /// Lower numbers come first; stories without a priority come last.
    pub(crate) priority: Option<i64>,
}

/// The result of one configured check command, run by the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CheckBrief {
    pub(crate) command: String,
    /// `None` when the command was killed (by a signal or after a timeout).
    pub(crate) exit_code: Option<i32>,
    pub(crate) timed_out: bool,
    /// The end of the command's combined output.
    pub(crate) output_tail: String,
}

impl CheckBrief {
    fn passed(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    fn status(&self) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => "timed out".to_owned(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "killed (no exit code)".to_owned(),
        }
    }
}

/// A rendered prompt, and the placeholders that were not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) text: String,
    /// Each placeholder left in the text because it was not understood, once, in
    /// order of appearance: `name` for an unknown variable, `#name` for an unknown
    /// or unclosed section, `/name` for a close without its open.
    pub(crate) unknown: Vec<String>,
    /// The variables inserted with only part of their text because it was
    /// longer than [`MAX_TEXT_BYTES`], once, in order of appearance. (Showing
    /// only the most recent learnings and patterns and the first stories is
    /// the design, not a cut.)
    pub(crate) truncated: Vec<&'static str>,
}

/// A variable's text, and whether a cap cut something off it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Capped {
    text: String,
    cut: bool,
}

impl Capped {
    fn whole(text: String) -> Capped {
        Capped { text, cut: false }
    }

    /// Caps the text further with [`keep_tail`]; cut if either cut.
    fn keep_tail(self, max_bytes: usize) -> Capped {
        let tail = keep_tail(&self.text, max_bytes);
        Capped {
            text: tail.text,
            cut: self.cut || tail.cut,
        }
    }
}

#[cfg(test)]
/// The variable names a template may use, in the order of [`PromptContext`].
pub(crate) const VARIABLES: [&str; 17] = [
    "repo",
    "branch",
    "cycle",
    "phase",
    "steering",
    "learnings",
    "patterns",
    "recent_outcomes",
    "stories",
    "scan",
    "idea",
    "code_edit",
    "diff_summary",
    "checks",
    "backtest",
    "verdict",
    "marker",
];

/// The most bytes any one inserted text (a phase output, a check's output, the
/// steering text, a list) may take, so that prompts stay bounded.
pub(crate) const MAX_TEXT_BYTES: usize = 16 * 1024;
/// How many of the most recent learnings a prompt shows.
pub(crate) const MAX_LEARNINGS: usize = 15;
/// How many of the most recent patterns a prompt shows.
pub(crate) const MAX_PATTERNS: usize = 30;
/// How many open stories a prompt lists, highest priority first.
pub(crate) const MAX_STORIES: usize = 20;

/// Marks the place where a capped text was cut.
const TRUNCATED: &str = "[… truncated]";
/// How far a cut may move to land on a line boundary.
const LINE_SLACK: usize = 512;
/// The longest text between `{{` and `}}` that can still be a placeholder.
const MAX_TAG_LEN: usize = 64;

/// Renders `template` with the values of `ctx`.
pub(crate) fn render(template: &str, ctx: &PromptContext) -> Rendered {
    let values = capped_variables(ctx);
    let mut rendered = Rendered {
        text: String::with_capacity(template.len()),
        unknown: Vec::new(),
        truncated: Vec::new(),
    };
    render_range(template, 0, template.len(), &values, &mut rendered);
    rendered
}

/// The value of every variable, as text, in the order of [`VARIABLES`].
#[cfg(test)]
fn variables(ctx: &PromptContext) -> [(&'static str, String); 17] {
    capped_variables(ctx).map(|(name, value)| (name, value.text))
}

/// The value of every variable, capped, in the order of [`PromptContext`].
fn capped_variables(ctx: &PromptContext) -> [(&'static str, Capped); 17] {
    [
        ("repo", Capped::whole(ctx.repo.clone())),
        ("branch", Capped::whole(ctx.branch.clone())),
        ("cycle", Capped::whole(ctx.cycle.to_string())),
        ("phase", Capped::whole(ctx.phase.clone())),
        ("steering", keep_head(ctx.steering.trim(), MAX_TEXT_BYTES)),
        (
            "learnings",
            bullets(&ctx.learnings, MAX_LEARNINGS).keep_tail(MAX_TEXT_BYTES),
        ),
        (
            "patterns",
            bullets(&ctx.patterns, MAX_PATTERNS).keep_tail(MAX_TEXT_BYTES),
        ),
        (
            "recent_outcomes",
            bullets(&ctx.recent_outcomes, MAX_PATTERNS).keep_tail(MAX_TEXT_BYTES),
        ),
        ("stories", story_list(&ctx.open_stories)),
        ("scan", keep_tail(ctx.scan.trim(), MAX_TEXT_BYTES)),
        ("idea", keep_tail(ctx.idea.trim(), MAX_TEXT_BYTES)),
        ("code_edit", keep_tail(ctx.code_edit.trim(), MAX_TEXT_BYTES)),
        (
            "diff_summary",
            keep_tail(ctx.diff_summary.trim(), MAX_TEXT_BYTES),
        ),
        ("checks", check_report(&ctx.checks)),
        ("backtest", keep_tail(ctx.backtest.trim(), MAX_TEXT_BYTES)),
        ("verdict", keep_head(ctx.verdict.trim(), MAX_TEXT_BYTES)),
        ("marker", Capped::whole(ctx.marker.clone())),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagKind {
    Variable,
    Open,
    Close,
}

/// One `{{…}}` placeholder: its kind, its name and its byte range in the template.
#[derive(Clone, Copy, Debug)]
struct Tag<'t> {
    kind: TagKind,
    name: &'t str,
    start: usize,
    end: usize,
}

impl Tag<'_> {
    /// How the tag is reported when it is not understood.
    fn describe(&self) -> String {
        let sigil = match self.kind {
            TagKind::Variable => "",
            TagKind::Open => "#",
            TagKind::Close => "/",
        };
        format!("{sigil}{}", self.name)
    }
}

/// Renders `template[pos..end]` into `rendered`; section bodies recurse.
fn render_range(
    template: &str,
    mut pos: usize,
    end: usize,
    values: &[(&'static str, Capped)],
    rendered: &mut Rendered,
) {
    while pos < end {
        let Some(offset) = template[pos..end].find("{{") else {
            rendered.text.push_str(&template[pos..end]);
            return;
        };
        let tag_start = pos + offset;
        let Some(tag) = parse_tag(template, tag_start, end) else {
            // Not a placeholder (`{{` in code or JSON): keep the braces and move on.
            rendered.text.push_str(&template[pos..tag_start + 2]);
            pos = tag_start + 2;
            continue;
        };
        let entry = values.iter().find(|(name, _)| *name == tag.name);
        let value = entry.map(|(_, value)| value.text.as_str());
        let close = match (tag.kind, value) {
            (TagKind::Open, Some(_)) => find_close(template, tag.name, tag.end, end),
            _ => None,
        };
        match (tag.kind, value, close) {
            (TagKind::Variable, Some(value), _) => {
                rendered.text.push_str(&template[pos..tag.start]);
                rendered.text.push_str(value);
                if let Some((name, capped)) = entry
                    && capped.cut
                    && !rendered.truncated.contains(name)
                {
                    rendered.truncated.push(name);
                }
                pos = tag.end;
            }
            (TagKind::Open, Some(value), Some(close)) => {
                let (text_end, body_start) =
                    standalone_line(template, &tag, pos, end).unwrap_or((tag.start, tag.end));
                let (body_end, resume) = standalone_line(template, &close, body_start, end)
                    .unwrap_or((close.start, close.end));
                rendered.text.push_str(&template[pos..text_end]);
                if !value.trim().is_empty() {
                    render_range(template, body_start, body_end, values, rendered);
                } else {
                    // Render the skipped body aside, so that a typo in it is still reported.
                    let mut skipped = Rendered {
                        text: String::new(),
                        unknown: std::mem::take(&mut rendered.unknown),
                        truncated: Vec::new(),
                    };
                    render_range(template, body_start, body_end, values, &mut skipped);
                    rendered.unknown = skipped.unknown;
                }
                pos = resume;
            }
            _ => {
                rendered.text.push_str(&template[pos..tag.end]);
                let description = tag.describe();
                if !rendered.unknown.contains(&description) {
                    rendered.unknown.push(description);
                }
                pos = tag.end;
            }
        }
    }
}

/// Parses the placeholder starting with the `{{` at `start`, if it is one and ends
/// before `limit`: `{{name}}`, `{{#name}}` or `{{/name}}`, spaces inside allowed.
fn parse_tag(template: &str, start: usize, limit: usize) -> Option<Tag<'_>> {
    let inner_start = start + 2;
    let inner_len = template.as_bytes()[inner_start..limit]
        .windows(2)
        .take(MAX_TAG_LEN + 1)
        .position(|pair| pair == b"}}")?;
    let inner = template[inner_start..inner_start + inner_len].trim();
    let (kind, name) = if let Some(name) = inner.strip_prefix('#') {
        (TagKind::Open, name.trim_start())
    } else if let Some(name) = inner.strip_prefix('/') {
        (TagKind::Close, name.trim_start())
    } else {
        (TagKind::Variable, inner)
    };
    let first_is_valid = name
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_alphabetic() || byte == b'_');
    let rest_is_valid = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !(first_is_valid && rest_is_valid) {
        return None;
    }
    Some(Tag {
        kind,
        name,
        start,
        end: inner_start + inner_len + 2,
    })
}

/// Finds the `{{/name}}` that closes a section whose body starts at `from`.
fn find_close<'t>(template: &'t str, name: &str, from: usize, limit: usize) -> Option<Tag<'t>> {
    let mut depth = 0_usize;
    let mut pos = from;
    while let Some(offset) = template[pos..limit].find("{{") {
        let tag_start = pos + offset;
        let Some(tag) = parse_tag(template, tag_start, limit) else {
            pos = tag_start + 2;
            continue;
        };
        pos = tag.end;
        if tag.name != name {
            continue;
        }
        match tag.kind {
            TagKind::Open => depth += 1,
            TagKind::Close if depth == 0 => return Some(tag),
            TagKind::Close => depth -= 1,
            TagKind::Variable => {}
        }
    }
    None
}

/// When a section tag stands alone on its line, the line's range including its
/// newline, so that rendering drops the whole line rather than leaving it blank.
fn standalone_line(
    template: &str,
    tag: &Tag<'_>,
    lower: usize,
    upper: usize,
) -> Option<(usize, usize)> {
    let line_start = template[..tag.start]
        .rfind('\n')
        .map_or(0, |index| index + 1);
    let line_end = template[tag.end..]
        .find('\n')
        .map_or(template.len(), |index| tag.end + index + 1);
    let alone = template[line_start..tag.start].trim().is_empty()
        && template[tag.end..line_end].trim().is_empty();
    (alone && line_start >= lower && line_end <= upper).then_some((line_start, line_end))
}

/// The last `keep_last` non-empty items as a Markdown bullet list.
fn bullets(items: &[String], keep_last: usize) -> Capped {
    let items: Vec<&str> = items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .collect();
    let n_skipped = items.len().saturating_sub(keep_last);
    let mut list = String::new();
    for item in &items[n_skipped..] {
        push_item(&mut list, "", item);
    }
    list.truncate(list.trim_end().len());
    Capped::whole(list)
}

/// Appends `- text` at `indent`, indenting continuation lines under the text.
fn push_item(out: &mut String, indent: &str, text: &str) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let _ = writeln!(out, "{indent}- {first}");
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{indent}  {line}");
        }
    }
}

/// The open stories, highest priority (lowest number) first, as a compact list.
fn story_list(stories: &[StoryBrief]) -> Capped {
    let mut sorted: Vec<&StoryBrief> = stories.iter().collect();
    sorted.sort_by_key(|story| (story.priority.is_none(), story.priority));
    let mut list = String::new();
    for story in sorted.iter().take(MAX_STORIES) {
        let _ = write!(list, "- **{}**", story.id.trim());
        if let Some(priority) = story.priority {
            let _ = write!(list, " (priority {priority})");
        }
        let title = story.title.trim();
        if !title.is_empty() {
            let _ = write!(list, ": {title}");
        }
        list.push('\n');
        for line in story.description.trim().lines() {
            if line.trim().is_empty() {
                list.push('\n');
            } else {
                let _ = writeln!(list, "  {line}");
            }
        }
        let criteria: Vec<&str> = story
            .acceptance_criteria
            .iter()
            .map(|criterion| criterion.trim())
            .filter(|criterion| !criterion.is_empty())
            .collect();
        if !criteria.is_empty() {
            list.push_str("  Acceptance criteria:\n");
            for criterion in criteria {
                push_item(&mut list, "  ", criterion);
            }
        }
    }
    if sorted.len() > MAX_STORIES {
        let n_hidden = sorted.len() - MAX_STORIES;
        let _ = writeln!(
            list,
            "- … and {n_hidden} more open stories of lower priority"
        );
    }
    keep_head(list.trim_end(), MAX_TEXT_BYTES)
}

/// The check results: a one-line summary, then each command with its status and
/// the end of its output in a fenced block.
fn check_report(checks: &[CheckBrief]) -> Capped {
    if checks.is_empty() {
        return Capped::whole("No checks are configured.".to_owned());
    }
    let mut cut = false;
    let n_failed = checks.iter().filter(|check| !check.passed()).count();
    let mut report = match (checks.len(), n_failed) {
        (1, 0) => "The check passed.".to_owned(),
        (1, _) => "The check failed.".to_owned(),
        (n_checks, 0) => format!("All {n_checks} checks passed."),
        (n_checks, n_failed) => format!("{n_failed} of {n_checks} checks failed."),
    };
    for check in checks {
        let _ = write!(
            report,
            "\n\n### {}: {}\n\n",
            inline_code(check.command.trim()),
            check.status()
        );
        let tail = keep_tail(
            check
                .output_tail
                .trim_end()
                .trim_start_matches(['\n', '\r']),
            MAX_TEXT_BYTES,
        );
        cut |= tail.cut;
        let tail = tail.text;
        if tail.trim().is_empty() {
            report.push_str("(no output)");
        } else {
            let fence = fence_for(&tail);
            let _ = write!(report, "{fence}text\n{tail}\n{fence}");
        }
    }
    Capped { text: report, cut }
}

/// A code fence longer than any run of backticks in `text`, so `text` cannot close it.
fn fence_for(text: &str) -> String {
    "`".repeat(longest_backtick_run(text).max(2) + 1)
}

/// `text` as inline code, with enough backticks around it.
fn inline_code(text: &str) -> String {
    let run = longest_backtick_run(text);
    if run == 0 {
        return format!("`{text}`");
    }
    let ticks = "`".repeat(run + 1);
    format!("{ticks} {text} {ticks}")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|ch| ch != '`').map(str::len).max().unwrap_or(0)
}

/// `text` capped at about `max_bytes`, keeping the end (where a phase's
/// conclusion and a command's errors are), marked with [`TRUNCATED`].
fn keep_tail(text: &str, max_bytes: usize) -> Capped {
    if text.len() <= max_bytes {
        return Capped::whole(text.to_owned());
    }
    let mut cut = text.len() - crate::text::tail_bytes(text, max_bytes).len();
    // Start on a whole line when a line boundary is near.
    if let Some(newline) = text[cut..].find('\n').filter(|&index| index < LINE_SLACK) {
        cut += newline + 1;
    }
    Capped {
        text: format!("{TRUNCATED}\n{}", &text[cut..]),
        cut: true,
    }
}

/// `text` capped at about `max_bytes`, keeping the beginning (for texts written
/// in order of importance), marked with [`TRUNCATED`].
fn keep_head(text: &str, max_bytes: usize) -> Capped {
    if text.len() <= max_bytes {
        return Capped::whole(text.to_owned());
    }
    let mut cut = crate::text::head_bytes(text, max_bytes).len();
    // End on a whole line when a line boundary is near.
    if let Some(newline) = text[..cut]
        .rfind('\n')
        .filter(|&index| cut - index < LINE_SLACK)
    {
        cut = newline;
    }
    Capped {
        text: format!("{}\n{TRUNCATED}", &text[..cut]),
        cut: true,
    }
}

#[cfg(test)]
mod tests {
    use super::{
        CheckBrief, MAX_LEARNINGS, MAX_TEXT_BYTES, PromptContext, Rendered, StoryBrief, TRUNCATED,
        VARIABLES, render, variables,
    };
    use crate::phase::Phase;

    /// The completion marker, as the daemon fills it in.
    const MARKER: &str = "<promise>COMPLETE</promise>";

    fn story(id: &str, priority: Option<i64>) -> StoryBrief {
        StoryBrief {
            id: id.to_owned(),
            title: format!("title of {id}"),
            description: format!("description of {id}"),
            acceptance_criteria: vec![format!("criterion of {id}")],
            priority,
        }
    }

    fn check_brief(command: &str, exit_code: Option<i32>, timed_out: bool) -> CheckBrief {
        CheckBrief {
            command: command.to_owned(),
            exit_code,
            timed_out,
            output_tail: format!("output of {command}\n"),
        }
    }

    /// A context with every field filled, as in the report phase.
    fn full_context(phase: Phase) -> PromptContext {
        PromptContext {
            repo: "/srv/repo".to_owned(),
            branch: "main".to_owned(),
            cycle: 7,
            phase: phase.name().to_owned(),
            steering: "Make the parser robust.\n".to_owned(),
            learnings: vec!["Run tests with `cargo test --lib`.".to_owned()],
            patterns: vec!["Errors use anyhow with context.".to_owned()],
            recent_outcomes: vec![
                "cycle 6 — rolled_back: \"Cache the parse\" — checks failed: cargo test exited 101"
                    .to_owned(),
            ],
            open_stories: vec![story("US-002", Some(2)), story("US-001", Some(1))],
            scan: "SCAN OUTPUT".to_owned(),
            idea: "TITLE: Handle empty input\nIDEA OUTPUT".to_owned(),
            code_edit: "CODE-EDIT OUTPUT".to_owned(),
            diff_summary: "1 file changed, 3 insertions(+)".to_owned(),
            checks: vec![
                check_brief("cargo test", Some(0), false),
                check_brief("cargo clippy", Some(1), false),
            ],
            backtest: "BACKTEST OUTPUT".to_owned(),
            verdict: "pass: all checks passed".to_owned(),
            marker: MARKER.to_owned(),
        }
    }

    #[track_caller]
    fn check(template: &str, ctx: &PromptContext, expected_text: &str, expected_unknown: &[&str]) {
        let Rendered { text, unknown, .. } = render(template, ctx);
        assert_eq!(text, expected_text);
        assert_eq!(unknown, expected_unknown);
    }

    #[test]
    fn variables_are_listed_in_order() {
        let names: Vec<&str> = variables(&PromptContext::default())
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(names, VARIABLES);
    }

    #[test]
    fn scalar_variables_render_as_given() {
        let ctx = full_context(Phase::Report);
        check(
            "{{repo}} {{branch}} #{{cycle}} {{phase}}",
            &ctx,
            "/srv/repo main #7 report",
            &[],
        );
        check("{{steering}}", &ctx, "Make the parser robust.", &[]);
        check(
            "{{scan}}|{{idea}}",
            &ctx,
            "SCAN OUTPUT|TITLE: Handle empty input\nIDEA OUTPUT",
            &[],
        );
        check(
            "{{code_edit}}|{{backtest}}",
            &ctx,
            "CODE-EDIT OUTPUT|BACKTEST OUTPUT",
            &[],
        );
        check(
            "{{diff_summary}}",
            &ctx,
            "1 file changed, 3 insertions(+)",
            &[],
        );
        check("{{verdict}}", &ctx, "pass: all checks passed", &[]);
        check("{{marker}}", &ctx, MARKER, &[]);
        check("{{ repo }}", &ctx, "/srv/repo", &[]);
    }

    #[test]
    fn every_variable_is_known() {
        let template: String = VARIABLES
            .iter()
            .map(|name| format!("{{{{{name}}}}}\n"))
            .collect();
        let rendered = render(&template, &full_context(Phase::Report));
        assert_eq!(rendered.unknown, Vec::<String>::new());
        assert!(!rendered.text.contains("{{"), "{}", rendered.text);
    }

    #[test]
    fn learnings_show_the_most_recent_as_bullets() {
        let ctx = PromptContext {
            learnings: (1..=20).map(|n| format!("learning-{n:02}")).collect(),
            ..PromptContext::default()
        };
        let text = render("{{learnings}}", &ctx).text;
        let expected: Vec<String> = (6..=20).map(|n| format!("- learning-{n:02}")).collect();
        assert_eq!(text, expected.join("\n"));
        assert_eq!(text.lines().count(), MAX_LEARNINGS);

        let ctx = PromptContext {
            learnings: vec!["first line\nsecond line".to_owned(), "  ".to_owned()],
            ..PromptContext::default()
        };
        check("{{learnings}}", &ctx, "- first line\n  second line", &[]);
    }

    #[test]
    fn patterns_render_as_bullets() {
        let ctx = PromptContext {
            patterns: vec!["one".to_owned(), "two".to_owned()],
            ..PromptContext::default()
        };
        check("{{patterns}}", &ctx, "- one\n- two", &[]);
    }

    #[test]
    fn stories_are_sorted_by_priority_with_unprioritised_last() {
        let ctx = PromptContext {
            open_stories: vec![
                story("US-003", Some(3)),
                story("US-009", None),
                story("US-001", Some(1)),
                story("US-002", Some(2)),
            ],
            ..PromptContext::default()
        };
        let text = render("{{stories}}", &ctx).text;
        let position = |id: &str| text.find(&format!("**{id}**")).unwrap();
        assert!(position("US-001") < position("US-002"));
        assert!(position("US-002") < position("US-003"));
        assert!(position("US-003") < position("US-009"));
        assert!(text.starts_with(
            "- **US-001** (priority 1): title of US-001\n  description of US-001\n  \
             Acceptance criteria:\n  - criterion of US-001\n- **US-002**"
        ));
        assert!(text.ends_with("- **US-009**: title of US-009\n  description of US-009\n  Acceptance criteria:\n  - criterion of US-009"));
    }

    #[test]
    fn long_story_lists_are_cut() {
        let ctx = PromptContext {
            open_stories: (1..=25)
                .map(|n| story(&format!("US-{n:03}"), Some(n)))
                .collect(),
            ..PromptContext::default()
        };
        let text = render("{{stories}}", &ctx).text;
        assert!(text.contains("**US-020**"));
        assert!(!text.contains("**US-021**"));
        assert!(text.ends_with("- … and 5 more open stories of lower priority"));
    }

    #[test]
    fn checks_show_command_status_and_output() {
        let ctx = PromptContext {
            checks: vec![
                check_brief("cargo test", Some(0), false),
                check_brief("cargo clippy", Some(1), false),
                check_brief("make slow", None, true),
            ],
            ..PromptContext::default()
        };
        let expected = "2 of 3 checks failed.\n\n\
            ### `cargo test`: exit 0\n\n```text\noutput of cargo test\n```\n\n\
            ### `cargo clippy`: exit 1\n\n```text\noutput of cargo clippy\n```\n\n\
            ### `make slow`: timed out\n\n```text\noutput of make slow\n```";
        check("{{checks}}", &ctx, expected, &[]);

        let ctx = PromptContext {
            checks: vec![CheckBrief {
                command: "true".to_owned(),
                exit_code: Some(0),
                ..CheckBrief::default()
            }],
            ..PromptContext::default()
        };
        check(
            "{{checks}}",
            &ctx,
            "The check passed.\n\n### `true`: exit 0\n\n(no output)",
            &[],
        );
        check(
            "{{checks}}",
            &PromptContext::default(),
            "No checks are configured.",
            &[],
        );
    }

    #[test]
    fn check_output_cannot_break_its_fence() {
        let ctx = PromptContext {
            checks: vec![CheckBrief {
                command: "echo `date`".to_owned(),
                exit_code: None,
                timed_out: false,
                output_tail: "```\nnot the end\n```".to_owned(),
            }],
            ..PromptContext::default()
        };
        let expected = "The check failed.\n\n### `` echo `date` ``: killed (no exit code)\n\n\
            ````text\n```\nnot the end\n```\n````";
        check("{{checks}}", &ctx, expected, &[]);
    }

    #[test]
    fn unknown_placeholders_are_kept_and_reported_once() {
        let ctx = full_context(Phase::Scan);
        check(
            "a {{nope}} b {{repo}} {{nope}} {{code-edit}}",
            &ctx,
            "a {{nope}} b /srv/repo {{nope}} {{code-edit}}",
            &["nope", "code-edit"],
        );
        check(
            "{{#nope}}x{{/nope}}",
            &ctx,
            "{{#nope}}x{{/nope}}",
            &["#nope", "/nope"],
        );
        check("{{#idea}}x", &ctx, "{{#idea}}x", &["#idea"]);
        check("x{{/idea}}", &ctx, "x{{/idea}}", &["/idea"]);
    }

    #[test]
    fn braces_that_are_not_placeholders_are_left_alone() {
        let ctx = full_context(Phase::Scan);
        for template in [
            "{{",
            "}}",
            "{{ }}",
            "{{\"a\":1}}",
            "let x = {{1, 2}};",
            "{{#}}",
            "{{9lives}}",
            "{{repo",
        ] {
            check(template, &ctx, template, &[]);
        }
        check("{{{{repo}}", &ctx, "{{/srv/repo", &[]);
    }

    #[test]
    fn inserted_values_are_not_parsed_again() {
        let ctx = PromptContext {
            repo: "/r".to_owned(),
            idea: "use {{repo}} and {{#scan}}".to_owned(),
            ..PromptContext::default()
        };
        check("{{idea}}", &ctx, "use {{repo}} and {{#scan}}", &[]);
    }

    #[test]
    fn sections_render_only_for_non_empty_values() {
        let full = full_context(Phase::Report);
        let empty = PromptContext {
            steering: " \n ".to_owned(),
            ..PromptContext::default()
        };
        let template = "a{{#idea}}[{{idea}}]{{/idea}}b";
        check(
            template,
            &full,
            "a[TITLE: Handle empty input\nIDEA OUTPUT]b",
            &[],
        );
        check(template, &empty, "ab", &[]);

        let template = "# Head\n\n{{#steering}}\n## Steering\n\n{{steering}}\n\n{{/steering}}\n{{#learnings}}\n## Learnings\n\n{{learnings}}\n\n{{/learnings}}\n## Tail\n";
        check(template, &empty, "# Head\n\n## Tail\n", &[]);
        check(
            template,
            &full,
            "# Head\n\n## Steering\n\nMake the parser robust.\n\n\
             ## Learnings\n\n- Run tests with `cargo test --lib`.\n\n## Tail\n",
            &[],
        );
    }

    #[test]
    fn sections_nest_and_always_render_for_checks_and_cycle() {
        let ctx = PromptContext {
            scan: "S".to_owned(),
            ..PromptContext::default()
        };
        check(
            "{{#scan}}<{{#idea}}I{{/idea}}{{scan}}>{{/scan}}",
            &ctx,
            "<S>",
            &[],
        );
        check("{{#scan}}{{#scan}}x{{/scan}}y{{/scan}}", &ctx, "xy", &[]);
        check(
            "{{#checks}}c{{/checks}}{{#cycle}}n{{/cycle}}",
            &ctx,
            "cn",
            &[],
        );
        check("{{#scan}}{{nope}}{{/scan}}", &ctx, "{{nope}}", &["nope"]);
        // A typo inside a skipped section is still reported.
        check("{{#idea}}{{nope}}{{/idea}}", &ctx, "", &["nope"]);
    }

    #[test]
    fn long_outputs_keep_their_end() {
        let lines: Vec<String> = (0..5000).map(|n| format!("line {n:05}")).collect();
        let ctx = PromptContext {
            scan: lines.join("\n"),
            ..PromptContext::default()
        };
        let text = render("{{scan}}", &ctx).text;
        assert!(
            text.starts_with(&format!("{TRUNCATED}\nline ")),
            "{}",
            &text[..40]
        );
        assert!(text.ends_with("line 04999"));
        assert!(!text.contains("line 00000"));
        assert!(text.len() <= MAX_TEXT_BYTES + TRUNCATED.len() + 1);
        // The cut lands on a whole line.
        assert_eq!(text.lines().nth(1).unwrap().len(), "line 00000".len());
    }

    #[test]
    fn truncation_respects_characters_and_keeps_the_head_of_steering() {
        let ctx = PromptContext {
            scan: "é".repeat(MAX_TEXT_BYTES),
            steering: format!("GOAL{}", "ü".repeat(MAX_TEXT_BYTES)),
            ..PromptContext::default()
        };
        let scan = render("{{scan}}", &ctx).text;
        assert!(scan.starts_with(&format!("{TRUNCATED}\né")));
        assert!(scan.len() <= MAX_TEXT_BYTES + TRUNCATED.len() + 1);
        let steering = render("{{steering}}", &ctx).text;
        assert!(steering.starts_with("GOALü"));
        assert!(steering.ends_with(&format!("ü\n{TRUNCATED}")));
        assert!(steering.len() <= MAX_TEXT_BYTES + TRUNCATED.len() + 1);
    }

    #[test]
    fn truncated_parts_are_reported_once_when_inserted() {
        let long_output = "line of check output\n".repeat(MAX_TEXT_BYTES / 10);
        let ctx = PromptContext {
            scan: "s".repeat(MAX_TEXT_BYTES + 1),
            idea: "i".repeat(MAX_TEXT_BYTES),
            steering: "g".repeat(MAX_TEXT_BYTES + 1),
            checks: vec![CheckBrief {
                command: "make test".to_owned(),
                exit_code: Some(1),
                timed_out: false,
                output_tail: long_output,
            }],
            learnings: (0..MAX_LEARNINGS * 2)
                .map(|n| format!("learning {n}"))
                .collect(),
            ..PromptContext::default()
        };
        let rendered = render(
            "{{idea}} {{scan}} {{#scan}}{{scan}}{{/scan}} {{checks}} {{learnings}}",
            &ctx,
        );
        // `idea` fits exactly; steering is cut but not used; learnings are a window.
        assert_eq!(rendered.truncated, ["scan", "checks"]);
        assert!(render("{{steering}}", &ctx).truncated == ["steering"]);
        assert!(render("{{idea}}", &ctx).truncated.is_empty());
    }

    #[test]
    fn builtin_templates_render_completely() {
        for phase in Phase::ALL {
            let template = phase.builtin_template();
            let lines = template.lines().count();
            assert!((25..=100).contains(&lines), "{phase}: {lines} lines");
            for ctx in [full_context(phase), PromptContext::default()] {
                let rendered = render(template, &ctx);
                assert_eq!(rendered.unknown, Vec::<String>::new(), "{phase}");
                assert!(!rendered.text.contains("{{"), "{phase}: {}", rendered.text);
                assert!(
                    !rendered.text.contains("\n\n\n"),
                    "{phase}: {}",
                    rendered.text
                );
            }
        }
    }

    #[test]
    fn builtin_templates_ask_for_their_blocks() {
        let required: [(Phase, &[&str]); 5] = [
            (Phase::Scan, &["read-only", "{{stories}}"]),
            (
                Phase::Idea,
                &["TITLE:", "read-only", "{{scan}}", "{{stories}}"],
            ),
            (Phase::CodeEdit, &["{{idea}}", "history"]),
            (
                Phase::Backtest,
                &[
                    "\"verdict\"",
                    "```json",
                    "{{checks}}",
                    "{{diff_summary}}",
                    "{{idea}}",
                ],
            ),
            (
                Phase::Report,
                &[
                    "\"learnings\"",
                    "\"patterns\"",
                    "\"summary\"",
                    "\"story\"",
                    "```json",
                    "{{verdict}}",
                ],
            ),
        ];
        for (phase, needles) in required {
            let template = phase.builtin_template();
            for needle in needles {
                assert!(template.contains(needle), "{phase} lacks {needle}");
            }
        }
    }

    #[test]
    fn the_marker_appears_only_through_its_placeholder() {
        for phase in Phase::ALL {
            let template = phase.builtin_template();
            assert!(
                !template.contains(MARKER),
                "{phase} has the marker literally"
            );
            let n_placeholders = template.matches("{{marker}}").count();
            let may_complete = matches!(phase, Phase::Idea | Phase::Report);
            assert_eq!(n_placeholders > 0, may_complete, "{phase}");
            let text = render(template, &full_context(phase)).text;
            assert_eq!(text.matches(MARKER).count(), n_placeholders, "{phase}");
            // Without a marker the completion instructions vanish with their section.
            let text = render(template, &PromptContext::default()).text;
            assert!(!text.contains("COMPLETE"), "{phase}");
        }
    }
}
