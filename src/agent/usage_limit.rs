//! Reads when a subscription's usage limit resets from the CLI's message
//! (`You've hit your session limit · resets 5:42am (Europe/Paris)` and the
//! older wordings), for `classify` to wait it out.
//!
//! Pure: the caller passes the clock (`now`); time zones named in the message
//! are looked up in the tz database through jiff.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A reset time shown in a usage limit message that lies up to this far in
/// the past is taken as "already passed", not as the same time tomorrow: the
/// message shows minutes only, so a reset due a few seconds ago must not cost
/// a day of sleep.
const PAST_RESET_GRACE: SignedDuration = SignedDuration::from_hours(1);

/// A usage limit read from the CLI's message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UsageLimitText {
    /// `session`, `weekly`, `Opus`, … as the message words it.
    pub(crate) kind: String,
    pub(crate) resets_at: Option<Timestamp>,
}

/// Reads `You've hit your <kind> limit · resets <time> (<zone>)`, also the
/// older `<kind> limit reached ∙ resets <time>` and
/// `Claude AI usage limit reached|<epoch>`. `<time>` is `5:42am`, `5am`,
/// `17:42` or `Nov 24, 12:15pm`; without a date it is the next occurrence
/// after `now` (allowing [`PAST_RESET_GRACE`]); without a zone, the local
/// one. `None` when the text is no usage limit message.
pub(crate) fn parse_usage_limit(text: &str, now: Timestamp) -> Option<UsageLimitText> {
    let normalized = text.replace('\u{2019}', "'");
    // ASCII lowering keeps byte offsets valid in `normalized`.
    let lower = normalized.to_ascii_lowercase();

    if let Some(at) = lower.find("usage limit reached|") {
        let digits: String = lower[at + "usage limit reached|".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Some(UsageLimitText {
            kind: "usage".to_owned(),
            resets_at: digits.parse().ok().and_then(epoch_to_timestamp),
        });
    }

    let kind = if let Some(at) = lower.find("hit your ") {
        let start = at + "hit your ".len();
        let length = lower[start..].find(" limit")?;
        &normalized[start..start + length]
    } else {
        let at = lower.find(" limit reached")?;
        // After the last whitespace, which may be wider than one byte.
        let start = normalized[..at]
            .char_indices()
            .rev()
            .find(|(_, ch)| ch.is_whitespace())
            .map_or(0, |(space, ch)| space + ch.len_utf8());
        &normalized[start..at]
    };
    let kind = kind.trim();
    // "Rate limit reached" is the API's request throttling (429): retried
    // with backoff, not waited out until a reset.
    if kind.eq_ignore_ascii_case("rate") {
        return None;
    }
    let kind = if kind.is_empty() { "usage" } else { kind };

    let resets_at = lower.find("resets ").and_then(|at| {
        let spec = &normalized[at + "resets ".len()..];
        parse_reset_time(spec, now)
    });
    Some(UsageLimitText {
        kind: kind.to_owned(),
        resets_at,
    })
}

/// Parses `5:42am (UTC)`, `Nov 24, 12:15pm (Europe/Paris)`, `3pm`.
fn parse_reset_time(spec: &str, now: Timestamp) -> Option<Timestamp> {
    let (when, zone) = match spec.split_once('(') {
        Some((when, rest)) => (when, Some(rest.split_once(')')?.0.trim())),
        None => (spec.lines().next().unwrap_or(""), None),
    };
    let time_zone = match zone {
        Some(name) => TimeZone::get(name).ok()?,
        None => TimeZone::system(),
    };

    let mut month = None;
    let mut day = None;
    let mut year = None;
    let mut clock = None;
    let tokens: Vec<String> = when
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|token| !token.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut index = 0;
    while index < tokens.len() {
        let token = tokens[index].as_str();
        let next_is_meridiem =
            matches!(tokens.get(index + 1).map(String::as_str), Some("am" | "pm"));
        if let Some(number) = month_number(token) {
            month = Some(number);
        } else if token == "at" || token == "on" {
            // Filler words: "Jan 22 at 9am".
        } else if next_is_meridiem {
            clock = Some(parse_clock(&format!("{token}{}", tokens[index + 1]))?);
            index += 1;
        } else if token.contains(':') || token.ends_with("am") || token.ends_with("pm") {
            clock = Some(parse_clock(token)?);
        } else if let Ok(number) = token.parse::<i16>() {
            if month.is_some() && day.is_none() && number <= 31 {
                day = Some(number);
            } else if number >= 1970 {
                year = Some(number);
            } else {
                return None;
            }
        } else {
            // Words we don't know: stop, the time spec is over.
            break;
        }
        index += 1;
    }
    let (hour, minute) = clock?;

    let earliest = now.checked_sub(PAST_RESET_GRACE).ok()?;
    let today = now.to_zoned(time_zone.clone()).date();
    let at_date = |date: Date| -> Option<Timestamp> {
        let local =
            DateTime::new(date.year(), date.month(), date.day(), hour, minute, 0, 0).ok()?;
        Some(local.to_zoned(time_zone.clone()).ok()?.timestamp())
    };
    let candidates: Vec<Date> = match (month, day, year) {
        // A full date is taken as given, even when it has passed.
        (Some(month), Some(day), Some(year)) => {
            return at_date(Date::new(year, month, i8::try_from(day).ok()?).ok()?);
        }
        (Some(month), Some(day), None) => [today.year(), today.year() + 1]
            .into_iter()
            .filter_map(|year| Date::new(year, month, i8::try_from(day).ok()?).ok())
            .collect(),
        (None, None, None) => vec![today, today.tomorrow().ok()?],
        _ => return None,
    };
    candidates
        .into_iter()
        .filter_map(at_date)
        .find(|instant| *instant >= earliest)
}

fn month_number(token: &str) -> Option<i8> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    if token.len() < 3 || !token.chars().all(|c| c.is_ascii_alphabetic() || c == '.') {
        return None;
    }
    let position = MONTHS.iter().position(|month| token.starts_with(month))?;
    i8::try_from(position + 1).ok()
}

/// `5:42am`, `12pm`, `17:42` → (hour, minute) on a 24-hour clock.
fn parse_clock(token: &str) -> Option<(i8, i8)> {
    let (digits, meridiem) = if let Some(rest) = token.strip_suffix("am") {
        (rest, Some(false))
    } else if let Some(rest) = token.strip_suffix("pm") {
        (rest, Some(true))
    } else {
        (token, None)
    };
    let (hour, minute) = match digits.split_once(':') {
        Some((hour, minute)) => (hour.parse::<i8>().ok()?, minute.parse::<i8>().ok()?),
        None => (digits.parse::<i8>().ok()?, 0),
    };
    if !(0..60).contains(&minute) {
        return None;
    }
    let hour = match meridiem {
        Some(is_pm) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            match (hour, is_pm) {
                (12, false) => 0,
                (12, true) => 12,
                (hour, false) => hour,
                (hour, true) => hour + 12,
            }
        }
        None if (0..24).contains(&hour) => hour,
        None => return None,
    };
    Some((hour, minute))
}

/// `resetsAt` is in epoch seconds; a value that can only be milliseconds is
/// read as such.
pub(crate) fn epoch_to_timestamp(epoch: i64) -> Option<Timestamp> {
    let seconds = if epoch > 100_000_000_000 {
        epoch / 1000
    } else {
        epoch
    };
    Timestamp::from_second(seconds).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2026-01-20 10:00:00 UTC, a Tuesday (the `classify` tests' clock too).
    pub(crate) fn now() -> Timestamp {
        "2026-01-20T10:00:00Z".parse().expect("valid timestamp")
    }

    pub(crate) fn ts(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    #[test]
    fn usage_limit_text_times() {
        #[track_caller]
        fn check_reset(text: &str, expected: Option<&str>) {
            let parsed = parse_usage_limit(text, now()).expect("a usage limit message");
            assert_eq!(parsed.resets_at, expected.map(ts), "text: {text}");
        }
        // Later today, in UTC and in a zone ahead of UTC.
        check_reset(
            "You've hit your session limit · resets 3:05pm (UTC)",
            Some("2026-01-20T15:05:00Z"),
        );
        check_reset(
            "You've hit your session limit · resets 5pm (Europe/Paris)",
            Some("2026-01-20T16:00:00Z"),
        );
        // Already past today: tomorrow; a few minutes past: today (no day of sleep).
        check_reset(
            "You've hit your session limit · resets 8:30am (UTC)",
            Some("2026-01-21T08:30:00Z"),
        );
        check_reset(
            "You've hit your session limit · resets 9:58am (UTC)",
            Some("2026-01-20T09:58:00Z"),
        );
        // Midnight and noon.
        check_reset(
            "You've hit your session limit · resets 12am (UTC)",
            Some("2026-01-21T00:00:00Z"),
        );
        check_reset(
            "You've hit your session limit · resets 12:30pm (UTC)",
            Some("2026-01-20T12:30:00Z"),
        );
        check_reset(
            "You've hit your session limit · resets 5:42 pm (UTC)",
            Some("2026-01-20T17:42:00Z"),
        );
        check_reset(
            "You've hit your session limit · resets 17:42 (UTC)",
            Some("2026-01-20T17:42:00Z"),
        );
        // A date already past this year: next year.
        check_reset(
            "You've hit your weekly limit · resets Jan 2, 8am (UTC)",
            Some("2027-01-02T08:00:00Z"),
        );
        check_reset(
            "You've hit your weekly limit · resets Jan 2, 2026, 8am (UTC)",
            Some("2026-01-02T08:00:00Z"),
        );
        // Unreadable.
        check_reset("You've hit your session limit · resets 13pm (UTC)", None);
        check_reset(
            "You've hit your session limit · resets 5:42am (Nowhere/Land)",
            None,
        );
        check_reset("You've hit your session limit · resets 5:42am (UTC", None);
        check_reset(
            "You've hit your session limit · resets Feb 30, 1am (UTC)",
            None,
        );
        check_reset("You've hit your session limit", None);
    }

    #[test]
    fn older_usage_limit_wordings() {
        assert_eq!(
            parse_usage_limit("Claude AI usage limit reached|1768910400", now()),
            Some(UsageLimitText {
                kind: "usage".to_owned(),
                resets_at: Some(ts("2026-01-20T12:00:00Z")),
            })
        );
        let older = parse_usage_limit("5-hour limit reached ∙ resets 3pm", now()).expect("a limit");
        assert_eq!(older.kind, "5-hour");
        assert!(older.resets_at.is_some());
        // A space wider than one byte before the kind (U+2002 EN SPACE).
        let wide = parse_usage_limit("Your\u{2002}Opus limit reached", now()).expect("a limit");
        assert_eq!(wide.kind, "Opus");
    }

    #[test]
    fn not_usage_limit_messages() {
        for text in [
            "API Error: Server is temporarily limiting requests (not your usage limit) · Rate limited",
            "API Error: Request rejected (429) · rate limit exceeded",
            "The limit is 5 per hour",
            "API Error: Request rejected (429) · Rate limit reached for requests",
        ] {
            assert_eq!(parse_usage_limit(text, now()), None, "text: {text}");
        }
    }
}
