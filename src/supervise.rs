//! Runs one child process under supervision: its own process group, null or
//! scripted stdin, stdout streamed line by line with a hard cap on line length
//! (and teed to a transcript, written on a thread of its own: each line
//! through the caller's redaction, the whole capped in size), stderr drained
//! concurrently into a bounded tail, a wall-clock and an idle deadline,
//! cancellation, and an orderly stop of the whole group: SIGINT → grace →
//! SIGTERM → grace → SIGKILL.
//!
//! It knows nothing about what the child is (the agent CLI or a backtest
//! check) nor about the stream's format: callers get each line as `&str`.

use std::borrow::Cow;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

mod transcript;

use transcript::TranscriptWriter;

/// The longest stdout line handed to the caller; longer lines are skipped
/// (and stand in the transcript as a one-line marker with their length) so
/// memory stays bounded.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// What one read of stdout may bring: several lines of a busy stream, so
/// the per-read costs (a wake-up, a transcript write) are shared by them.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The pipe the agent writes its stdout into, asked of the kernel (the
/// default is 64 KiB, less than one long stream-json line): the agent can
/// write on while a read's lines are parsed.
#[cfg(target_os = "linux")]
const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// How much of stderr (and of a check's output) is kept, from the end.
pub(crate) const TAIL_BYTES: usize = 8 * 1024;

/// What to run and under which limits.
pub(crate) struct Supervised {
    pub(crate) command: Command,
    /// Written to the child's stdin, which is then closed; `None` = /dev/null.
    pub(crate) stdin: Option<String>,
    /// Where stdout is recorded, line by line as it arrives.
    pub(crate) transcript: Option<TranscriptSpec>,
    pub(crate) wall_timeout: Duration,
    /// `None` disables the idle limit (checks may be silent for a long time).
    pub(crate) idle_timeout: Option<Duration>,
    /// Pause between SIGINT, SIGTERM and SIGKILL when stopping the group.
    pub(crate) stop_grace: Duration,
}

/// Where and how a child's stdout is recorded.
pub(crate) struct TranscriptSpec {
    /// Appended to (a retried phase adds its run after the earlier ones).
    pub(crate) path: PathBuf,
    /// The most bytes one run stores; the lines past it are counted, not
    /// stored, and a last line says how much was dropped.
    pub(crate) max_bytes: u64,
    /// Applied to each line before it is stored (secrets out).
    pub(crate) redact: fn(&str) -> Cow<'_, str>,
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
    /// Bytes and lines of stdout past the transcript's cap (counted, not stored).
    pub(crate) transcript_dropped: (u64, u64),
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

/// A piece of stdout, cut at newlines.
enum Piece {
    /// Where one line lies in the buffer, with its newline (none for a last
    /// line without one).
    Line(Range<usize>),
    /// A line longer than [`MAX_LINE_BYTES`], skipped as it arrived: its
    /// length, newline included.
    TooLong(u64),
}

/// Cuts stdout into lines with bounded memory: a line that grows past
/// [`MAX_LINE_BYTES`] is not buffered but skipped and counted. Bytes that are
/// not UTF-8 do not end the stream (the caller sees them replaced).
#[derive(Default)]
struct LineSplitter {
    /// How many of the unconsumed bytes were already searched for a newline.
    searched: usize,
    /// Bytes of an over-long line skipped so far.
    skipping: Option<u64>,
}

impl LineSplitter {
    /// Hands each complete line of `buffer` to `each` (at the end of the
    /// stream, the rest too) and returns how many bytes were consumed.
    fn split(&mut self, buffer: &[u8], end_of_stream: bool, mut each: impl FnMut(Piece)) -> usize {
        let mut start = 0;
        loop {
            let from = start.max(self.searched);
            if let Some(offset) = memchr::memchr(b'\n', &buffer[from..]) {
                let end = from + offset + 1;
                each(self.piece(buffer, start..end));
                start = end;
                self.searched = 0;
                continue;
            }
            let rest = &buffer[start..];
            if end_of_stream {
                if !rest.is_empty() || self.skipping.is_some() {
                    each(self.piece(buffer, start..buffer.len()));
                }
                start = buffer.len();
            } else if rest.len() > MAX_LINE_BYTES {
                *self.skipping.get_or_insert(0) += rest.len() as u64;
                start = buffer.len();
            }
            self.searched = buffer.len() - start;
            return start;
        }
    }

    fn piece(&mut self, buffer: &[u8], line: Range<usize>) -> Piece {
        match self.skipping.take() {
            Some(skipped) => Piece::TooLong(skipped + line.len() as u64),
            None if line_ending(&buffer[line.clone()]).0.len() > MAX_LINE_BYTES => {
                Piece::TooLong(line.len() as u64)
            }
            None => Piece::Line(line),
        }
    }
}

/// A raw line cut into its content and its ending (`\n`, `\r\n`, none).
fn line_ending(line: &[u8]) -> (&[u8], &[u8]) {
    let mut content = line.strip_suffix(b"\n").unwrap_or(line);
    while let Some(shorter) = content.strip_suffix(b"\r") {
        content = shorter;
    }
    line.split_at(content.len())
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
    spec: Supervised,
    cancel: &CancellationToken,
    on_line: impl FnMut(&str),
) -> io::Result<Finished> {
    run_child(spec, cancel, on_line, Beside::No).await
}

/// [`run`] for a child that runs beside the loop's own (a notification
/// hook, docs/design.md §12): while it runs, the sweeps after a phase spare
/// its group ([`crate::reaper::spare_group`]); when it exits, only its own
/// group is killed, never the other descendants (the agent may be running).
pub(crate) async fn run_beside(
    spec: Supervised,
    cancel: &CancellationToken,
    on_line: impl FnMut(&str),
) -> io::Result<Finished> {
    run_child(spec, cancel, on_line, Beside::Yes).await
}

/// Whether the child runs beside the loop's own children.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Beside {
    No,
    Yes,
}

async fn run_child(
    mut spec: Supervised,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(&str),
    beside: Beside,
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
    // Before the spawn: a transcript that cannot be opened starts no child.
    let mut transcript = match spec.transcript.take() {
        Some(transcript) => Some(TranscriptWriter::open(transcript)?),
        None => None,
    };
    let mut child: Child = spec.command.spawn()?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|pid| *pid > 1)
        .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
    // Spared from the first moment: no await lies between the spawn and here.
    let _spared = (beside == Beside::Yes).then(|| crate::reaper::spare_group(pgid));
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
    widen_pipe(&stdout);

    let started = Instant::now();
    let wall_deadline = started + spec.wall_timeout;
    let mut idle_deadline = spec.idle_timeout.map(|idle| started + idle);
    let mut splitter = LineSplitter::default();
    let mut buffer = Vec::with_capacity(READ_BUFFER_BYTES);
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
                let end_of_stream = count == 0;
                if end_of_stream {
                    stdout_open = false;
                } else {
                    stdout_bytes += count as u64;
                    if let Some(idle) = spec.idle_timeout {
                        idle_deadline = Some(Instant::now() + idle);
                    }
                }
                let mut pieces = Vec::new();
                let mut all_utf8 = true;
                let consumed = splitter.split(&buffer, end_of_stream, |piece| {
                    match &piece {
                        Piece::Line(line) => {
                            let (content, _) = line_ending(&buffer[line.clone()]);
                            // The strict check is the fast one; most lines pass it.
                            let text = match simdutf8::basic::from_utf8(content) {
                                Ok(text) => Cow::Borrowed(text),
                                Err(_) => {
                                    all_utf8 = false;
                                    String::from_utf8_lossy(content)
                                }
                            };
                            on_line(&text);
                        }
                        Piece::TooLong(_) => lines_too_long += 1,
                    }
                    pieces.push(piece);
                });
                match transcript.as_mut() {
                    // A line still arriving stays where it is.
                    Some(_) if consumed == 0 && pieces.is_empty() => {}
                    Some(transcript) => {
                        // SAFETY: `all_utf8` is true only when every line of
                        // `pieces` passed the UTF-8 check above.
                        unsafe { transcript.write(&mut buffer, consumed, pieces, all_utf8) }
                            .await?;
                    }
                    None => drop(buffer.drain(..consumed)),
                }
                if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES / 2 {
                    buffer.reserve(READ_BUFFER_BYTES / 2);
                }
            }
            status = child.wait(), if exit_status.is_none() => {
                exit_status = Some(status?);
                // Nothing of this phase may outlive it: sweep the group, and
                // whatever left it (tools the CLI runs under `setsid`) too.
                signal_group(pgid, libc::SIGKILL);
                if beside == Beside::No {
                    kill_adopted_orphans();
                }
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

    let transcript_dropped = match transcript {
        Some(transcript) => transcript.finish().await?,
        None => (0, 0),
    };
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
        transcript_dropped,
        pgid,
    })
}

/// Asks for a [`PIPE_BYTES`] pipe under stdout. Best effort: a kernel
/// that refuses (another OS, a lowered `fs.pipe-max-size`) keeps its size.
fn widen_pipe(stdout: &tokio::process::ChildStdout) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: F_SETPIPE_SZ on a pipe we own only changes its capacity.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stdout;
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
        // SAFETY: killpg with signal 0 only checks that the group exists; it
        // takes plain integers and touches no memory.
        while unsafe { libc::killpg(finished.pgid, 0) } == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the process group must be gone"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn transcript(path: &std::path::Path, max_bytes: u64) -> Option<TranscriptSpec> {
        Some(TranscriptSpec {
            path: path.to_path_buf(),
            max_bytes,
            redact: crate::redact::redact,
        })
    }

    #[tokio::test]
    async fn a_long_stream_of_lines_across_many_reads_arrives_whole_and_in_order() {
        // Lines from 1 byte to 3 read buffers long, so that lines end and
        // begin everywhere in a read and the writer's buffers are reused.
        let dir = tempfile::tempdir().unwrap();
        let stream = dir.path().join("stream");
        let mut sent = Vec::new();
        let mut expected = Vec::new();
        let mut length = 1usize;
        while sent.len() < 8 * READ_BUFFER_BYTES {
            let line = format!("{}:{}", expected.len(), "y".repeat(length));
            sent.extend_from_slice(line.as_bytes());
            sent.push(b'\n');
            expected.push(line);
            length = (length * 7 + 13) % (3 * READ_BUFFER_BYTES);
        }
        std::fs::write(&stream, &sent).unwrap();
        let path = dir.path().join("t.jsonl");
        let mut spec = shell(&format!("cat '{}'", stream.display()));
        spec.transcript = transcript(&path, 1 << 30);
        let (finished, lines) = collect(spec).await;
        assert!(lines == expected, "every line, in order, once");
        assert!(
            std::fs::read(path).unwrap() == sent,
            "the transcript is the stream"
        );
        assert_eq!(finished.stdout_bytes, sent.len() as u64);
    }

    #[tokio::test]
    async fn transcript_holds_every_byte_as_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut spec = shell("printf 'a\\r\\nbb\\n\\377x\\nccc'");
        spec.transcript = transcript(&path, 1024);
        let (finished, lines) = collect(spec).await;
        assert_eq!(
            lines,
            ["a", "bb", "\u{fffd}x", "ccc"],
            "bytes that are not UTF-8 end nothing"
        );
        assert_eq!(std::fs::read(path).unwrap(), b"a\r\nbb\n\xffx\nccc");
        assert_eq!(finished.transcript_dropped, (0, 0));
    }

    #[tokio::test]
    async fn an_overlong_line_stands_in_the_transcript_as_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let script = format!(
            "echo first; head -c {} /dev/zero | tr '\\0' x; echo; echo after",
            MAX_LINE_BYTES + 10
        );
        let mut spec = shell(&script);
        spec.transcript = transcript(&path, 1 << 30);
        let (finished, lines) = collect(spec).await;
        assert_eq!(lines, ["first", "after"]);
        assert_eq!(finished.lines_too_long, 1);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            format!(
                "first\n{{\"type\":\"ralphd_line_too_long\",\"bytes\":{}}}\nafter\n",
                MAX_LINE_BYTES + 11
            )
        );
    }

    #[tokio::test]
    async fn transcript_past_its_cap_keeps_whole_lines_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        // 1000 lines of 100 bytes (99 + newline), in many reads; cap 1050.
        let mut spec = shell(
            "i=0; while [ $i -lt 1000 ]; do printf '%099d\\n' $i; i=$((i+1)); done; printf 'end'",
        );
        spec.transcript = transcript(&path, 1050);
        let (finished, lines) = collect(spec).await;
        assert_eq!(lines.len(), 1001, "every line still reaches the caller");
        assert_eq!(finished.transcript_dropped, (99_003, 991));
        let text = std::fs::read_to_string(path).unwrap();
        let stored: Vec<&str> = text.lines().collect();
        assert_eq!(stored.len(), 11);
        assert_eq!(stored[9], format!("{:099}", 9));
        assert_eq!(
            stored[10],
            r#"{"type":"ralphd_truncated","dropped_bytes":99003,"dropped_lines":991}"#
        );
    }

    #[tokio::test]
    async fn transcript_lines_are_redacted_and_the_caller_sees_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut spec =
            shell("echo '{\"text\":\"ANTHROPIC_API_KEY=sk-ant-api03-abc\"}'; echo 'plain'");
        spec.transcript = transcript(&path, 1024);
        let (_, lines) = collect(spec).await;
        assert_eq!(lines[0], r#"{"text":"ANTHROPIC_API_KEY=sk-ant-api03-abc"}"#);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "{\"text\":\"ANTHROPIC_API_KEY=[REDACTED]\"}\nplain\n"
        );
    }

    #[tokio::test]
    async fn a_full_disk_under_the_transcript_is_an_error_that_says_so() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let mut spec = shell("echo line");
        spec.transcript = transcript(std::path::Path::new("/dev/full"), 1024);
        let error = run(spec, &CancellationToken::new(), |_| {})
            .await
            .expect_err("the write fails");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        assert!(
            error
                .to_string()
                .starts_with("cannot write the transcript /dev/full: No space left on device"),
            "{error}"
        );
    }
}
