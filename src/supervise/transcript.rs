//! The transcript of one run, written on a thread of its own: the lines of
//! each read of stdout are handed over in the read's own buffer (the
//! supervisor reads on into a spare one), and the thread redacts each line
//! and appends it, so neither the secret scan nor the disk slows the parse
//! of the next read. Past the cap lines are counted instead, and a last
//! JSON line says how much was dropped, so the file stays ndjson.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Piece, READ_BUFFER_BYTES, TranscriptSpec, line_ending};

/// How many reads may wait for the thread (each at most one read buffer).
const QUEUED_READS: usize = 4;

/// The sending side, held by the supervisor.
pub(super) struct TranscriptWriter {
    reads: mpsc::Sender<Read>,
    /// Buffers the thread is done with, to read into again (memory that
    /// is allocated once, not at every read).
    spares: std::sync::mpsc::Receiver<Vec<u8>>,
    /// `None` once awaited.
    thread: Option<JoinHandle<io::Result<(u64, u64)>>>,
}

/// The lines of one read of stdout and its pieces, in order
/// ([`Piece::Line`] ranges point into `bytes`).
struct Read {
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    /// Every line's content is UTF-8: the supervisor checked it already.
    utf8: bool,
}

impl TranscriptWriter {
    /// Opens (appends to) the transcript and starts its thread. An error
    /// here names the file, before any child is started.
    pub(super) fn open(spec: TranscriptSpec) -> io::Result<TranscriptWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.path)
            .map_err(|error| transcript_error(&spec, "open", error))?;
        let (reads, queue) = mpsc::channel(QUEUED_READS);
        let (done, spares) = std::sync::mpsc::channel();
        let thread = tokio::task::spawn_blocking(move || {
            Capped::new(BufWriter::with_capacity(64 * 1024, file), &spec)
                .write_reads(queue, &done)
                .map_err(|error| transcript_error(&spec, "write", error))
        });
        Ok(TranscriptWriter {
            reads,
            spares,
            thread: Some(thread),
        })
    }

    /// Hands the first `consumed` bytes of `buffer` (whose lines are
    /// `pieces`; `utf8` when every line's content was found to be UTF-8)
    /// over, and leaves in `buffer` the rest, moved to a spare
    /// buffer. Waits only while [`QUEUED_READS`] are queued. A write that
    /// failed is reported here (or by [`Self::finish`]).
    ///
    /// # Safety
    ///
    /// `utf8` may be true only if the content of every [`Piece::Line`] of
    /// `pieces` (in `buffer`) is UTF-8: the thread takes it as `str`
    /// without checking again.
    pub(super) async unsafe fn write(
        &mut self,
        buffer: &mut Vec<u8>,
        consumed: usize,
        pieces: Vec<Piece>,
        utf8: bool,
    ) -> io::Result<()> {
        let mut spare = self
            .spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(READ_BUFFER_BYTES));
        spare.clear();
        spare.extend_from_slice(&buffer[consumed..]);
        let mut bytes = std::mem::replace(buffer, spare);
        bytes.truncate(consumed);
        let read = Read {
            bytes,
            pieces,
            utf8,
        };
        match self.reads.send(read).await {
            Ok(()) => Ok(()),
            // The thread stopped on an error: it says which.
            Err(_) => join(self.thread.take()).await.map(|_| ()),
        }
    }

    /// Waits for everything handed over to be written and flushed; returns
    /// the bytes and lines dropped past the cap.
    pub(super) async fn finish(self) -> io::Result<(u64, u64)> {
        let TranscriptWriter { reads, thread, .. } = self;
        // The thread ends once the queue is empty and closed.
        drop(reads);
        join(thread).await
    }
}

/// What the writer's thread ended with (once: later it is gone).
async fn join(thread: Option<JoinHandle<io::Result<(u64, u64)>>>) -> io::Result<(u64, u64)> {
    match thread {
        Some(thread) => thread
            .await
            .map_err(|error| io::Error::other(format!("the transcript writer failed: {error}")))?,
        None => Err(io::Error::other("the transcript writer stopped earlier")),
    }
}

/// The file and its cap, on the writer's thread.
struct Capped<'a> {
    file: BufWriter<File>,
    spec: &'a TranscriptSpec,
    stored: u64,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl<'a> Capped<'a> {
    fn new(file: BufWriter<File>, spec: &'a TranscriptSpec) -> Capped<'a> {
        Capped {
            file,
            spec,
            stored: 0,
            dropped_bytes: 0,
            dropped_lines: 0,
        }
    }

    /// Writes each read as it comes, then the line on what was dropped.
    fn write_reads(
        &mut self,
        mut queue: mpsc::Receiver<Read>,
        done: &std::sync::mpsc::Sender<Vec<u8>>,
    ) -> io::Result<(u64, u64)> {
        while let Some(read) = queue.blocking_recv() {
            self.write_read(&read)?;
            // A buffer grown for a long line is let go.
            if read.bytes.capacity() <= 2 * READ_BUFFER_BYTES {
                // The supervisor may be gone already: nothing to hand back.
                let _ = done.send(read.bytes);
            }
        }
        if self.dropped_lines > 0 {
            writeln!(
                self.file,
                "{{\"type\":\"ralphd_truncated\",\"dropped_bytes\":{},\"dropped_lines\":{}}}",
                self.dropped_bytes, self.dropped_lines
            )?;
        }
        self.file.flush()?;
        Ok((self.dropped_bytes, self.dropped_lines))
    }

    /// Lines kept as they came are written in runs, straight from the read.
    fn write_read(&mut self, read: &Read) -> io::Result<()> {
        let mut run: Option<Range<usize>> = None;
        for piece in &read.pieces {
            match piece {
                Piece::Line(line) => {
                    let line = line.clone();
                    match self.keep(&read.bytes[line.clone()], read.utf8) {
                        Kept::AsItCame => match &mut run {
                            Some(run) if run.end == line.start => run.end = line.end,
                            _ => {
                                self.write_run(&read.bytes, run.take())?;
                                run = Some(line);
                            }
                        },
                        Kept::Redacted(redacted) => {
                            self.write_run(&read.bytes, run.take())?;
                            self.file.write_all(&redacted)?;
                        }
                        Kept::No => {}
                    }
                }
                Piece::TooLong(bytes) => {
                    self.write_run(&read.bytes, run.take())?;
                    self.too_long(*bytes)?;
                }
            }
        }
        self.write_run(&read.bytes, run)
    }

    fn write_run(&mut self, bytes: &[u8], run: Option<Range<usize>>) -> io::Result<()> {
        match run {
            Some(run) => self.file.write_all(&bytes[run]),
            None => Ok(()),
        }
    }

    /// Whether one line (with its ending) fits under the cap, and how:
    /// as it came, or redacted when it holds a secret.
    fn keep(&mut self, line: &[u8], utf8: bool) -> Kept {
        if self.dropped_lines == 0 {
            let (content, ending) = line_ending(line);
            let text = if utf8 {
                // SAFETY: `Read::utf8` is set only for content found to be
                // UTF-8 (the contract of `TranscriptWriter::write`), and a
                // handed-over buffer is not written to.
                Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(content) })
            } else {
                String::from_utf8_lossy(content)
            };
            let kept = match (self.spec.redact)(&text) {
                Cow::Borrowed(_) => Kept::AsItCame,
                Cow::Owned(redacted) => {
                    let mut bytes = redacted.into_bytes();
                    bytes.extend_from_slice(ending);
                    Kept::Redacted(bytes)
                }
            };
            let len = match &kept {
                Kept::Redacted(bytes) => bytes.len() as u64,
                _ => line.len() as u64,
            };
            if self.stored + len <= self.spec.max_bytes {
                self.stored += len;
                return kept;
            }
        }
        self.dropped_bytes += line.len() as u64;
        self.dropped_lines += 1;
        Kept::No
    }

    /// The marker of a line too long to keep, or its count past the cap.
    fn too_long(&mut self, bytes: u64) -> io::Result<()> {
        let marker = format!("{{\"type\":\"ralphd_line_too_long\",\"bytes\":{bytes}}}\n");
        if self.dropped_lines == 0 && self.stored + marker.len() as u64 <= self.spec.max_bytes {
            self.stored += marker.len() as u64;
            self.file.write_all(marker.as_bytes())
        } else {
            self.dropped_bytes += bytes;
            self.dropped_lines += 1;
            Ok(())
        }
    }
}

enum Kept {
    AsItCame,
    Redacted(Vec<u8>),
    No,
}

/// Names the transcript in an I/O error, keeping its kind (a full disk stays
/// recognisable as one).
fn transcript_error(spec: &TranscriptSpec, operation: &str, error: io::Error) -> io::Error {
    io::Error::new(
        error.kind(),
        format!(
            "cannot {operation} the transcript {}: {error}",
            spec.path.display()
        ),
    )
}
