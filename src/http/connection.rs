//! HTTP/1.1 over cleartext for the replay engines: the task that sends a
//! request drives its connection itself.
//!
//! hyper-util's pooled client runs each connection as a task of its own and
//! hands it requests through a channel, so a request is written only when
//! that task's turn comes, after the sending task's; each checkout also
//! takes a lock and hashes the pool key. At 10,000 exchanges/s on two cores
//! that second hop and the pool's upkeep put the p99 send lag past 1 ms.
//! Here a request takes a connection from its engine's [`Pool`], writes in
//! its task's first poll and reads the answer in the same task; between
//! requests a connection waits in the pool unpolled, and is checked for
//! life when taken. TLS and HTTP/2 targets keep hyper-util's client.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::connect::{acquire, endpoint, BoxError, Counted, SendClock};

/// The connections one engine keeps to one host and port.
pub struct Pool {
    address: String,
    /// Boxed: a connection taken out is held in its request's future,
    /// which would else carry its whole state (700 B of hyper's).
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Conn>>>,
    /// Requests on a connection at once, at most `max`: a connection is
    /// opened only when none is idle, so open ones never outnumber them.
    slots: Option<Arc<Semaphore>>,
    max: Option<usize>,
    warned: Arc<AtomicBool>,
    connect_timeout: Duration,
    max_body: usize,
}

/// An answer: its head, its whole body, and when the request's first byte
/// was written.
pub struct Answer {
    /// Status, version and headers.
    pub head: hyper::http::response::Parts,
    /// The body, or its first `max_body` bytes.
    pub body: Bytes,
    /// The whole body's length and hash, when it was cut.
    pub truncated: Option<crate::capture::Truncated>,
    /// When the request began to go out on its connection.
    pub sent: Instant,
    /// Whether it went out a second time, on a new connection: the reused
    /// one closed before any byte of an answer.
    pub retried: bool,
}

/// The error of a request sent a second time (see [`Answer::retried`]) that
/// failed again: its source is the second failure.
#[derive(Debug)]
pub struct RetriedError(pub BoxError);

impl std::fmt::Display for RetriedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sent again on a new connection after the reused one closed unanswered")
    }
}

impl std::error::Error for RetriedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

struct Conn {
    send: SendRequest<Full<Bytes>>,
    io: Connection<TokioIo<Counted>, Full<Bytes>>,
    clock: SendClock,
}

/// How an exchange on a connection ended badly.
enum Failure {
    /// The request was never written (the connection had closed): it can go
    /// out on another.
    Unsent(Box<Request<Full<Bytes>>>, hyper::Error),
    Failed(BoxError),
}

impl Pool {
    /// A pool for the host and port of `uri`, at most `max` connections
    /// (`None`: no limit); `None` if the URI names no host. The first wait
    /// for a connection is logged, once per `warned` (pools may share it).
    pub fn new(
        uri: &Uri,
        max: Option<usize>,
        connect_timeout: Duration,
        warned: Arc<AtomicBool>,
    ) -> Option<Pool> {
        let (host, port) = endpoint(uri)?;
        Some(Pool {
            address: format!("{host}:{port}"),
            idle: Mutex::new(Vec::new()),
            slots: max.map(|m| Arc::new(Semaphore::new(m))),
            max,
            warned,
            connect_timeout,
            max_body: super::MAX_BODY,
        })
    }

    /// Connections it opens at once, at most (`None`: no limit).
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// Keeps at most `n` bytes of an answer's body.
    pub fn with_max_body(mut self, n: usize) -> Pool {
        self.max_body = n;
        self
    }

    /// Opens up to `n` connections (never past the limit) ahead of the
    /// first request; returns how many opened. Failures are left to the
    /// requests to meet and report.
    pub async fn open(&self, n: usize) -> usize {
        let n = self.max.map_or(n, |max| n.min(max));
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (address, timeout) = (self.address.clone(), self.connect_timeout);
            connects.spawn(async move { connect(&address, timeout).await });
        }
        let mut opened = 0;
        while let Some(connected) = connects.join_next().await {
            if let Ok(Ok(conn)) = connected {
                self.idle.lock().expect("pool lock").push(conn);
                opened += 1;
            }
        }
        opened
    }

    /// Sends `req` (its URI in origin form, with a Host header) and reads the
    /// whole answer. A connection found closed before the request was
    /// written is replaced once. An idempotent request whose reused
    /// connection closed after it went out but before any byte of an answer
    /// (the server's keep-alive timeout met it on the way) is sent once more
    /// on a new connection, as browsers and hyper's pool do; the answer says
    /// so. `again` makes the request anew for that second send (made only
    /// then: a copy kept of every request cost more than the rare resend).
    pub async fn request(
        &self,
        mut req: Request<Full<Bytes>>,
        again: impl Fn() -> Option<Request<Full<Bytes>>>,
    ) -> Result<Answer, BoxError> {
        // Held until the connection is back in the pool.
        let _permit = match &self.slots {
            Some(slots) => Some(
                acquire(
                    slots.clone(),
                    &self.warned,
                    &self.address,
                    self.max,
                    self.connect_timeout,
                )
                .await?,
            ),
            None => None,
        };
        let (mut replaced, mut resent) = (false, false);
        loop {
            let (mut conn, reused) = match self.take().filter(|_| !resent) {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare, and its state would be room
                // in every request's future.
                None => (
                    Box::pin(connect(&self.address, self.connect_timeout)).await?,
                    false,
                ),
            };
            let retry = reused && !resent && is_idempotent(req.method());
            match round_trip(&mut conn, req, self.max_body).await {
                Ok((head, (body, truncated), reusable)) => {
                    let sent = conn.clock.sent();
                    if reusable {
                        self.idle.lock().expect("pool lock").push(conn);
                    }
                    return Ok(Answer {
                        head,
                        body,
                        truncated,
                        sent,
                        retried: resent,
                    });
                }
                Err(Failure::Unsent(unsent, _)) if reused && !replaced => {
                    replaced = true;
                    req = *unsent;
                }
                Err(Failure::Unsent(_, error)) if resent => {
                    return Err(RetriedError(error.into()).into())
                }
                Err(Failure::Unsent(_, error)) => return Err(error.into()),
                Err(Failure::Failed(error)) if retry && !conn.clock.heard_back() => match again() {
                    Some(anew) => (resent, req) = (true, anew),
                    None => return Err(error),
                },
                Err(Failure::Failed(error)) if resent => return Err(RetriedError(error).into()),
                Err(Failure::Failed(error)) => return Err(error),
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(mut conn) = idle.pop() {
            // A connection the server closed finishes when polled; one that
            // is open then asks for its next request.
            let mut cx = Context::from_waker(Waker::noop());
            if conn.io.poll_without_shutdown(&mut cx).is_pending() && conn.send.is_ready() {
                return Some(conn);
            }
        }
        None
    }
}

/// Methods whose request may go out twice with the effect of once (RFC 9110
/// §9.2.2).
fn is_idempotent(method: &hyper::Method) -> bool {
    use hyper::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

async fn connect(address: &str, timeout: Duration) -> Result<Box<Conn>, BoxError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(stream) => stream?,
        Err(_) => {
            let message = format!("connecting to {address} timed out after {timeout:?}");
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message).into());
        }
    };
    stream.set_nodelay(true)?;
    let counted = Counted::new(stream, None);
    let clock = counted.clock();
    let (send, io) = http1::handshake(TokioIo::new(counted)).await?;
    Ok(Box::new(Conn { send, io, clock }))
}

/// A body, or its first bytes with the whole one's length and hash.
type Bounded = (Bytes, Option<crate::capture::Truncated>);

/// Sends `req` on `conn`, driving the connection from this task until the
/// answer's body is in; says whether the connection can carry another.
async fn round_trip(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(hyper::http::response::Parts, Bounded, bool), Failure> {
    let response = conn.send.try_send_request(req);
    let mut answer = pin!(async move {
        let response = response.await.map_err(|mut e| match e.take_message() {
            Some(req) => Failure::Unsent(Box::new(req), e.into_error()),
            None => Failure::Failed(e.into_error().into()),
        })?;
        let (head, body) = response.into_parts();
        let body = super::read_bounded(body, max_body)
            .await
            .map_err(|e| Failure::Failed(e.into()))?;
        Ok((head, body))
    });
    let Conn { send, io, .. } = conn;
    let mut done = false;
    poll_fn(|cx| {
        // The connection first, so that the request is written before the
        // answer is waited for.
        done = done || io.poll_without_shutdown(cx).is_ready();
        let (head, body) = match answer.as_mut().poll(cx) {
            Poll::Ready(Ok(answer)) => answer,
            Poll::Ready(Err(failure)) => return Poll::Ready(Err(failure)),
            Poll::Pending => return Poll::Pending,
        };
        // Once the answer is in, the connection asks for the next request
        // when polled (or finishes, after `Connection: close`).
        if !done && !send.is_ready() {
            done = io.poll_without_shutdown(cx).is_ready();
        }
        Poll::Ready(Ok((head, body, !done && send.is_ready())))
    })
    .await
}
