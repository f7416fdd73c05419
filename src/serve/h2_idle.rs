//! Closes HTTP/2 connections that stay without an open stream.
//!
//! hyper's HTTP/1 header timeout also ends idle keep-alive connections, but nothing ends an idle
//! HTTP/2 one: a few clients that connect and send nothing would hold `max_connections` slots
//! for ever. Each HTTP/2 connection counts its open streams (a request until its answer's body
//! is dropped, i.e. sent or abandoned); [`idle_for`] resolves once the count has stayed at zero
//! for the idle timeout, and the listener then closes the connection gracefully (GOAWAY).
//! HTTP/1 connections do not pay for any of this.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// One connection's count of open streams.
#[derive(Clone)]
pub struct Streams(Arc<watch::Sender<usize>>);

impl Streams {
    /// A count at zero, and the receiver [`idle_for`] watches it with.
    pub fn new() -> (Streams, watch::Receiver<usize>) {
        let (tx, rx) = watch::channel(0);
        (Streams(Arc::new(tx)), rx)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn open(&self) -> OpenStream {
        self.0.send_modify(|n| *n += 1);
        OpenStream(self.0.clone())
    }
}

/// An open stream; closes it when dropped.
pub struct OpenStream(Arc<watch::Sender<usize>>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// An answer's body that keeps its stream counted as open until it is dropped.
pub struct Tracked<B> {
    body: B,
    _open: OpenStream,
}

impl<B> Tracked<B> {
    pub fn new(body: B, open: OpenStream) -> Self {
        Tracked { body, _open: open }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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
