//! A response body from the agent, passed on to a client with bounds: at most
//! `max_total` bytes, and no gap longer than `idle` between chunks. It can hold what
//! must live exactly as long as the transfer (a concurrency permit, a busy mark).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{sleep, Instant, Sleep};

pub struct BoundedBody {
    inner: Incoming,
    sent: u64,
    max_total: u64,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _hold: Option<Box<dyn Send + Sync>>,
}

impl BoundedBody {
    pub fn new(inner: Incoming, max_total: u64, idle: Duration) -> Self {
        BoundedBody {
            inner,
            sent: 0,
            max_total,
            idle,
            timer: Box::pin(sleep(idle)),
            _hold: None,
        }
    }

    /// Keeps `hold` alive until this body is dropped (sent, failed or abandoned).
    pub fn holding(mut self, hold: impl Send + Sync + 'static) -> Self {
        self._hold = Some(Box::new(hold));
        self
    }
}

impl Body for BoundedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                    if this.sent > this.max_total {
                        return Poll::Ready(Some(Err(std::io::Error::other(format!(
                            "sandbox answer exceeded {} bytes",
                            this.max_total
                        )))));
                    }
                }
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("sandbox sent nothing for {:?}", this.idle),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
