//! The accept loop shared by the recording proxy and the demo stacks:
//! HTTP/1 and HTTP/2 on one listener, in cleartext (HTTP/2 by prior
//! knowledge) or over TLS (HTTP/2 by ALPN), graceful shutdown with a bounded
//! drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Longest wait for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How connections are served beyond the defaults.
#[derive(Clone, Default)]
pub struct Connections {
    /// Close an HTTP/1 connection whose request head has not fully arrived
    /// within this (a slow or stuck client holds no connection for ever;
    /// an idle keep-alive connection is closed after it too).
    pub header_timeout: Option<Duration>,
    /// Where requests refused before they reach the handler are counted.
    pub refused: Option<Arc<Refused>>,
}

/// Requests refused before the handler saw them.
#[derive(Debug, Default)]
pub struct Refused {
    /// Malformed requests, answered 400, 414 or 431 by hyper.
    pub malformed: AtomicU64,
}

/// Serves connections from `listener` until `shutdown` completes, then lets
/// in-flight requests finish for at most `drain`. With `tls`, each
/// connection is a TLS one. `handler` gets each request with the client's
/// address.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    serve_with(
        listener,
        tls,
        handler,
        shutdown,
        drain,
        Connections::default(),
    )
    .await;
}

/// [`serve`], with `connections`' header timeout and counts.
pub async fn serve_with<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    connections: Connections,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that those still open after the drain are
    // ended here (their in-flight requests dropped, which the handler can
    // account for) rather than left running after `serve` returns.
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let watcher = graceful.watcher();
        let (tls, connections) = (tls.clone(), connections.clone());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, service, watcher, peer, &connections).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    serve_connection(stream, service, watcher, peer, &connections).await
                }
                Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still open after {drain:?}; closing them",
            tasks.len()
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// What a handler may answer with: a whole body, or one passed on as it
/// arrives.
pub trait ResponseBody:
    hyper::body::Body<Data = Bytes, Error = Self::Failure> + Send + 'static
{
    /// The body's error.
    type Failure: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<B> ResponseBody for B
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Failure = B::Error;
}

/// Serves one connection, HTTP/1 or HTTP/2 as the client speaks.
async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    watcher: Watcher,
    peer: SocketAddr,
    connections: &Connections,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: ResponseBody,
{
    let mut builder = Builder::new(TokioExecutor::new());
    if let Some(timeout) = connections.header_timeout {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout);
    }
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!("connection from {peer}: {e}");
        if let Some(refused) = &connections.refused {
            count_refusal(&*e, refused);
        }
    }
}

/// Counts a connection's error if hyper refused a request with it.
fn count_refusal(error: &(dyn std::error::Error + 'static), refused: &Refused) {
    let mut source = Some(error);
    while let Some(e) = source {
        // A header timeout is not counted: hyper reports an idle
        // keep-alive connection closed by it the same way as a slow head.
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_parse() || e.is_parse_too_large() {
                refused.malformed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        source = e.source();
    }
}
