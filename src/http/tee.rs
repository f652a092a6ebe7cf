//! Bodies kept for the record within `--max-body`: read to their end
//! ([`read_bounded`](super::read_bounded)) or passed on frame by frame
//! ([`Tee`]), so that a 50 MB answer costs at most `max` bytes of memory
//! whichever way it goes.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use sha2::Digest;

use crate::capture::Truncated;

/// The first `max` bytes of a body as it goes by, with the whole body's
/// length and SHA-256 once it outgrows them (what the differ compares
/// then). The bytes are copied, even a body of one frame: a frame kept as
/// it came holds the whole read buffer it was cut from (8 KB or more for a
/// small answer), and the connection then allocates a new one for every
/// answer instead of reading the next into the same.
pub struct Kept {
    max: usize,
    kept: BytesMut,
    hasher: Option<sha2::Sha256>,
    len: u64,
}

impl Kept {
    /// Keeps at most `max` bytes.
    pub fn new(max: usize) -> Kept {
        Kept {
            max,
            kept: BytesMut::new(),
            hasher: None,
            len: 0,
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Notes the next piece of the body.
    pub fn add(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(chunk);
            return;
        }
        if self.kept.len() + chunk.len() <= self.max {
            self.kept.extend_from_slice(chunk);
            return;
        }
        let mut started = sha2::Sha256::new();
        started.update(&self.kept);
        started.update(chunk);
        let room = self.max - self.kept.len();
        self.kept.extend_from_slice(&chunk[..room]);
        self.hasher = Some(started);
    }

    /// What was kept, and the whole body's length and hash if it was cut.
    pub fn finish(self) -> (Bytes, Option<Truncated>) {
        let truncated = self.hasher.map(|h| Truncated {
            len: self.len,
            sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        });
        (self.kept.freeze(), truncated)
    }
}

/// How a passed-on body ended, for the record.
pub struct Teed {
    /// Its first bytes, and the whole body's length and hash if it was cut.
    pub body: (Bytes, Option<Truncated>),
    /// Why it stopped before its end, if it did: its source failed or was
    /// too slow (`source: true`), or its reader went away.
    pub cut_off: Option<CutOff>,
}

/// Why a passed-on body stopped before its end.
pub struct CutOff {
    /// What happened, for the record.
    pub reason: String,
    /// The body's source failed (or was too slow), rather than its reader
    /// going away.
    pub source: bool,
}

type BoxError = Box<dyn Error + Send + Sync>;

/// A body passed on frame by frame as it arrives, its first bytes kept for
/// the record (see [`Kept`]): once it ends, fails, outlives its deadline or
/// is dropped unread, `done` gets what was kept and how it ended.
pub struct Tee<B: Body> {
    inner: B,
    kept: Kept,
    done: Option<Box<dyn FnOnce(Teed) + Send>>,
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
}

impl<B> Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Error + Send + Sync + 'static,
{
    /// Passes `inner` on, keeping at most `max` bytes for `done`.
    pub fn new(inner: B, max: usize, done: impl FnOnce(Teed) + Send + 'static) -> Tee<B> {
        Tee {
            inner,
            kept: Kept::new(max),
            done: Some(Box::new(done)),
            deadline: None,
        }
    }

    /// Fails the body if it has not ended within `limit` (from now).
    pub fn within(mut self, limit: Duration) -> Tee<B> {
        self.deadline = Some((Box::pin(tokio::time::sleep(limit)), limit));
        self
    }

    fn end(&mut self, cut_off: Option<CutOff>) {
        if let Some(done) = self.done.take() {
            let kept = std::mem::replace(&mut self.kept, Kept::new(0));
            done(Teed {
                body: kept.finish(),
                cut_off,
            });
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.kept.add(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let reason = format!("cut off after {} bytes: {}", this.kept.len(), chain(&e));
                this.end(Some(CutOff {
                    reason,
                    source: true,
                }));
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some((sleep, limit)) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let reason = format!("no complete body within {limit:?}");
                this.end(Some(CutOff {
                    reason: reason.clone(),
                    source: true,
                }));
                Poll::Ready(Some(Err(reason.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Tee<B> {
    fn drop(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        // An empty body (HEAD, 204, 304) may never be polled: it ended.
        let ended = self.inner.is_end_stream();
        let kept = std::mem::replace(&mut self.kept, Kept::new(0));
        done(Teed {
            body: kept.finish(),
            cut_off: (!ended).then(|| CutOff {
                reason: "its reader went away before the end".to_string(),
                source: false,
            }),
        });
    }
}

/// An error and its sources, `a: b: c`.
fn chain(error: &(dyn Error + 'static)) -> String {
    super::error_chain(error)
}
