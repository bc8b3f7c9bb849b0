//! The server's listener: at most [`MAX_CONNECTIONS`] connections open at
//! once. Each accepted connection holds a permit until it closes; past the
//! cap the next one waits in the kernel's accept queue. So no number of
//! clients (a page left open in many tabs, a script that never closes its
//! sockets) can use up the file descriptors the loop needs for its agent,
//! git and state files. A connection on which nothing moves for
//! [`IDLE_TIMEOUT`] is closed, so silent sockets cannot keep the places
//! either.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections served at once: many times what the page, `ralphd watch`
/// and a Prometheus scrape use together.
pub(crate) const MAX_CONNECTIONS: usize = 128;

/// How long a connection may go without a byte read or written. The event
/// stream writes a keep-alive every 15 s, so a watcher never idles that
/// long; a socket that sends nothing, or never reads what it asked for, does.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl CappedListener {
    pub(super) fn new(inner: TcpListener) -> CappedListener {
        CappedListener {
            inner,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        // The semaphore is never closed, so a permit always comes.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
        let connection = Connection {
            stream,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _permit: permit,
        };
        (connection, address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; its permit goes back when it is dropped.
pub(super) struct Connection {
    stream: TcpStream,
    /// Moved on by every read or write that completes.
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Passes on what the socket answered: progress moves the idle
    /// deadline on; while the socket is not ready the deadline is watched,
    /// and once it passes the connection ends with `TimedOut`.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.idle.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nothing read or written for a minute",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.watch(cx, polled)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn one_connection() -> (CappedListener, TcpStream, Connection) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut capped = CappedListener::new(listener);
        let client = TcpStream::connect(address).await.unwrap();
        let (connection, _) = axum::serve::Listener::accept(&mut capped).await;
        assert_eq!(capped.permits.available_permits(), MAX_CONNECTIONS - 1);
        (capped, client, connection)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_a_minute_and_gives_its_place_back() {
        let (capped, _client, mut connection) = one_connection().await;
        let started = Instant::now();
        let error = connection.read(&mut [0u8; 1]).await.expect_err("times out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE_TIMEOUT);
        drop(connection);
        assert_eq!(capped.permits.available_permits(), MAX_CONNECTIONS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_keeps_talking_is_never_idle() {
        let (_capped, mut client, mut connection) = one_connection().await;
        // Over two and a half minutes, a byte every 40 s, read as it comes.
        let talk = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(40)).await;
                client.write_all(b"x").await.unwrap();
            }
        };
        let mut heard = [0u8; 4];
        let (_, read) = tokio::join!(talk, connection.read_exact(&mut heard));
        read.expect("never timed out");
        assert_eq!(&heard, b"xxxx");
    }
}
