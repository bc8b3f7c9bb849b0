//! The digest as people read it at 7 a.m. in a terminal: a few fact lines
//! (when, why it stopped, where the time went, cycles, cost), then what
//! landed, what was tried and not kept (with the command to look at it),
//! what failed, and what was learnt. Long lists are cut to their newest
//! entries and say how many more the JSON holds.
//!
//! Pure: times are shown in the time zone it is given.

use jiff::tz::TimeZone;

use super::{Digest, RunFacts};
use crate::cycle_page::outcome_words;
use crate::state::Outcome;
use crate::text::one_line;

/// At most this many saved attempts are listed (the newest).
const ATTEMPTS_SHOWN: usize = 10;
/// At most this many failed cycles are listed (the newest).
const FAILURES_SHOWN: usize = 5;
/// At most this many learnings are listed (the newest).
const LEARNINGS_SHOWN: usize = 10;

/// The Markdown page of `digest`, times in `tz`.
pub(crate) fn render(digest: &Digest, tz: &TimeZone) -> String {
    let on_branch = digest
        .branch
        .as_deref()
        .map(|branch| format!(" on {branch}"))
        .unwrap_or_default();
    let mut page = format!("# ralphd report: {}{on_branch}\n\n", digest.range.words);
    page.push_str(&when_line(digest, tz));
    page.push_str(&format!("- stopped: {}\n", stop_words(&digest.run)));
    page.push_str(&time_line(digest));
    page.push_str(&cycles_line(digest));
    page.push_str(&cost_line(digest));

    let commits = &digest.commits;
    if commits.is_empty() {
        page.push_str("\n## Landed: no commits\n");
    } else {
        page.push_str(&format!(
            "\n## Landed: {}\n\n",
            count(commits.len(), "commit")
        ));
        for commit in commits {
            page.push_str(&format!(
                "- `{}` {} (cycle {}){}\n",
                commit.short_sha,
                title(commit.title.as_deref()),
                commit.cycle,
                commit
                    .diff_stat
                    .as_deref()
                    .map(|stat| format!(" — {stat}"))
                    .unwrap_or_default()
            ));
        }
    }

    let attempts = &digest.attempts;
    if !attempts.is_empty() {
        page.push_str(&format!(
            "\n## Tried, not kept: {}\n\n",
            count(attempts.len(), "saved attempt")
        ));
        page.push_str(&more_line(attempts.len(), ATTEMPTS_SHOWN, "attempts"));
        for attempt in newest(attempts, ATTEMPTS_SHOWN) {
            page.push_str(&format!(
                "- cycle {}, {}: {}\n  look: `{}`\n",
                attempt.cycle,
                title(attempt.title.as_deref()),
                one_line(&attempt.reason),
                attempt.look
            ));
        }
    }

    let failures = &digest.failures;
    if !failures.is_empty() {
        page.push_str(&format!(
            "\n## Failed, nothing saved: {}\n\n",
            count(failures.len(), "cycle")
        ));
        page.push_str(&more_line(failures.len(), FAILURES_SHOWN, "failures"));
        for failure in newest(failures, FAILURES_SHOWN) {
            let titled = failure
                .title
                .as_deref()
                .map(|title| format!(", \"{}\"", one_line(title)))
                .unwrap_or_default();
            page.push_str(&format!(
                "- cycle {}{titled}: {}\n",
                failure.cycle,
                one_line(&failure.reason)
            ));
        }
    }

    let learnings = &digest.learnings;
    if !learnings.is_empty() {
        page.push_str("\n## Learnings\n\n");
        // The same learning written down in several cycles is said once.
        let mut grouped: Vec<(&str, Vec<u64>)> = Vec::new();
        for learning in learnings {
            match grouped.iter_mut().find(|(text, _)| *text == learning.text) {
                Some((_, cycles)) => cycles.push(learning.cycle),
                None => grouped.push((&learning.text, vec![learning.cycle])),
            }
        }
        page.push_str(&more_line(grouped.len(), LEARNINGS_SHOWN, "learnings"));
        for (text, cycles) in newest(&grouped, LEARNINGS_SHOWN) {
            let numbers: Vec<String> = cycles.iter().map(u64::to_string).collect();
            page.push_str(&format!(
                "- {} (cycle{} {})\n",
                one_line(text),
                if cycles.len() == 1 { "" } else { "s" },
                numbers.join(", ")
            ));
        }
    }
    page
}

/// `- when: 2026-03-10 22:00 → 2026-03-11 06:12 UTC (8 h 12 min)`.
fn when_line(digest: &Digest, tz: &TimeZone) -> String {
    let parse = |text: &Option<String>| text.as_deref().and_then(super::parse_time);
    let (Some(from), Some(to)) = (parse(&digest.range.from), parse(&digest.range.to)) else {
        return "- when: no run recorded\n".to_owned();
    };
    let (from, to) = (from.to_zoned(tz.clone()), to.to_zoned(tz.clone()));
    let end = if from.date() == to.date() {
        to.strftime("%H:%M %Z").to_string()
    } else {
        to.strftime("%Y-%m-%d %H:%M %Z").to_string()
    };
    format!(
        "- when: {} → {end} ({})\n",
        from.strftime("%Y-%m-%d %H:%M"),
        duration_words(digest.time.span_seconds)
    )
}

fn stop_words(run: &RunFacts) -> String {
    let reason = run.reason.as_deref().unwrap_or("no reason recorded");
    match (run.state.as_str(), run.exit_code) {
        ("stopped", Some(code)) => format!("{reason} — exit {code}"),
        ("stopped", None) => reason.to_owned(),
        ("running", _) => "not yet, the daemon is still running".to_owned(),
        ("died", _) => format!("**died**: {reason}"),
        _ => "unknown (no run recorded in this home)".to_owned(),
    }
}

/// `- time: working 6 h 40 min, waiting 1 h 32 min (usage limit 1 h 10 min, …)`.
fn time_line(digest: &Digest) -> String {
    let time = &digest.time;
    let working = duration_words(time.working_seconds);
    let (Some(waiting), Some(by_reason)) = (time.waiting_seconds, &time.waiting_by_reason) else {
        return format!("- time: working {working}, waiting unknown (no event log)\n");
    };
    let mut reasons: Vec<(&String, &u64)> = by_reason
        .iter()
        .filter(|(_, seconds)| **seconds > 0)
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = reasons
        .iter()
        .map(|(reason, seconds)| format!("{} {}", wait_words(reason), duration_words(**seconds)))
        .collect();
    let detail = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    };
    format!(
        "- time: working {working}, waiting {}{detail}\n",
        duration_words(waiting)
    )
}

/// `- cycles: 12 (3–14): 3 committed, 5 rolled back, …`.
fn cycles_line(digest: &Digest) -> String {
    let cycles = &digest.cycles;
    if cycles.total == 0 {
        return "- cycles: none\n".to_owned();
    }
    let numbers = match (digest.range.first_cycle, digest.range.last_cycle) {
        (Some(first), Some(last)) if first != last => format!(" ({first}–{last})"),
        (Some(only), _) => format!(" (cycle {only})"),
        _ => String::new(),
    };
    let parts: Vec<String> = [
        Outcome::Committed,
        Outcome::Complete,
        Outcome::RolledBack,
        Outcome::NoChanges,
        Outcome::Failed,
        Outcome::Interrupted,
    ]
    .into_iter()
    .filter_map(|outcome| {
        let n = cycles.by_outcome.get(outcome.name())?;
        Some(format!("{n} {}", outcome_words(outcome)))
    })
    .collect();
    format!(
        "- cycles: {}{numbers}: {}\n",
        cycles.total,
        parts.join(", ")
    )
}

fn cost_line(digest: &Digest) -> String {
    let tokens = match digest.cost.tokens {
        Some(tokens) => format!("{} input and {} output tokens", tokens.input, tokens.output),
        None => "tokens not recorded".to_owned(),
    };
    format!("- cost: ${:.2}, {tokens}\n", digest.cost.usd)
}

/// A wait's reason as people say it.
fn wait_words(reason: &str) -> &str {
    match reason {
        "usage_limit" => "usage limit",
        "limiter" => "rate limiter",
        "breaker" => "circuit breaker",
        "backoff" => "retry backoff",
        "sleep" => "sleep between cycles",
        other => other,
    }
}

/// Seconds as people read a span: `45 s`, `7 min 05 s`, `42 min`, `8 h 12 min`.
fn duration_words(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        600..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn title(title: Option<&str>) -> String {
    title.map_or_else(
        || "(no title)".to_owned(),
        |title| format!("\"{}\"", one_line(title)),
    )
}

/// The last `shown` of `items`.
fn newest<T>(items: &[T], shown: usize) -> &[T] {
    &items[items.len().saturating_sub(shown)..]
}

/// Says how many older entries are left out, and where to find them.
fn more_line(total: usize, shown: usize, field: &str) -> String {
    if total <= shown {
        return String::new();
    }
    format!(
        "The newest {shown}; {} more in `ralphd report --format json | jq .{field}`.\n\n",
        total - shown
    )
}
