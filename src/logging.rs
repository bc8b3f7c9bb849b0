//! Install tracing: human text or JSON on stderr (journald and launchd capture it),
//! plus an optional daily rolling file `<home>/logs/ralphd.log.<date>` with
//! retention. Every line goes through [`redact`] first, so API keys and tokens never
//! reach a log, whatever the caller put in a message or field.
//!
//! This is the only module that touches tracing-subscriber. It knows nothing of the
//! loop or the agent; [`init`] is called once, by `lib::run`, which holds the
//! returned [`LogGuard`] until exit.

use std::borrow::Cow;
use std::io::{self, IsTerminal as _, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

/// File names are `ralphd.log.<YYYY-MM-DD>` (UTC dates); `ralphd.log` is a symlink
/// to the newest one, for `tail -F`.
pub(crate) const LOG_FILE_PREFIX: &str = "ralphd.log";

/// What replaces a secret in a logged line.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// Output format of both the stderr and the file layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines; ANSI colours only on a terminal, never in the file.
    Text,
    /// One JSON object per line, with the current span and the list of spans
    /// (`cycle`, `phase` fields).
    Json,
}

impl LogFormat {
    #[cfg(test)]
    /// The spelling used on the command line and in `ralph.toml`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Everything [`init`] needs; built by the caller from the config and the flags.
#[derive(Clone, Debug)]
pub(crate) struct LogOptions {
    /// `[logging] level`: a level name (`info`) or, for experts, filter directives
    /// (`info,ralphd=debug`). `RUST_LOG` wins over it.
    pub(crate) level: String,
    /// Number of `-v` minus number of `-q`: shifts a level name by that many steps.
    pub(crate) verbosity: i8,
    pub(crate) format: LogFormat,
    /// `<home>/logs`; `None` logs to stderr only.
    pub(crate) dir: Option<PathBuf>,
    /// How many daily files to keep, today's included; 0 keeps them all.
    pub(crate) max_files: usize,
}

/// Keeps the background writer of the log file alive. Hold it until the process
/// exits: dropping it flushes the lines still queued. `std::process::exit` skips
/// destructors, so drop it explicitly before exiting that way.
#[must_use = "dropping the guard stops file logging"]
pub(crate) struct LogGuard {
    /// Flushes and stops the file writer thread on drop.
    _file_worker: Option<WorkerGuard>,
}

/// Set once a global subscriber is installed: tracing allows one per process.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. Fails if `RUST_LOG` or `level` is invalid, if
/// the log directory cannot be created, or if logging is already initialised.
pub(crate) fn init(options: LogOptions) -> anyhow::Result<LogGuard> {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        bail!("logging is already initialised");
    }
    let result = try_init(options);
    if result.is_err() {
        INITIALIZED.store(false, Ordering::SeqCst);
    }
    result
}

fn try_init(options: LogOptions) -> anyhow::Result<LogGuard> {
    // Already set by an earlier attempt in this process: the same variables.
    let _ = SECRET_VALUES.set(secret_values(std::env::vars_os()));
    let rust_log = match std::env::var("RUST_LOG") {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("RUST_LOG is not valid UTF-8; fix or unset it")
        }
    };
    let filter = build_filter(&options.level, options.verbosity, rust_log.as_deref())?;
    let (file_writer, file_worker) = match &options.dir {
        Some(dir) => {
            let (writer, guard) = file_writer(dir, options.max_files)?;
            (Some(writer), Some(guard))
        }
        None => (None, None),
    };
    let stderr_ansi = options.format == LogFormat::Text && io::stderr().is_terminal();
    subscriber(filter, options.format, file_writer, io::stderr, stderr_ansi)
        .try_init()
        .context("cannot install the tracing subscriber")?;
    Ok(LogGuard {
        _file_worker: file_worker,
    })
}

/// The daily rolling file behind a non-blocking writer that never drops lines
/// (tracing-appender's default is lossy: it drops lines when its queue is full).
fn file_writer(dir: &Path, max_files: usize) -> anyhow::Result<(NonBlocking, WorkerGuard)> {
    // The appender prunes old files at start; on a missing directory it prints
    // an error of its own, so the directory is made first.
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_FILE_PREFIX)
        .latest_symlink(LOG_FILE_PREFIX)
        // 0 disables pruning in tracing-appender: every file is kept.
        .max_log_files(max_files)
        .build(dir)
        .with_context(|| format!("cannot open a log file in {}", dir.display()))?;
    Ok(NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("ralphd-log-writer")
        .finish(appender))
}

/// The subscriber, from any writers (tests pass buffers). The file layer comes
/// first: span fields are formatted once by the first layer and reused by the
/// others, so a colour stderr layer placed first would put ANSI codes into the
/// file (tokio-rs/tracing#1817).
fn subscriber<F, E>(
    filter: EnvFilter,
    format: LogFormat,
    file: Option<F>,
    stderr: E,
    stderr_ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    F: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    E: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if let Some(file) = file {
        layers.push(fmt_layer(format, Redacting(file), false));
    }
    let not_file_only = tracing_subscriber::filter::filter_fn(|meta| meta.target() != FILE_ONLY);
    layers.push(
        fmt_layer(format, Redacting(stderr), stderr_ansi)
            .with_filter(not_file_only)
            .boxed(),
    );
    tracing_subscriber::registry().with(layers).with(filter)
}

/// The target of events written to the log file only, never to stderr: the
/// final `exit 2: …` line, which stderr already shows as `error: …`.
pub(crate) const FILE_ONLY: &str = "ralphd::file_only";

fn fmt_layer<W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => fmt::layer().with_ansi(ansi).with_writer(writer).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
    }
}

/// The filter: `RUST_LOG` when set and not empty; otherwise `level` shifted by
/// `verbosity` steps (`-v` on `info` gives `debug`). When `level` holds directives
/// rather than a level name, it is used as is, unless `-v`/`-q` was given: then the
/// flags win and shift `info`.
fn build_filter(level: &str, verbosity: i8, rust_log: Option<&str>) -> anyhow::Result<EnvFilter> {
    let builder = EnvFilter::builder().with_regex(false);
    if let Some(rust_log) = rust_log.filter(|value| !value.trim().is_empty()) {
        return builder
            .parse(rust_log)
            .with_context(|| format!("invalid RUST_LOG {rust_log:?}"));
    }
    let level = level.trim();
    let base = if level.is_empty() {
        Some(LevelFilter::INFO)
    } else {
        level.parse::<LevelFilter>().ok()
    };
    let invalid_level =
        || format!("invalid log level {level:?} (use error, warn, info, debug or trace)");
    // A bare word would parse as a target name and switch every other log off:
    // directives must name their level (`info,ralphd=debug`).
    if base.is_none() && !level.contains('=') {
        bail!(invalid_level());
    }
    let directives = match base {
        Some(base) => shift_level(base, verbosity).to_string(),
        None if verbosity == 0 => level.to_owned(),
        None => shift_level(LevelFilter::INFO, verbosity).to_string(),
    };
    builder.parse(&directives).with_context(invalid_level)
}

fn shift_level(base: LevelFilter, verbosity: i8) -> LevelFilter {
    const LEVELS: [LevelFilter; 6] = [
        LevelFilter::OFF,
        LevelFilter::ERROR,
        LevelFilter::WARN,
        LevelFilter::INFO,
        LevelFilter::DEBUG,
        LevelFilter::TRACE,
    ];
    let index = LEVELS.iter().position(|level| *level == base).unwrap_or(3);
    let shifted = (index as i32 + i32::from(verbosity)).clamp(0, LEVELS.len() as i32 - 1);
    LEVELS[shifted as usize]
}

/// Variable and header names whose value is a secret, lowercase. A name matches
/// anywhere (so `api_key` covers `ANTHROPIC_API_KEY` and `x-api-key`), but only
/// when `=` or `:` follows it, possibly with quotes and spaces in between.
/// The values of this process's secret-looking environment variables (a key
/// of any shape, say a proxy's, would otherwise be logged in clear if some
/// output echoed it). Set once when logging starts.
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

/// Anthropic API keys (`sk-ant-api03-…`) and OAuth tokens (`sk-ant-oat01-…`).
/// Prefixes of well-known credentials (lower case) and how many token
/// characters must follow for it to count: Anthropic keys and OAuth tokens,
/// GitHub tokens (an agent's Bash may print them), Slack tokens, AWS key ids.
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

/// A [`MakeWriter`] whose writers pass every line through [`redact`].
#[derive(Clone, Debug)]
pub(crate) struct Redacting<M>(pub(crate) M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter::new(self.0.make_writer_for(meta))
    }
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
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn filter_from_level_verbosity_and_rust_log() {
        let cases = [
            ("info", 0, None, "info"),
            ("info", 1, None, "debug"),
            ("info", 2, None, "trace"),
            ("info", 5, None, "trace"),
            ("info", -1, None, "warn"),
            ("warn", -3, None, "off"),
            ("DEBUG", 0, None, "debug"),
            ("", 0, None, "info"),
            ("info,ralphd=debug", 0, None, "ralphd=debug,info"),
            ("info,ralphd=debug", 1, None, "debug"),
            ("info", 2, Some("ralphd=trace"), "ralphd=trace"),
            ("info", 0, Some("  "), "info"),
        ];
        for (level, verbosity, rust_log, expected) in cases {
            let filter = build_filter(level, verbosity, rust_log).unwrap();
            assert_eq!(
                filter.to_string(),
                expected,
                "{level:?} {verbosity} {rust_log:?}"
            );
        }
        let error = build_filter("info", 0, Some("ralphd=[")).unwrap_err();
        assert!(
            format!("{error:#}").contains("invalid RUST_LOG"),
            "{error:#}"
        );
        for bad in ["loud", "ralphd", "ralphd=loud"] {
            let error = build_filter(bad, 0, None).unwrap_err();
            assert!(
                format!("{error:#}").contains("invalid log level"),
                "{error:#}"
            );
        }
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn log_a_cycle() {
        let cycle = tracing::info_span!("cycle", cycle = 7);
        let _cycle = cycle.enter();
        let phase = tracing::info_span!("phase", phase = "scan");
        let _phase = phase.enter();
        tracing::info!(cost_usd = 0.25, "phase finished");
        tracing::warn!(
            stderr = "Authorization: Bearer abcdefgh12345678",
            "agent said ANTHROPIC_API_KEY=\"sk-ant-api03-secret\" and \"quotes\""
        );
        tracing::debug!("not shown at info");
    }

    #[test]
    fn json_lines_parse_and_are_redacted() {
        let file = Buffer::default();
        let stderr = Buffer::default();
        let filter = build_filter("info", 0, None).unwrap();
        let subscriber = subscriber(
            filter,
            LogFormat::Json,
            Some(file.clone()),
            stderr.clone(),
            false,
        );
        tracing::subscriber::with_default(subscriber, log_a_cycle);

        for (name, text) in [("file", file.text()), ("stderr", stderr.text())] {
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{name}: {text}");
            for line in &lines {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
                assert_eq!(value["span"]["phase"], "scan", "{line}");
                assert_eq!(value["spans"][0]["cycle"], 7, "{line}");
                assert_eq!(value["spans"][1]["phase"], "scan", "{line}");
            }
            assert!(!text.contains("secret"), "{name}: {text}");
            assert!(!text.contains("abcdefgh12345678"), "{name}: {text}");
            let warning: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
            assert_eq!(
                warning["fields"]["message"],
                "agent said ANTHROPIC_API_KEY=\"[REDACTED]\" and \"quotes\""
            );
            assert_eq!(
                warning["fields"]["stderr"],
                "Authorization: Bearer [REDACTED]"
            );
        }
    }

    #[test]
    fn text_file_has_no_ansi_codes_when_stderr_has_colours() {
        let file = Buffer::default();
        let stderr = Buffer::default();
        let filter = build_filter("info", 0, None).unwrap();
        let subscriber = subscriber(
            filter,
            LogFormat::Text,
            Some(file.clone()),
            stderr.clone(),
            true,
        );
        tracing::subscriber::with_default(subscriber, log_a_cycle);

        let file_text = file.text();
        assert!(
            file_text.contains("cycle{cycle=7}:phase{phase=\"scan\"}"),
            "{file_text}"
        );
        assert!(!file_text.contains('\x1b'), "{file_text:?}");
        assert!(stderr.text().contains('\x1b'), "stderr is coloured");
        for text in [file_text, stderr.text()] {
            assert!(!text.contains("secret"), "{text}");
            assert_eq!(text.matches(REDACTED).count(), 2, "{text}");
        }
    }

    #[test]
    fn rolling_file_is_named_by_date_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            std::fs::write(
                dir.path().join(format!("ralphd.log.2020-01-0{day}")),
                "old\n",
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("launchd.stderr.log"), "kept\n").unwrap();
        let (mut writer, guard) = file_writer(dir.path(), 3).unwrap();
        writer.write_all(b"hello\n").unwrap();
        drop(writer);
        drop(guard);

        let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let todays = format!("ralphd.log.{today}");
        assert!(names.contains(&todays), "{names:?}");
        assert!(
            names.contains(&"launchd.stderr.log".to_owned()),
            "{names:?}"
        );
        let dated = names
            .iter()
            .filter(|n| n.starts_with("ralphd.log."))
            .count();
        assert_eq!(
            dated, 3,
            "today's file plus the 2 newest old ones: {names:?}"
        );
        let latest = dir.path().join(LOG_FILE_PREFIX);
        assert_eq!(
            std::fs::read_link(&latest).unwrap(),
            dir.path().join(&todays)
        );
        assert_eq!(std::fs::read_to_string(&latest).unwrap(), "hello\n");
    }
}
