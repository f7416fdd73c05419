//! A floor under how fast a client must take what it asked for.
//!
//! A client that stops reading an answer (a large embedded-origin download, typically) would
//! otherwise hold its connection slot for as long as it likes: the socket buffers fill, the
//! writes wait, and nothing times out. Every connection's socket is wrapped in [`Floored`]:
//! while an answer waits on the client (a write would block), each window of `window` must see
//! at least `min_bytes` written, or the connection fails and is closed. Like nginx's
//! `send_timeout` with a rate: a client that reads a trickle is cut as well as one that reads
//! nothing. The clock only runs while a write is blocked, and stops when everything queued has
//! gone out (a flush), so idle keep-alive connections and fast clients pay one branch per write.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The floor: at least `min_bytes` (never less than one) per `window` while the client is
/// keeping an answer waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendFloor {
    pub window: Duration,
    pub min_bytes: u64,
}

impl SendFloor {
    /// `min_rate` bytes per second over `window`; `None` (no floor) for a zero window.
    pub fn new(window: Duration, min_rate: u64) -> Option<SendFloor> {
        (!window.is_zero()).then(|| SendFloor {
            window,
            min_bytes: (min_rate as f64 * window.as_secs_f64()).ceil().max(1.0) as u64,
        })
    }
}

/// A connection's socket under a [`SendFloor`].
pub struct Floored<I> {
    io: I,
    floor: Option<SendFloor>,
    /// Whether a write has blocked since everything queued last went out.
    waiting: bool,
    /// Bytes written in the current window.
    sent: u64,
    /// The current window's end; allocated at the connection's first blocked write.
    window_end: Option<Pin<Box<Sleep>>>,
}

impl<I> Floored<I> {
    pub fn new(io: I, floor: Option<SendFloor>) -> Self {
        Floored {
            io,
            floor,
            waiting: false,
            sent: 0,
            window_end: None,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// Accounts for one write's outcome; fails the write when a window ended below the floor.
    fn account(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(floor) = self.floor else {
            return r;
        };
        match r {
            Poll::Ready(Ok(n)) => {
                self.sent += n as u64;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let end = Instant::now() + floor.window;
                let window_end = self
                    .window_end
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
                if !self.waiting {
                    self.waiting = true;
                    self.sent = 0;
                    window_end.as_mut().reset(end);
                }
                // Polled so that the window's end wakes the connection, which then retries the
                // write and lands here again.
                while window_end.as_mut().poll(cx).is_ready() {
                    if self.sent < floor.min_bytes {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client takes the answer too slowly",
                        )));
                    }
                    self.sent = 0;
                    window_end.as_mut().reset(Instant::now() + floor.window);
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Floored<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Floored<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.account(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.account(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything queued has been written: the client is not keeping anything waiting.
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.waiting = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_rate_times_window_and_at_least_a_byte() {
        let s = Duration::from_secs;
        assert_eq!(
            SendFloor::new(s(60), 1024),
            Some(SendFloor {
                window: s(60),
                min_bytes: 61_440
            })
        );
        assert_eq!(SendFloor::new(s(10), 0).map(|f| f.min_bytes), Some(1));
        assert_eq!(SendFloor::new(s(0), 1024), None);
    }

    /// A client that never reads: the writes block, and the first window's end fails them.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_after_a_window() {
        use tokio::io::AsyncWriteExt;
        let (server, _client) = tokio::io::duplex(1024);
        let floor = SendFloor::new(Duration::from_millis(50), 1);
        let mut floored = Floored::new(server, floor);
        let chunk = [0u8; 4096];
        let writes = async {
            loop {
                if let Err(e) = floored.write_all(&chunk).await {
                    break e;
                }
            }
        };
        // A generous bound, so a broken floor fails instead of hanging.
        let err = tokio::time::timeout(Duration::from_secs(60), writes)
            .await
            .expect("the blocked writes were never cut");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// The same client without a floor is not cut: its writes stay blocked.
    #[tokio::test]
    async fn without_a_floor_a_blocked_write_just_waits() {
        use tokio::io::AsyncWriteExt;
        let (server, _client) = tokio::io::duplex(1024);
        let mut floored = Floored::new(server, None);
        let chunk = [0u8; 4096];
        let blocked = tokio::time::timeout(Duration::from_millis(200), floored.write_all(&chunk));
        assert!(blocked.await.is_err(), "a write into a full pipe completed");
    }
}
