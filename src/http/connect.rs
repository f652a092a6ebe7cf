//! How the client gets its TCP connections: from those opened ahead of the
//! first request, then by connecting, never more than a limit per target.
//!
//! At a high rate, a replay starting with an empty pool opens a connection
//! for nearly every early request, since none has come back to the pool yet;
//! the connects slow every answer down, which makes more requests find no
//! idle connection. On loopback at 14,500 exchanges/s that herd grew to 1,900
//! connections per target and lagged sends by up to 90 ms, and any later
//! stall set it off again. Connections opened before the start (as wrk
//! does) and a limit on open connections (as vegeta's `-max-connections`)
//! break the loop: past the limit, a request waits for a connection of the
//! pool to come back.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ClientOptions;

/// How long a connection opened ahead of need stays usable: servers close
/// connections that sent no request after a while (nginx after 60 s).
const WARM_FOR: Duration = Duration::from_secs(5);

/// A host and port.
type Endpoint = (String, u16);

/// TCP connections opened ahead of need, by host and port.
#[derive(Clone, Default)]
pub struct WarmConnections(Arc<Mutex<HashMap<Endpoint, Vec<Warm>>>>);

/// A connection opened ahead, and when.
type Warm = (Instant, TcpStream);

impl std::fmt::Debug for WarmConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarmConnections")
    }
}

impl WarmConnections {
    /// Opens up to `n` connections to the host and port of `uri`, at most
    /// `timeout` each; returns how many opened. Failures are left to the
    /// requests to meet and report.
    pub async fn open(&self, uri: &Uri, n: usize, timeout: Duration) -> usize {
        let Some(key) = endpoint(uri) else {
            return 0;
        };
        let address = format!("{}:{}", key.0, key.1);
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..n {
            connects.spawn(tokio::time::timeout(
                timeout,
                TcpStream::connect(address.clone()),
            ));
        }
        let mut opened = Vec::new();
        while let Some(connected) = connects.join_next().await {
            if let Ok(Ok(Ok(stream))) = connected {
                let _ = stream.set_nodelay(true);
                opened.push((Instant::now(), stream));
            }
        }
        let count = opened.len();
        self.0
            .lock()
            .expect("warm lock")
            .entry(key)
            .or_default()
            .extend(opened);
        count
    }

    /// A live connection opened ahead to `key`, if any.
    fn take(&self, key: &Endpoint) -> Option<TcpStream> {
        let mut warm = self.0.lock().expect("warm lock");
        let streams = warm.get_mut(key)?;
        while let Some((opened, stream)) = streams.pop() {
            // Closed by the server (a read gives end of file), or too old to trust.
            let alive = matches!(stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if alive && opened.elapsed() < WARM_FOR {
                return Some(stream);
            }
        }
        None
    }
}

/// Host and port a URI connects to.
pub(super) fn endpoint(uri: &Uri) -> Option<Endpoint> {
    let host = uri.host()?.to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Some((host, port))
}

/// Open connections per host and port, each holding a permit.
#[derive(Clone, Default)]
struct Limits {
    max: Option<usize>,
    open: Arc<Mutex<HashMap<Endpoint, Arc<Semaphore>>>>,
    warned: Arc<AtomicBool>,
}

impl Limits {
    fn slots(&self, key: &Endpoint) -> Option<Arc<Semaphore>> {
        let max = self.max?;
        let mut open = self.open.lock().expect("limits lock");
        Some(
            open.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone(),
        )
    }
}

/// Connects over TCP: a warm connection first, then a new one, within the
/// limit.
#[derive(Clone)]
pub struct Connector {
    inner: HttpConnector,
    warm: WarmConnections,
    limits: Limits,
    wait: Duration,
    dial: Option<Endpoint>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("max_connections", &self.limits.max)
            .finish()
    }
}

impl Connector {
    /// Connects with `inner`, taking from `warm` first, at most
    /// `options.max_connections` per host and port; a connection waits for
    /// a free one no longer than the connect timeout.
    pub fn new(inner: HttpConnector, warm: WarmConnections, options: &ClientOptions) -> Connector {
        Connector {
            inner,
            warm,
            limits: Limits {
                max: options.max_connections,
                ..Limits::default()
            },
            wait: options.connect_timeout,
            dial: options.dial.clone(),
        }
    }
}

/// `uri` with its authority replaced by `to`'s host and port.
fn dialed(uri: &Uri, to: &Endpoint) -> Result<Uri, BoxError> {
    let host = if to.0.contains(':') {
        format!("[{}]", to.0)
    } else {
        to.0.clone()
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(format!("{host}:{}", to.1).parse()?);
    Ok(Uri::from_parts(parts)?)
}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Counted>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // HttpConnector is always ready; each call clones it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut inner, warm, limits, wait, dial) = (
            self.inner.clone(),
            self.warm.clone(),
            self.limits.clone(),
            self.wait,
            self.dial.clone(),
        );
        Box::pin(async move {
            let uri = match &dial {
                Some(to) => dialed(&uri, to)?,
                None => uri,
            };
            let key = endpoint(&uri).ok_or("the URI names no host")?;
            let permit = match limits.slots(&key) {
                Some(slots) => {
                    let label = format!("{}:{}", key.0, key.1);
                    Some(acquire(slots, &limits.warned, &label, limits.max, wait).await?)
                }
                None => None,
            };
            let stream = match warm.take(&key) {
                Some(stream) => stream,
                None => tower_service::Service::call(&mut inner, uri)
                    .await?
                    .into_inner(),
            };
            Ok(TokioIo::new(Counted::new(stream, permit)))
        })
    }
}

/// A free connection slot of the `max` to `address`, waiting at most
/// `wait`; the first wait is logged once per `warned`.
pub(super) async fn acquire(
    slots: Arc<Semaphore>,
    warned: &AtomicBool,
    address: &str,
    max: Option<usize>,
    wait: Duration,
) -> Result<OwnedSemaphorePermit, BoxError> {
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "{address}: all {} connections this client may open are in use; requests wait \
             for one to come free (their send lag shows it); --max-connections raises the limit",
            max.unwrap_or(0)
        );
    }
    match tokio::time::timeout(wait, slots.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(format!("no free connection within {wait:?} (--max-connections reached)").into()),
    }
}

/// When the request a connection carries began to go out: its first write
/// after the previous answer. It reaches the response's extensions, so that
/// the replay measures the actual send, after any wait for a connection
/// (meaningful for HTTP/1, one request at a time per connection).
#[derive(Clone, Debug)]
pub struct SendClock(Arc<Marks>);

#[derive(Debug, Default)]
struct Marks {
    /// Nanoseconds from [`epoch`] to the current request's first write.
    sent: AtomicU64,
    /// Whether any byte came back since.
    heard: AtomicBool,
}

/// What [`SendClock`]s count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl SendClock {
    fn new() -> SendClock {
        SendClock(Arc::default())
    }

    fn mark(&self) {
        let nanos = epoch().elapsed().as_nanos() as u64;
        self.0.sent.store(nanos, Ordering::Relaxed);
        self.0.heard.store(false, Ordering::Relaxed);
    }

    fn hear(&self) {
        self.0.heard.store(true, Ordering::Relaxed);
    }

    /// When the current request's first byte was written.
    pub fn sent(&self) -> Instant {
        epoch() + Duration::from_nanos(self.0.sent.load(Ordering::Relaxed))
    }

    /// Whether any byte of an answer arrived since the current request
    /// began to go out: a request whose connection closed before that was
    /// never processed as far as the client can tell.
    pub fn heard_back(&self) -> bool {
        self.0.heard.load(Ordering::Relaxed)
    }
}

/// A TCP connection holding its place under the limit until it closes, and
/// noting when each request starts to go out.
pub struct Counted {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    clock: SendClock,
    writing: bool,
}

impl Counted {
    pub(super) fn new(stream: TcpStream, permit: Option<OwnedSemaphorePermit>) -> Counted {
        Counted {
            stream,
            _permit: permit,
            clock: SendClock::new(),
            writing: false,
        }
    }

    fn note_write(&mut self) {
        if !self.writing {
            self.writing = true;
            self.clock.mark();
        }
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.stream.connected().extra(self.clock.clone())
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            // An answer is coming: the next write is the next request.
            self.writing = false;
            self.clock.hear();
        }
        read
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.note_write();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.note_write();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
