//! Closes HTTP/2 connections that stay without an open stream, or whose streams stall.
//!
//! hyper's HTTP/1 header timeout also ends idle keep-alive connections, but nothing ends an idle
//! HTTP/2 one: a few clients that connect and send nothing would hold `max_connections` slots
//! for ever. Each HTTP/2 connection counts its open streams (a request until its answer's body
//! is dropped, i.e. sent or abandoned); [`idle_for`] resolves once the count has stayed at zero
//! for the idle timeout, and the listener then closes the connection gracefully (GOAWAY).
//!
//! An HTTP/2 client can also stall a download without ever blocking the socket, by not granting
//! flow-control window: the send floor on the socket never sees a blocked write. [`stalled`]
//! applies the same floor to the answers' bodies instead. HTTP/1 connections do not pay for any
//! of this.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::send_floor::SendFloor;

/// One connection's streams: how many are open, and how far their answers have got.
#[derive(Clone)]
pub struct Streams(Arc<Counts>);

struct Counts {
    open: watch::Sender<usize>,
    /// Streams finished (answered or abandoned).
    finished: AtomicU64,
    /// Body bytes handed to hyper, which takes them only as the client's window allows.
    body_bytes: AtomicU64,
}

impl Streams {
    /// No stream yet, and the receiver [`idle_for`] and [`stalled`] watch the count with.
    pub fn new() -> (Streams, watch::Receiver<usize>) {
        let (open, rx) = watch::channel(0);
        let counts = Counts {
            open,
            finished: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
        };
        (Streams(Arc::new(counts)), rx)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn open(&self) -> OpenStream {
        self.0.open.send_modify(|n| *n += 1);
        OpenStream(self.0.clone())
    }

    fn progress(&self) -> (u64, u64) {
        (
            self.0.finished.load(Ordering::Relaxed),
            self.0.body_bytes.load(Ordering::Relaxed),
        )
    }
}

/// An open stream; closes it when dropped.
pub struct OpenStream(Arc<Counts>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// An answer's body that keeps its stream counted as open until it is dropped.
pub struct Tracked<B> {
    body: B,
    open: OpenStream,
}

impl<B> Tracked<B> {
    pub fn new(body: B, open: OpenStream) -> Self {
        Tracked { body, open }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                let n = data.remaining() as u64;
                self.open.0.body_bytes.fetch_add(n, Ordering::Relaxed);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once no stream has been open for `idle`; never when the count is gone.
///
/// Any change restarts the wait, so a stream opened and closed between two polls still counts
/// as activity.
pub async fn idle_for(mut open: watch::Receiver<usize>, idle: Duration) {
    loop {
        if open.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        match tokio::time::timeout(idle, open.changed()).await {
            Err(_) => return,
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

/// Resolves once a stream has stayed open for a whole window of `floor` while no stream finished
/// and the answers got fewer than `floor.min_bytes` further; never when the count is gone.
///
/// A stream open at a window's start and no stream finished by its end means that same stream
/// was open throughout. Registry API requests end within `request_timeout`, so only a stalled
/// download (or a `send_timeout` below `request_timeout`) is cut.
pub async fn stalled(streams: Streams, mut open: watch::Receiver<usize>, floor: SendFloor) {
    loop {
        if open.wait_for(|n| *n > 0).await.is_err() {
            return std::future::pending().await;
        }
        let (finished, bytes) = streams.progress();
        tokio::time::sleep(floor.window).await;
        let (finished_now, bytes_now) = streams.progress();
        let still_open = *open.borrow() > 0;
        if still_open && finished_now == finished && bytes_now - bytes < floor.min_bytes {
            return;
        }
    }
}
