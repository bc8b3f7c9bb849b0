//! Runs one child process under supervision: its own process group, null or
//! scripted stdin, stdout streamed line by line with a hard cap on line length
//! (and teed raw to a transcript), stderr drained concurrently into a bounded
//! tail, a wall-clock and an idle deadline, cancellation, and an orderly stop
//! of the whole group: SIGINT → grace → SIGTERM → grace → SIGKILL.
//!
//! It knows nothing about what the child is (the agent CLI or a backtest
//! check) nor about the stream's format: callers get each line as `&str`.

use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

/// The longest stdout line handed to the caller; longer lines are skipped
/// (but still written to the transcript) so memory stays bounded.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// How much of stderr (and of a check's output) is kept, from the end.
pub(crate) const TAIL_BYTES: usize = 8 * 1024;

/// What to run and under which limits.
pub(crate) struct Supervised {
    pub(crate) command: Command,
    /// Written to the child's stdin, which is then closed; `None` = /dev/null.
    pub(crate) stdin: Option<String>,
    /// Every byte of stdout is appended here as it arrives.
    pub(crate) transcript: Option<PathBuf>,
    pub(crate) wall_timeout: Duration,
    /// `None` disables the idle limit (checks may be silent for a long time).
    pub(crate) idle_timeout: Option<Duration>,
    /// Pause between SIGINT, SIGTERM and SIGKILL when stopping the group.
    pub(crate) stop_grace: Duration,
}

/// Why the supervisor stopped the child before it exited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    WallTimeout,
    IdleTimeout,
    Cancelled,
}

/// How a supervised run ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stopped: Option<StopCause>,
    pub(crate) stderr_tail: String,
    pub(crate) lines_too_long: u64,
    pub(crate) stdout_bytes: u64,
    /// The child's process group id, recorded at spawn time.
    pub(crate) pgid: i32,
}

impl Finished {
    /// The exit code, or `128 + signal` when a signal ended the child.
    pub(crate) fn exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }
}

/// A line of stdout, or the fact that one was too long to keep.
enum Line {
    Text(String),
    TooLong,
}

/// `LinesCodec` ends its stream after an over-long line; this wrapper turns
/// that error into an item so the lines after it are still delivered.
struct CappedLines(LinesCodec);

impl CappedLines {
    fn map(result: Result<Option<String>, LinesCodecError>) -> io::Result<Option<Line>> {
        match result {
            Ok(line) => Ok(line.map(Line::Text)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(LinesCodecError::Io(error)) => Err(error),
        }
    }
}

impl Decoder for CappedLines {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> io::Result<Option<Line>> {
        Self::map(self.0.decode(buffer))
    }

    fn decode_eof(&mut self, buffer: &mut BytesMut) -> io::Result<Option<Line>> {
        Self::map(self.0.decode_eof(buffer))
    }
}

/// Kills the group when dropped, so a panic or an early return never leaks it.
struct GroupGuard {
    pgid: i32,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.pgid, libc::SIGKILL);
    }
}

/// Sends `signal` to the process group; a vanished group is not an error.
pub(crate) fn signal_group(pgid: i32, signal: i32) {
    // A pgid of 0 or 1 would hit our own group or init: never do that.
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe { libc::killpg(pgid, signal) };
    }
}

/// Where the orderly stop of the group stands.
#[derive(Clone, Copy)]
enum Stopping {
    No,
    SentInt(Instant),
    SentTerm(Instant),
    SentKill,
}

/// Runs the child to completion, handing each stdout line to `on_line`.
pub(crate) async fn run(
    mut spec: Supervised,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str),
) -> io::Result<Finished> {
    spec.command
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut spec.command);
    let mut child: Child = spec.command.spawn()?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1)
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    let _group_guard = GroupGuard { pgid };

    let stdin_task = match (child.stdin.take(), spec.stdin.take()) {
        (Some(mut stdin), Some(text)) => Some(tokio::spawn(async move {
            // A child that exits without reading its input is not our error.
            let _ = stdin.write_all(text.as_bytes()).await;
            let _ = stdin.shutdown().await;
        })),
        _ => None,
    };
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(read_tail(stderr));
    let mut stdout = child.stdout.take().expect("stdout is piped");

    let mut transcript = match &spec.transcript {
        Some(path) => Some(BufWriter::with_capacity(
            64 * 1024,
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?,
        )),
        None => None,
    };

    let started = Instant::now();
    let wall_deadline = started + spec.wall_timeout;
    let mut idle_deadline = spec.idle_timeout.map(|idle| started + idle);
    let mut decoder = CappedLines(LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let mut lines_too_long = 0u64;
    let mut stdout_bytes = 0u64;
    let mut stdout_open = true;
    let mut exit_status: Option<ExitStatus> = None;
    let mut stopped: Option<StopCause> = None;
    let mut stopping = Stopping::No;
    // After the child exits, a grandchild may still hold stdout open: give the
    // pipe a short while to drain once the group has been swept.
    let mut drain_deadline: Option<Instant> = None;

    loop {
        if exit_status.is_some() && !stdout_open {
            break;
        }
        let next_deadline = match (stopping, exit_status) {
            (_, Some(_)) => drain_deadline,
            (Stopping::SentInt(at) | Stopping::SentTerm(at), None) => Some(at),
            (Stopping::SentKill, None) => None,
            (Stopping::No, None) => Some(match idle_deadline {
                Some(idle) => idle.min(wall_deadline),
                None => wall_deadline,
            }),
        };
        tokio::select! {
            read = stdout.read_buf(&mut buffer), if stdout_open => {
                let count = read?;
                if count == 0 {
                    stdout_open = false;
                    while let Some(line) = decoder.decode_eof(&mut buffer)? {
                        deliver(line, &mut on_line, &mut lines_too_long);
                    }
                    continue;
                }
                stdout_bytes += count as u64;
                if let Some(writer) = transcript.as_mut() {
                    writer.write_all(&buffer[buffer.len() - count..]).await?;
                }
                if let Some(idle) = spec.idle_timeout {
                    idle_deadline = Some(Instant::now() + idle);
                }
                while let Some(line) = decoder.decode(&mut buffer)? {
                    deliver(line, &mut on_line, &mut lines_too_long);
                }
            }
            status = child.wait(), if exit_status.is_none() => {
                exit_status = Some(status?);
                // Nothing of this phase may outlive it: sweep the group, and
                // whatever left it (tools the CLI runs under `setsid`) too.
                signal_group(pgid, libc::SIGKILL);
                kill_adopted_orphans();
                drain_deadline = Some(Instant::now() + spec.stop_grace.min(Duration::from_secs(2)));
            }
            () = cancel.cancelled(), if matches!(stopping, Stopping::No) && exit_status.is_none() => {
                stopped = Some(StopCause::Cancelled);
                signal_group(pgid, libc::SIGINT);
                stopping = Stopping::SentInt(Instant::now() + spec.stop_grace);
            }
            () = sleep_until(next_deadline.unwrap_or_else(far_future)), if next_deadline.is_some() => {
                if exit_status.is_some() {
                    // The pipe is held open by something outside the group.
                    stdout_open = false;
                    continue;
                }
                stopping = match stopping {
                    Stopping::No => {
                        let now = Instant::now();
                        stopped = Some(if now >= wall_deadline { StopCause::WallTimeout } else { StopCause::IdleTimeout });
                        signal_group(pgid, libc::SIGINT);
                        Stopping::SentInt(now + spec.stop_grace)
                    }
                    Stopping::SentInt(_) => {
                        signal_group(pgid, libc::SIGTERM);
                        Stopping::SentTerm(Instant::now() + spec.stop_grace)
                    }
                    Stopping::SentTerm(_) | Stopping::SentKill => {
                        signal_group(pgid, libc::SIGKILL);
                        Stopping::SentKill
                    }
                };
            }
        }
    }

    if let Some(mut writer) = transcript {
        writer.flush().await?;
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    // A process outside our reach may hold stderr open too: wait a bounded time.
    let stderr_wait = spec.stop_grace.min(Duration::from_secs(2));
    let stderr_tail = match tokio::time::timeout(stderr_wait, stderr_task).await {
        Ok(tail) => tail.unwrap_or_default(),
        Err(_) => "(stderr was held open by a process that outlived the child)".to_owned(),
    };
    Ok(Finished {
        status: exit_status.expect("loop ends only after the child exited"),
        stopped,
        stderr_tail,
        lines_too_long,
        stdout_bytes,
        pgid,
    })
}

/// Linux: the child gets SIGKILL if the daemon dies (kill -9, crash), so an
/// agent never goes on editing the repository unsupervised. (Its tools are
/// found by the next start through their environment; see `daemon`.)
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and calls
        // only async-signal-safe functions (prctl, getppid) on plain integers.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The daemon died between fork and prctl: do not run orphaned.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other(
                        "the daemon exited before the child started",
                    ));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// When the daemon is a child subreaper, processes that detached from the
/// child's group (`setsid`) are re-parented to it when their parent dies, and
/// every descendant belongs to the run that just ended (the daemon supervises
/// one child at a time): kill them so they cannot outlive it or hold its pipes.
/// A process that is not a subreaper (the unit tests, which run children in
/// parallel threads) never has such orphans and kills nothing here.
fn kill_adopted_orphans() {
    if crate::reaper::is_subreaper().unwrap_or(false) {
        crate::reaper::kill_descendants(libc::SIGKILL);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn deliver(line: Line, on_line: &mut impl FnMut(&str), lines_too_long: &mut u64) {
    match line {
        Line::Text(text) => on_line(text.trim_end_matches('\r')),
        Line::TooLong => *lines_too_long += 1,
    }
}

/// Reads a pipe to its end, keeping only the last [`TAIL_BYTES`].
async fn read_tail(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(TAIL_BYTES);
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            // The tail is only a diagnostic: a broken pipe ends it like EOF.
            Ok(0) | Err(_) => break,
            Ok(count) => {
                tail.extend_from_slice(&chunk[..count]);
                if tail.len() > TAIL_BYTES {
                    tail.drain(..tail.len() - TAIL_BYTES);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Keeps the last `max` bytes of `text`, on a character boundary.
pub(crate) fn tail_of(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Supervised {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        Supervised {
            command,
            stdin: None,
            transcript: None,
            wall_timeout: Duration::from_secs(20),
            idle_timeout: None,
            stop_grace: Duration::from_millis(200),
        }
    }

    async fn collect(spec: Supervised) -> (Finished, Vec<String>) {
        let mut lines = Vec::new();
        let cancel = CancellationToken::new();
        let finished = run(spec, &cancel, |line| lines.push(line.to_owned()))
            .await
            .expect("child runs");
        (finished, lines)
    }

    #[tokio::test]
    async fn lines_after_an_overlong_line_are_still_delivered() {
        let script = format!(
            "echo first; head -c {} /dev/zero | tr '\\0' x; echo; echo after1; echo after2",
            MAX_LINE_BYTES + 10
        );
        let (finished, lines) = collect(shell(&script)).await;
        assert_eq!(lines, ["first", "after1", "after2"]);
        assert_eq!(finished.lines_too_long, 1);
        assert_eq!(finished.exit_code(), 0);
    }

    #[tokio::test]
    async fn stdin_is_delivered_then_closed_and_stderr_tail_kept() {
        let mut spec = shell("cat; echo oops >&2; exit 3");
        spec.stdin = Some("hello\nworld\n".to_owned());
        let (finished, lines) = collect(spec).await;
        assert_eq!(lines, ["hello", "world"]);
        assert_eq!(finished.stderr_tail.trim(), "oops");
        assert_eq!(finished.exit_code(), 3);
        assert_eq!(finished.stopped, None);
    }

    #[tokio::test]
    async fn idle_timeout_stops_a_silent_child_with_sigint_first() {
        let mut spec =
            shell("trap 'echo got-int; exit 7' INT; echo started; while :; do sleep 0.05; done");
        spec.idle_timeout = Some(Duration::from_millis(300));
        let (finished, lines) = collect(spec).await;
        assert_eq!(finished.stopped, Some(StopCause::IdleTimeout));
        assert_eq!(lines, ["started", "got-int"]);
        assert_eq!(finished.exit_code(), 7);
    }

    #[tokio::test]
    async fn a_child_ignoring_int_and_term_is_killed() {
        let mut spec = shell("trap '' INT TERM; echo started; while :; do sleep 0.05; done");
        spec.wall_timeout = Duration::from_millis(200);
        let (finished, _) = collect(spec).await;
        assert_eq!(finished.stopped, Some(StopCause::WallTimeout));
        assert_eq!(finished.exit_code(), 128 + libc::SIGKILL);
    }

    #[tokio::test]
    async fn a_background_grandchild_holding_stdout_does_not_hang_the_run() {
        // The grandchild stays in the group, so the sweep after exit kills it.
        let (finished, lines) = collect(shell("sleep 1000 & echo done")).await;
        assert_eq!(lines, ["done"]);
        assert_eq!(finished.exit_code(), 0);
        // SIGKILL is asynchronous: poll until the group is gone (or a deadline).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while unsafe { libc::killpg(finished.pgid, 0) } == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the process group must be gone"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn transcript_holds_every_byte_even_of_overlong_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut spec = shell("printf 'a\\nbb\\nccc'");
        spec.transcript = Some(path.clone());
        let (_, lines) = collect(spec).await;
        assert_eq!(lines, ["a", "bb", "ccc"]);
        assert_eq!(std::fs::read_to_string(path).unwrap(), "a\nbb\nccc");
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail_of("héllo", 4), "llo");
        assert_eq!(tail_of("abc", 10), "abc");
    }
}
