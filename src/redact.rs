//! Finding and masking secrets in text: API keys and tokens by their shape,
//! the value after a secret-looking name, the credentials after `Bearer`, and
//! the values of this process's credential-like environment variables.
//! [`redact`] masks them in every line logged, every transcript line and every
//! text saved under the home; [`credential_spans`] locates them for the diff
//! gate; [`RedactingWriter`] redacts a byte stream line by line.
//!
//! It knows nothing of tracing, files or the agent: `logging` wraps its writers
//! in [`RedactingWriter`] and calls [`remember_secret_values`] when it starts.

use std::borrow::Cow;
use std::io::{self, Write};
use std::ops::Range;

/// What replaces a secret in a logged line.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// The values of this process's secret-looking environment variables (a key
/// of any shape, say a proxy's, would otherwise be logged in clear if some
/// output echoed it). Set once when logging starts, by
/// [`remember_secret_values`].
static SECRET_VALUES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Values of variables whose name ends like a credential's, long enough not to
/// match ordinary words.
fn secret_values(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    const SUFFIXES: [&str; 5] = ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD", "_CREDENTIALS"];
    vars.filter_map(|(name, value)| {
        let name = name.to_str()?.to_ascii_uppercase();
        // Log lines are UTF-8: a value that is not cannot appear in one as is.
        let value = value.into_string().ok()?;
        (SUFFIXES.iter().any(|suffix| name.ends_with(suffix)) && value.len() >= 12).then_some(value)
    })
    .collect()
}

/// Reads this process's credential-like variables (see [`secret_values`]) for
/// [`redact`] and [`credential_spans`] to find their values anywhere. Called
/// once, when logging starts.
pub(crate) fn remember_secret_values() {
    // Already set by an earlier attempt in this process: the same variables.
    let _ = SECRET_VALUES.set(secret_values(std::env::vars_os()));
}

/// Variable and header names whose value is a secret, lowercase. A name matches
/// anywhere (so `api_key` covers `ANTHROPIC_API_KEY` and `x-api-key`), but only
/// when `=` or `:` follows it, possibly with quotes and spaces in between.
const SECRET_NAMES: &[&str] = &[
    "api_key",
    "api-key",
    "apikey",
    "auth_token",
    "oauth_token",
    "access_token",
    "refresh_token",
    "session_token",
    "github_token",
    "gh_token",
    "secret_access_key",
    "client_secret",
    "password",
    "authorization",
];

/// Prefixes of well-known credentials (lower case) and how many token
/// characters must follow for it to count: Anthropic API keys (`sk-ant-api03-…`)
/// and OAuth tokens (`sk-ant-oat01-…`), GitHub tokens (an agent's Bash may
/// print them), Slack tokens, AWS key ids.
const TOKEN_PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 1),
    ("github_pat_", 20),
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("akia", 16),
];

/// Authorization schemes that precede the secret itself.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token"];

/// Replaces API keys and tokens in `text` by `[REDACTED]`: any `sk-ant-…` key, the
/// value after a secret-looking name (`ANTHROPIC_API_KEY=…`,
/// `CLAUDE_CODE_OAUTH_TOKEN=…`, `ANTHROPIC_AUTH_TOKEN: …`, `x-api-key: …`,
/// `"password": "…"`), and the credentials after `Bearer`. Works on plain text and
/// on JSON-escaped text (a value ends at a quote or a backslash). Borrows when
/// there is nothing to redact.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    // Fast path: most text (every transcript line) holds none of the markers.
    if !might_hold_secret(text) {
        return Cow::Borrowed(text);
    }
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut ranges: Vec<(usize, usize)> = token_spans(&lower);
    for name in SECRET_NAMES {
        for (start, _) in lower.match_indices(name) {
            let after_name = start + name.len();
            let separator_len = bytes[after_name..]
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'"' | b'\'' | b'\\' | b'=' | b':'))
                .count();
            let separator = &bytes[after_name..after_name + separator_len];
            if !separator.iter().any(|b| matches!(b, b'=' | b':')) {
                continue;
            }
            if let Some(range) = secret_value(text, bytes, after_name + separator_len) {
                ranges.push(range);
            }
        }
    }
    for (start, _) in lower.match_indices("bearer") {
        let after = start + "bearer".len();
        let spaces = bytes[after..].iter().take_while(|b| **b == b' ').count();
        // Only token-like words: "the bearer of bad news" is left alone.
        if spaces > 0
            && let Some((value_start, value_end)) = value_at(text, bytes, after + spaces)
            && value_end - value_start >= 8
        {
            ranges.push((value_start, value_end));
        }
    }
    for value in SECRET_VALUES.get().into_iter().flatten() {
        ranges.extend(
            text.match_indices(value.as_str())
                .map(|(start, _)| (start, start + value.len())),
        );
    }
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }

    ranges.sort_unstable();
    let mut redacted = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    for (start, end) in ranges {
        if end <= copied_up_to {
            continue;
        }
        if start >= copied_up_to {
            redacted.push_str(&text[copied_up_to..start]);
            redacted.push_str(REDACTED);
        }
        // An overlapping range only extends the one already replaced.
        copied_up_to = end;
    }
    redacted.push_str(&text[copied_up_to..]);
    Cow::Owned(redacted)
}

/// The byte ranges of well-known token shapes ([`TOKEN_PREFIXES`]) in `lower`,
/// the ASCII-lowercased text.
fn token_spans(lower: &str) -> Vec<(usize, usize)> {
    let bytes = lower.as_bytes();
    let mut ranges = Vec::new();
    for (prefix, min_tail) in TOKEN_PREFIXES {
        for (start, _) in lower.match_indices(prefix) {
            // A key id prefix inside a longer word ("Nakia…") is not a token.
            // (Only for that plain-letter prefix: the others are distinctive,
            // and may follow an escape such as `\n` in JSON text.)
            if *prefix == "akia" && start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            let tail = bytes[start + prefix.len()..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
                .count();
            if tail >= *min_tail {
                ranges.push((start, start + prefix.len() + tail));
            }
        }
    }
    ranges
}

/// Where `text` holds a credential itself, as byte ranges: the token shapes
/// [`redact`] knows (`sk-ant-…`, GitHub, Slack, AWS key ids), the first line
/// of a private key block (`-----BEGIN … PRIVATE KEY…`), and the literal
/// values of this process's credential-like variables. Unlike [`redact`] it
/// ignores the values after secret-looking names (`password = x`): in source
/// code those are mostly variables, not secrets. Used by the diff gate.
pub(crate) fn credential_spans(text: &str) -> Vec<Range<usize>> {
    const PRIVATE_KEY: &str = "private key";
    let lower = text.to_ascii_lowercase();
    let mut spans: Vec<Range<usize>> = token_spans(&lower)
        .into_iter()
        .map(|(start, end)| start..end)
        .collect();
    if let Some(begin) = lower.find("-----begin ")
        && lower[begin..].contains(PRIVATE_KEY)
    {
        spans.push(begin..text.len());
    }
    for value in SECRET_VALUES.get().into_iter().flatten() {
        spans.extend(
            text.match_indices(value.as_str())
                .map(|(start, _)| start..start + value.len()),
        );
    }
    spans.sort_by_key(|span| (span.start, span.end));
    spans
}

/// Whether `text` holds, in any case, one of the markers [`redact`] starts
/// from (a token prefix, a secret name, `bearer`) or one of this process's
/// secret values. One pass at memory speed: `false` means [`redact`] would
/// change nothing, so a transcript line costs it no more than this scan.
fn might_hold_secret(text: &str) -> bool {
    static MARKERS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::OnceLock::new();
    let markers = MARKERS.get_or_init(|| {
        let patterns = TOKEN_PREFIXES
            .iter()
            .map(|(prefix, _)| *prefix)
            .chain(SECRET_NAMES.iter().copied())
            .chain(["bearer"]);
        // Leftmost-first lets the automaton use its SIMD literal search
        // (its standard semantics cannot); a yes/no answer needs no more.
        aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(patterns)
            .ok()
    });
    let Some(markers) = markers else {
        // Cannot happen with these few literals; redact the slow way if it does.
        return true;
    };
    let secret_values = SECRET_VALUES.get().map_or(&[][..], Vec::as_slice);
    if secret_values
        .iter()
        .any(|value| text.contains(value.as_str()))
    {
        return true;
    }
    // The automaton is case-sensitive (its case-insensitive mode is ten times
    // slower): the text is lowered a block at a time on the stack, each block
    // overlapping the last by the longest marker, so no match is split.
    const BLOCK: usize = 8 * 1024;
    const OVERLAP: usize = 32;
    debug_assert!(
        SECRET_NAMES
            .iter()
            .chain(TOKEN_PREFIXES.iter().map(|(prefix, _)| prefix))
            .all(|marker| marker.len() <= OVERLAP)
    );
    let bytes = text.as_bytes();
    let mut lowered = [0u8; BLOCK];
    let mut start = 0;
    loop {
        let end = (start + BLOCK).min(bytes.len());
        let block = &mut lowered[..end - start];
        block.copy_from_slice(&bytes[start..end]);
        block.make_ascii_lowercase();
        if markers.is_match(&*block) {
            return true;
        }
        if end == bytes.len() {
            return false;
        }
        start = end - OVERLAP;
    }
}

/// The secret value starting at `start`, skipping an authorization scheme word.
fn secret_value(text: &str, bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let (value_start, value_end) = value_at(text, bytes, start)?;
    let word = &bytes[value_start..value_end];
    let is_scheme = AUTH_SCHEMES.iter().any(|scheme| scheme.as_bytes() == word);
    if !is_scheme {
        return Some((value_start, value_end));
    }
    // The scheme word itself is not secret; what follows it is.
    let spaces = bytes[value_end..]
        .iter()
        .take_while(|b| **b == b' ')
        .count();
    if spaces == 0 {
        return None;
    }
    value_at(text, bytes, value_end + spaces)
}

/// The run of value characters at `start`, if any and not already redacted.
fn value_at(text: &str, bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    if text[start..].starts_with(REDACTED) {
        return None;
    }
    let len = bytes[start..]
        .iter()
        .take_while(|b| {
            !b.is_ascii_whitespace()
                && !matches!(
                    b,
                    b'"' | b'\''
                        | b'\\'
                        | b'`'
                        | b','
                        | b';'
                        | b'&'
                        | b'<'
                        | b'>'
                        | b')'
                        | b']'
                        | b'}'
                )
        })
        .count();
    (len > 0).then_some((start, start + len))
}

/// Buffers what is written until a line is complete, then writes it redacted, so
/// that a secret split across two `write` calls is still caught. A partial last
/// line is written when the writer is dropped (tracing-subscriber makes one
/// writer per event).
pub(crate) struct RedactingWriter<W: Write> {
    inner: W,
    /// Bytes after the last newline written so far.
    pending: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        RedactingWriter {
            inner,
            pending: Vec::new(),
        }
    }

    fn write_redacted(&mut self, up_to: usize) -> io::Result<()> {
        let chunk: Vec<u8> = self.pending.drain(..up_to).collect();
        let text = String::from_utf8_lossy(&chunk);
        self.inner.write_all(redact(&text).as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') {
            self.write_redacted(last_newline + 1)?;
        }
        Ok(buf.len())
    }

    /// Flushes the inner writer; a partial line stays buffered until it is
    /// complete or the writer is dropped.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let len = self.pending.len();
            // Nowhere to report a failed log write.
            let _ = self.write_redacted(len);
        }
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_come_from_credential_like_variables() {
        let vars = [
            ("MY_PROXY_TOKEN", "plainsecretvalue123"),
            ("ANTHROPIC_API_KEY", "not-an-sk-ant-key-but-secret"),
            ("SHORT_TOKEN", "abc"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("KEYBOARD", "a-long-but-harmless-value"),
        ]
        .map(|(name, value)| (name.into(), value.into()));
        assert_eq!(
            secret_values(vars.into_iter()),
            ["plainsecretvalue123", "not-an-sk-ant-key-but-secret"]
        );
    }

    #[test]
    fn credential_spans_find_token_shapes_and_private_keys_but_not_names() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "TOKEN = \"ghp_0123456789abcdefABCDEF0123456789abcd\"",
                &["ghp_0123456789abcdefABCDEF0123456789abcd"],
            ),
            (
                "key=sk-ant-api03-abc_DEF-123, id=AKIAIOSFODNN7EXAMPLE",
                &["sk-ant-api03-abc_DEF-123", "AKIAIOSFODNN7EXAMPLE"],
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                &["-----BEGIN OPENSSH PRIVATE KEY-----"],
            ),
            ("-----BEGIN PUBLIC KEY-----", &[]),
            ("let password = read_password();", &[]),
            ("the ghp_ prefix and Nakiai0123456789012345", &[]),
        ];
        for (text, expected) in cases {
            let found: Vec<&str> = credential_spans(text)
                .into_iter()
                .map(|span| &text[span])
                .collect();
            assert_eq!(found, expected, "{text}");
        }
    }

    #[test]
    fn redacts_keys_and_tokens() {
        let cases = [
            (
                "ANTHROPIC_API_KEY=sk-ant-api03-abc_DEF-123 next",
                "ANTHROPIC_API_KEY=[REDACTED] next",
            ),
            ("key sk-ant-oat01-xyz_12-3. done", "key [REDACTED]. done"),
            (
                "pushed with ghp_0123456789abcdefABCDEF0123456789abcd ok",
                "pushed with [REDACTED] ok",
            ),
            (
                "aws AKIAIOSFODNN7EXAMPLE and Nakiai0123456789012345",
                "aws [REDACTED] and Nakiai0123456789012345",
            ),
            ("the ghp_ prefix alone", "the ghp_ prefix alone"),
            (r"boom\nsk-ant-api03-abc", r"boom\n[REDACTED]"),
            (
                "export CLAUDE_CODE_OAUTH_TOKEN='tok.123/+='",
                "export CLAUDE_CODE_OAUTH_TOKEN='[REDACTED]'",
            ),
            (
                "ANTHROPIC_AUTH_TOKEN: abc def",
                "ANTHROPIC_AUTH_TOKEN: [REDACTED] def",
            ),
            ("anthropic_api_key = abc", "anthropic_api_key = [REDACTED]"),
            (
                "Authorization: Bearer eyJhbGciOi.x-y",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                "authorization: bearer ab",
                "authorization: bearer [REDACTED]",
            ),
            ("-H 'Bearer 0123456789abcdef'", "-H 'Bearer [REDACTED]'"),
            ("x-api-key: abc123", "x-api-key: [REDACTED]"),
            ("X-Api-Key:abc123\r\n", "X-Api-Key:[REDACTED]\r\n"),
            (
                r#"{"ANTHROPIC_API_KEY":"abc","other":"x"}"#,
                r#"{"ANTHROPIC_API_KEY":"[REDACTED]","other":"x"}"#,
            ),
            (
                r#"{"message":"env ANTHROPIC_API_KEY=\"abc\" set"}"#,
                r#"{"message":"env ANTHROPIC_API_KEY=\"[REDACTED]\" set"}"#,
            ),
            (
                r#"{"fields":{"env":"{\"GH_TOKEN\": \"ghp_x\"}"}}"#,
                r#"{"fields":{"env":"{\"GH_TOKEN\": \"[REDACTED]\"}"}}"#,
            ),
            (
                "https://x.test/?api_key=abc&page=2",
                "https://x.test/?api_key=[REDACTED]&page=2",
            ),
            (
                "password: hunter2, user: bob",
                "password: [REDACTED], user: bob",
            ),
            (
                "ANTHROPIC_API_KEY=sk-ant-a sk-ant-b",
                "ANTHROPIC_API_KEY=[REDACTED] [REDACTED]",
            ),
            (
                "ünï ANTHROPIC_API_KEY=ké€y ünï",
                "ünï ANTHROPIC_API_KEY=[REDACTED] ünï",
            ),
        ];
        for (input, expected) in cases {
            let redacted = redact(input);
            assert_eq!(redacted, expected, "input {input:?}");
            assert_eq!(
                redact(&redacted),
                expected,
                "redact is idempotent for {input:?}"
            );
        }
    }

    #[test]
    fn the_fast_path_finds_every_marker_wherever_it_sits_in_a_long_line() {
        const VALUE: &str = "0123456789abcdefghijABCDEFGHIJ";
        let secrets = TOKEN_PREFIXES
            .iter()
            .map(|(prefix, _)| format!("{}{VALUE}", prefix.to_uppercase()))
            .chain(
                SECRET_NAMES
                    .iter()
                    .map(|name| format!("{}={VALUE}", name.to_uppercase())),
            )
            .chain([format!("Bearer {VALUE}")]);
        for secret in secrets {
            let marker = &secret[..secret.len() - VALUE.len()];
            // Across each block boundary, and at both ends.
            for at in [0, 8 * 1024 - 5, 8 * 1024 - 1, 2 * 8 * 1024 - 40, 30_000] {
                let text = format!("{}{secret} {}", "é".repeat(at / 2), "x".repeat(100));
                assert!(might_hold_secret(&text), "{marker} at {at}");
                assert!(
                    matches!(redact(&text), Cow::Owned(_)),
                    "{marker} at {at} is redacted"
                );
            }
        }
        let plain = "The parser reads \"one line\" at a time; déjà vu.\n".repeat(2000);
        assert!(!might_hold_secret(&plain));
        assert!(!might_hold_secret(""));
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let cases = [
            "phase finished cost_usd=0.12 input_tokens: 1234 output_tokens=56",
            "ANTHROPIC_API_KEY is not set; run `claude login`",
            "the bearer of bad news",
            "passwords_file=/etc/x",
            "api_key_id=42",
            "sk-ant",
            "ANTHROPIC_API_KEY=",
            "",
        ];
        for input in cases {
            assert!(
                matches!(redact(input), Cow::Borrowed(_)),
                "changed {input:?} into {:?}",
                redact(input)
            );
        }
    }

    #[test]
    fn writer_redacts_lines_split_across_writes() {
        let mut out = Vec::new();
        {
            let mut writer = RedactingWriter::new(&mut out);
            writer.write_all(b"first ANTHROPIC_API_KEY=sk-a").unwrap();
            writer
                .write_all(b"nt-api03-secret\nsecond line\nx-api")
                .unwrap();
            writer.write_all(b"-key: partial-secret").unwrap();
            writer.flush().unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "first ANTHROPIC_API_KEY=[REDACTED]\nsecond line\nx-api-key: [REDACTED]"
        );
    }
}
