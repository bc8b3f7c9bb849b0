//! Install tracing: human text or JSON on stderr (journald and launchd capture it),
//! plus an optional daily rolling file `<home>/logs/ralphd.log.<date>` with
//! retention. Every line goes through [`crate::redact::redact`] first, so API keys and tokens never
//! reach a log, whatever the caller put in a message or field.
//!
//! This is the only module that touches tracing-subscriber. It knows nothing of the
//! loop or the agent; [`init`] is called once, by `lib::run`, which holds the
//! returned [`LogGuard`] until exit.

use std::io::{self, IsTerminal as _};
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

use crate::redact::RedactingWriter;

/// File names are `ralphd.log.<YYYY-MM-DD>` (UTC dates); `ralphd.log` is a symlink
/// to the newest one, for `tail -F`.
pub(crate) const LOG_FILE_PREFIX: &str = "ralphd.log";

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
    crate::redact::remember_secret_values();
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

/// A [`MakeWriter`] whose writers pass every line through
/// [`crate::redact::redact`].
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::redact::REDACTED;

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
