//! HTTP/1.1 over cleartext for the replay engines: requests encoded once,
//! answers parsed straight into capture headers, each request's task
//! driving its connection itself.
//!
//! hyper-util's pooled client runs each connection as a task of its own and
//! hands it requests through a channel, so a request is written only when
//! that task's turn comes, after the sending task's; at 10,000 exchanges/s
//! on two cores that second hop put the p99 send lag past 1 ms. hyper's own
//! connection, driven from the request's task, still built a header map for
//! every request (which it then encoded) and another for every answer (which
//! tandem then turned into its header list): a third of an engine's
//! instructions per request. Here a request is its bytes ([`Outgoing`]),
//! written at once (one call unless the socket's buffer fills); an
//! answer's head is parsed by httparse into the capture's header list, and
//! its body read by the framing rules the packet parser uses (RFC 9112
//! §6.3). TLS and HTTP/2 targets keep hyper-util's client.

use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::connect::{acquire, endpoint, BoxError};
use super::framing::{keeps_alive, response_framing, Framing};
use super::tee::Kept;
use crate::capture::Header;

/// Heads of answers longer than this are refused (the packet parser's
/// bound too).
const MAX_HEAD: usize = 64 * 1024;
/// Header lines an answer may have (hyper's limit was 100); past them the
/// answer is malformed.
const MAX_HEADERS: usize = 128;
/// Chunk-size lines (with extensions) and trailer lines longer than this
/// are refused.
const MAX_LINE: usize = 8 * 1024;

/// The connections one engine keeps to one host and port.
pub struct Pool {
    address: String,
    /// Boxed: a connection taken out is held in its request's future.
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

/// A request as it goes on the wire: head and body, encoded once however
/// often it is sent.
#[derive(Debug)]
pub struct Outgoing {
    bytes: Vec<u8>,
    /// The answer to a HEAD has no body, whatever its headers say.
    head: bool,
    /// A CONNECT's 2xx answer turns the connection into a tunnel.
    connect: bool,
    /// Whether it may go out twice with the effect of once (RFC 9110
    /// §9.2.2).
    idempotent: bool,
    /// Header lines left out as not valid HTTP.
    invalid: usize,
}

/// An [`Outgoing`] being written: its request line, then its headers.
pub struct OutgoingHead(Outgoing);

impl OutgoingHead {
    /// A request by `method` for the path `path` makes in origin form
    /// (pieces written one after the other), with room for a body of
    /// `body_len` bytes. Fails if either would break the request line: a
    /// method that is not a token, a path with a space or a control
    /// character (UTF-8 in a path goes as recorded, as servers take it).
    pub fn new(method: &str, path: &[&str], body_len: usize) -> Result<OutgoingHead, String> {
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(format!("method {method:?} is not an HTTP token"));
        }
        let path_len: usize = path.iter().map(|p| p.len()).sum();
        let in_line = |p: &&str| p.bytes().all(|b| b > b' ' && b != 0x7f);
        if path_len == 0 || !path.iter().all(in_line) {
            return Err(format!(
                "request target {:?} is not valid in a request line",
                path.concat()
            ));
        }
        // Room for the request line, some 20 headers and the body: grown at
        // most once for a usual request.
        let mut bytes = Vec::with_capacity(method.len() + path_len + 768 + body_len);
        bytes.extend_from_slice(method.as_bytes());
        bytes.push(b' ');
        path.iter()
            .for_each(|p| bytes.extend_from_slice(p.as_bytes()));
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        let idempotent = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"].contains(&method);
        Ok(OutgoingHead(Outgoing {
            bytes,
            head: method == "HEAD",
            connect: method == "CONNECT",
            idempotent,
            invalid: 0,
        }))
    }

    /// Adds header `name: value`; one that is not valid HTTP (a name that
    /// is not a token, a value with a control character) is left out and
    /// counted instead. Says whether it went in.
    pub fn header(&mut self, name: &str, value: &[u8]) -> bool {
        let valid_value = value
            .iter()
            .all(|&b| (b >= b' ' && b != 0x7f) || b == b'\t');
        let out = &mut self.0;
        if name.is_empty() || !name.bytes().all(is_token_byte) || !valid_value {
            out.invalid += 1;
            return false;
        }
        out.bytes.extend_from_slice(name.as_bytes());
        out.bytes.extend_from_slice(b": ");
        out.bytes.extend_from_slice(value);
        out.bytes.extend_from_slice(b"\r\n");
        true
    }

    /// The request with `body`. A body goes with its own Content-Length
    /// (whatever the recording said); an empty one with `Content-Length: 0`
    /// only if `length` (the recording had one), else with none, as hyper
    /// sent it.
    pub fn body(self, body: &[u8], length: bool) -> Outgoing {
        let mut out = self.0;
        if !body.is_empty() || length {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out.bytes, "content-length: {}\r\n", body.len());
        }
        out.bytes.extend_from_slice(b"\r\n");
        out.bytes.extend_from_slice(body);
        out
    }
}

impl Outgoing {
    /// Header lines left out as not valid HTTP.
    pub fn invalid(&self) -> usize {
        self.invalid
    }

    /// The bytes written for it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A token character (RFC 9110 §5.6.2): what methods and header names are
/// made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An answer: its status and headers, its whole body, and when the
/// request's first byte was written.
pub struct Answer {
    pub status: u16,
    /// As the capture keeps them: names in lower case, in the order sent.
    pub headers: Vec<Header>,
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

/// An answer that is not HTTP/1.x as RFC 9112 frames it.
#[derive(Debug)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the answer is not valid HTTP/1.1: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

struct Conn {
    stream: TcpStream,
    /// What was read and not yet taken: a connection keeps its buffer from
    /// answer to answer.
    read: BytesMut,
}

/// How a round trip failed, and how far it had gone.
struct Trip {
    error: BoxError,
    /// No byte of the request was written.
    unsent: bool,
    /// Some byte of an answer had come back.
    heard: bool,
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

    /// Sends `out` and reads the whole answer. A connection found closed
    /// before the request was written is replaced once. An idempotent
    /// request whose reused connection closed after it went out but before
    /// any byte of an answer (the server's keep-alive timeout met it on the
    /// way) is sent once more on a new connection, as browsers and hyper's
    /// pool do; the answer says so.
    pub async fn request(&self, out: &Outgoing) -> Result<Answer, BoxError> {
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
            // A resend takes a new connection; an idle one stays idle.
            let idle = if resent { None } else { self.take() };
            let (mut conn, reused) = match idle {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare, and its state would be room
                // in every request's future.
                None => (
                    Box::pin(connect(&self.address, self.connect_timeout)).await?,
                    false,
                ),
            };
            let sent = Instant::now();
            match conn.round_trip(out, self.max_body).await {
                Ok((status, headers, (body, truncated), reusable)) => {
                    if reusable {
                        self.idle.lock().expect("pool lock").push(conn);
                    }
                    return Ok(Answer {
                        status,
                        headers,
                        body,
                        truncated,
                        sent,
                        retried: resent,
                    });
                }
                Err(trip) if trip.unsent && reused && !replaced => replaced = true,
                Err(trip) if reused && !resent && !trip.heard && out.idempotent => resent = true,
                Err(trip) if resent => return Err(RetriedError(trip.error).into()),
                Err(trip) => return Err(trip.error),
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(conn) = idle.pop() {
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }
}

async fn connect(address: &str, timeout: Duration) -> Result<Box<Conn>, BoxError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(stream) => stream?,
        Err(_) => {
            let message = format!("connecting to {address} timed out after {timeout:?}");
            return Err(io::Error::new(io::ErrorKind::TimedOut, message).into());
        }
    };
    stream.set_nodelay(true)?;
    Ok(Box::new(Conn {
        stream,
        read: BytesMut::new(),
    }))
}

/// A body, or its first bytes with the whole one's length and hash.
type Bounded = (Bytes, Option<crate::capture::Truncated>);

/// An answer's status, headers, body, and whether its connection can carry
/// another request.
type RoundTrip = (u16, Vec<Header>, Bounded, bool);

/// An answer's head as parsed.
struct AnswerHead {
    status: u16,
    headers: Vec<Header>,
    framing: Framing,
    keeps_alive: bool,
}

impl Conn {
    /// Whether the server has not closed it (nor sent anything unasked):
    /// the readiness the runtime already knows, read without a system call
    /// unless it says the socket is readable.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `out` and reads its answer.
    async fn round_trip(&mut self, out: &Outgoing, max_body: usize) -> Result<RoundTrip, Trip> {
        self.write(out.as_bytes()).await?;
        let mut heard = false;
        let failed = |error: BoxError, heard: bool| Trip {
            error,
            unsent: false,
            heard,
        };
        let head = loop {
            let head = self
                .read_head(&mut heard)
                .await
                .map_err(|e| failed(e, heard))?;
            // An interim answer (100 Continue, 103 Early Hints): the answer
            // follows.
            if !(100..200).contains(&head.status) || head.status == 101 {
                break head;
            }
        };
        let framing = match head.status {
            _ if out.head => Framing::None,
            200..300 if out.connect => Framing::Tunnel,
            _ => head.framing,
        };
        let body = self
            .read_body(framing, max_body)
            .await
            .map_err(|e| failed(e, true))?;
        // Bytes past the answer were never asked for: the connection is out
        // of step and goes.
        let reusable = head.keeps_alive
            && self.read.is_empty()
            && matches!(
                framing,
                Framing::None | Framing::Length(_) | Framing::Chunked
            );
        Ok((head.status, head.headers, body, reusable))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Trip> {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]).await {
                Ok(0) => {
                    return Err(Trip {
                        error: io::Error::from(io::ErrorKind::WriteZero).into(),
                        unsent: written == 0,
                        heard: false,
                    })
                }
                Ok(n) => written += n,
                Err(e) => {
                    return Err(Trip {
                        error: e.into(),
                        unsent: written == 0,
                        heard: false,
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads more into the buffer; an error if the connection closed.
    async fn fill(&mut self, closed: &'static str) -> Result<(), BoxError> {
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        match self.stream.read_buf(&mut self.read).await? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, closed).into()),
            _ => Ok(()),
        }
    }

    async fn read_head(&mut self, heard: &mut bool) -> Result<AnswerHead, BoxError> {
        loop {
            if !self.read.is_empty() {
                if let Some((used, head)) = parse_head(&self.read)? {
                    self.read.advance(used);
                    return Ok(head);
                }
                if self.read.len() > MAX_HEAD {
                    return Err(Malformed(format!("head longer than {MAX_HEAD} bytes")).into());
                }
            }
            let closed = if *heard {
                "connection closed before the answer's head was complete"
            } else {
                "connection closed before an answer"
            };
            self.fill(closed).await?;
            *heard = true;
        }
    }

    async fn read_body(&mut self, framing: Framing, max: usize) -> Result<Bounded, BoxError> {
        let mut kept = Kept::new(max);
        match framing {
            Framing::None | Framing::Tunnel | Framing::Length(0) => {}
            Framing::Length(n) => self.read_exactly(n, &mut kept).await?,
            Framing::Chunked => self.read_chunks(&mut kept).await?,
            Framing::UntilClose | Framing::Invalid(_) => loop {
                kept.add(&self.read);
                self.read.clear();
                self.read.reserve(16 * 1024);
                if self.stream.read_buf(&mut self.read).await? == 0 {
                    break;
                }
            },
        }
        Ok(kept.finish())
    }

    /// The next `n` bytes, kept in `kept`.
    async fn read_exactly(&mut self, mut n: u64, kept: &mut Kept) -> Result<(), BoxError> {
        loop {
            let here = (self.read.len() as u64).min(n) as usize;
            kept.add(&self.read[..here]);
            self.read.advance(here);
            n -= here as u64;
            if n == 0 {
                return Ok(());
            }
            self.fill("connection closed before the answer's body was complete")
                .await?;
        }
    }

    /// A chunked body's data, kept in `kept`; its trailers are read and
    /// left out, as hyper did.
    async fn read_chunks(&mut self, kept: &mut Kept) -> Result<(), BoxError> {
        const CUT: &str = "connection closed inside a chunked body";
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.read.advance(used);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.read.len() <= MAX_LINE => {
                        self.fill(CUT).await?
                    }
                    _ => return Err(Malformed("invalid chunk size line".into()).into()),
                }
            };
            if size == 0 {
                return self.skip_trailers().await;
            }
            self.read_exactly(size, kept).await?;
            while self.read.len() < 2 {
                self.fill(CUT).await?;
            }
            if &self.read[..2] != b"\r\n" {
                return Err(Malformed("chunk data not followed by CRLF".into()).into());
            }
            self.read.advance(2);
        }
    }

    /// Trailer lines up to the empty line that ends a chunked body.
    async fn skip_trailers(&mut self) -> Result<(), BoxError> {
        loop {
            match memchr::memchr(b'\n', &self.read) {
                Some(end) => {
                    let empty = self.read[..end].iter().all(|&b| b == b'\r');
                    self.read.advance(end + 1);
                    if empty {
                        return Ok(());
                    }
                }
                None if self.read.len() > MAX_LINE => {
                    return Err(Malformed("trailer line too long".into()).into())
                }
                None => {
                    self.fill("connection closed inside a chunked body's trailers")
                        .await?
                }
            }
        }
    }
}

/// The answer head at the start of `data`, and its length; `None` if it is
/// not all there yet.
fn parse_head(data: &[u8]) -> Result<Option<(usize, AnswerHead)>, Malformed> {
    // Uninitialised: zeroing the slots for every answer shows in profiles.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let used = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, data, &mut slots)
    {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Malformed(e.to_string())),
    };
    let status = res.code.unwrap_or(0);
    let headers: Vec<Header> = res
        .headers
        .iter()
        .map(|h| Header::from_bytes(h.name, h.value.trim_ascii_end()))
        .collect();
    // As if to a GET: the round trip knows the method, and settles HEAD
    // and CONNECT itself.
    let framing = response_framing(status, &headers, "GET");
    let keeps_alive = keeps_alive(res.version.unwrap_or(1), &headers);
    Ok(Some((
        used,
        AnswerHead {
            status,
            headers,
            framing,
            keeps_alive,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ErrorKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback server giving `answers` in turn, one per request head it
    /// reads, closing the connection after any answer marked so; returns
    /// its address and how many connections it accepted.
    async fn server(answers: Vec<(&'static str, bool)>) -> (Uri, Arc<Mutex<usize>>) {
        server_in_pieces(answers, usize::MAX).await
    }

    /// [`server`], writing each answer `piece` bytes at a time, each write
    /// on its own (no delay on the socket), so that the client reads heads,
    /// chunk sizes and line ends cut anywhere.
    async fn server_in_pieces(
        answers: Vec<(&'static str, bool)>,
        piece: usize,
    ) -> (Uri, Arc<Mutex<usize>>) {
        let answers = answers.into_iter().map(|(a, c)| (a.to_string(), c));
        server_with(answers.collect(), move |_| piece).await
    }

    /// [`server`], writing answer `i` `piece(i)` bytes at a time.
    async fn server_with(
        answers: Vec<(String, bool)>,
        piece: impl Fn(usize) -> usize + Send + 'static,
    ) -> (Uri, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter().enumerate();
            'accept: while let Ok((mut socket, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                socket.set_nodelay(true).unwrap();
                let mut seen = Vec::new();
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => continue 'accept,
                            Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    seen.drain(..end + 4);
                    let Some((i, (answer, close))) = answers.next() else {
                        return;
                    };
                    let piece = piece(i);
                    for part in answer.as_bytes().chunks(piece) {
                        socket.write_all(part).await.unwrap();
                        if piece < answer.len() {
                            // Deferred past the runtime's next look at the
                            // sockets: the client reads this piece alone.
                            tokio::task::yield_now().await;
                        }
                    }
                    if close {
                        continue 'accept;
                    }
                }
            }
        });
        (uri, accepted)
    }

    fn request(method: &str) -> Outgoing {
        let mut head = OutgoingHead::new(method, &["/orders/7"], 0).unwrap();
        head.header("host", b"shop.test");
        head.body(b"", false)
    }

    fn pool(uri: &Uri) -> Pool {
        Pool::new(uri, Some(4), Duration::from_secs(2), Arc::default()).unwrap()
    }

    fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
        answer
            .headers
            .iter()
            .find(|h| h.0 == name)
            .map(|h| h.1.as_str())
    }

    #[tokio::test]
    async fn answers_framed_every_way_are_read_whole_on_one_connection() {
        framed_every_way(usize::MAX).await;
    }

    #[tokio::test]
    async fn answers_that_arrive_a_byte_at_a_time_are_read_alike() {
        framed_every_way(1).await;
    }

    async fn framed_every_way(piece: usize) {
        let (uri, accepted) = server_in_pieces(vec![
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Order:  7 \r\n\r\nhello",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\nX-Last: yes\r\n\r\nuntil the close", true),
            ],
            piece,
        )
        .await;
        let pool = pool(&uri);
        let get = request("GET");
        let first = pool.request(&get).await.unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"hello"[..]));
        assert_eq!(header(&first, "x-order"), Some("7"), "lower case, trimmed");
        let chunked = pool.request(&get).await.unwrap();
        assert_eq!(&chunked.body[..], b"hello world");
        assert_eq!(
            header(&chunked, "x-trailer"),
            None,
            "trailers are not headers"
        );
        let empty = pool.request(&get).await.unwrap();
        assert_eq!((empty.status, empty.body.len()), (204, 0));
        let head = pool.request(&request("HEAD")).await.unwrap();
        assert_eq!(
            (head.status, head.body.len()),
            (200, 0),
            "a HEAD's answer has no body"
        );
        let last = pool.request(&get).await.unwrap();
        assert_eq!(&last.body[..], b"until the close");
        assert_eq!(
            *accepted.lock().unwrap(),
            1,
            "one connection carried all five"
        );
        assert!(
            pool.take().is_none(),
            "one read to its close is not used again"
        );
        assert!(!first.retried && !last.retried);
    }

    /// Answers framed at random (a length, or chunks of random sizes with
    /// and without extensions and trailers; some after a 100 Continue),
    /// written in pieces of 1 to 4,096 bytes: every body is read whole and
    /// in step, on one connection.
    #[tokio::test]
    async fn random_answers_in_random_pieces_are_read_whole() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (mut answers, mut bodies) = (Vec::new(), Vec::new());
        for i in 0..120 {
            let len = rng.gen_range(0..2_000);
            let body: String = (0..len).map(|_| rng.gen_range('a'..='z')).collect();
            let mut answer = String::new();
            if rng.gen_bool(0.1) {
                answer.push_str("HTTP/1.1 100 Continue\r\n\r\n");
            }
            answer.push_str(&format!("HTTP/1.1 200 OK\r\nX-Seq: {i}\r\n"));
            if rng.gen_bool(0.5) {
                answer.push_str(&format!("Content-Length: {len}\r\n\r\n{body}"));
            } else {
                answer.push_str("Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body.as_str();
                while !rest.is_empty() {
                    let (chunk, after) = rest.split_at(rng.gen_range(1..=rest.len().min(700)));
                    let ext = if rng.gen_bool(0.2) { ";name=value" } else { "" };
                    answer.push_str(&format!("{:X}{ext}\r\n{chunk}\r\n", chunk.len()));
                    rest = after;
                }
                answer.push_str("0\r\n");
                if rng.gen_bool(0.3) {
                    answer.push_str("X-Checksum: 1\r\n");
                }
                answer.push_str("\r\n");
            }
            answers.push((answer, false));
            bodies.push(body);
        }
        let sizes = [1, 3, 17, 256, 4096];
        let (uri, accepted) = server_with(answers, move |i| sizes[i % sizes.len()]).await;
        let pool = pool(&uri);
        for (i, body) in bodies.iter().enumerate() {
            let answer = pool.request(&request("GET")).await.unwrap();
            assert_eq!(header(&answer, "x-seq"), Some(i.to_string().as_str()));
            assert_eq!(answer.body, body.as_bytes(), "answer {i}");
        }
        assert_eq!(*accepted.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_connect_answered_2xx_is_a_tunnel_and_its_connection_is_not_reused() {
        let (uri, _) = server(vec![(
            "HTTP/1.1 200 Connection established\r\nContent-Length: 99\r\n\r\n",
            false,
        )])
        .await;
        let pool = pool(&uri);
        // Read as a length, the answer would wait for 99 bytes that never come.
        let connect = request("CONNECT");
        let answered = tokio::time::timeout(Duration::from_secs(5), pool.request(&connect));
        let tunnel = answered.await.expect("no body awaited").unwrap();
        assert_eq!((tunnel.status, tunnel.body.len()), (200, 0));
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_kept_cut_with_its_whole_length() {
        let body = "x".repeat(100);
        let answer: &'static str =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{body}").leak();
        let (uri, _) = server(vec![(answer, false)]).await;
        let pool = pool(&uri).with_max_body(10);
        let cut = pool.request(&request("GET")).await.unwrap();
        assert_eq!(cut.body.len(), 10);
        assert_eq!(cut.truncated.map(|t| t.len), Some(100));
    }

    #[tokio::test]
    async fn broken_answers_fail_with_what_went_wrong() {
        let cases = [
            (
                "HTTP/1.1 2x0 OK\r\n\r\n",
                ErrorKind::Protocol,
                "not valid HTTP/1.1",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                ErrorKind::Reset,
                "before the answer's body was complete",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                ErrorKind::Protocol,
                "invalid chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-",
                ErrorKind::Reset,
                "head was complete",
            ),
        ];
        for (answer, kind, says) in cases {
            let (uri, _) = server(vec![(answer, true)]).await;
            // A POST: not sent again when its connection closes.
            let error = pool(&uri).request(&request("POST")).await.err().unwrap();
            assert_eq!(super::super::classify(&*error), kind, "{answer:?}");
            let message = super::super::error_chain(&*error);
            assert!(message.contains(says), "{answer:?}: {message}");
        }
    }

    #[test]
    fn requests_are_encoded_once_with_their_length_and_valid_headers_only() {
        let mut head = OutgoingHead::new("POST", &["/orders?x=1"], 4).unwrap();
        head.header("host", b"shop.test");
        head.header("bad name", b"x");
        head.header("x-bad-value", b"a\nb");
        head.header("x-name", b"Zo\xeb");
        let out = head.body(b"{\"a\"", false);
        assert_eq!(out.invalid(), 2);
        assert_eq!(
            out.as_bytes(),
            b"POST /orders?x=1 HTTP/1.1\r\nhost: shop.test\r\nx-name: Zo\xeb\r\ncontent-length: 4\r\n\r\n{\"a\""
        );
        let empty = OutgoingHead::new("GET", &["/"], 0)
            .unwrap()
            .body(b"", false);
        assert_eq!(
            empty.as_bytes(),
            b"GET / HTTP/1.1\r\n\r\n",
            "no length for no body"
        );
        let recorded = OutgoingHead::new("POST", &["/"], 0)
            .unwrap()
            .body(b"", true);
        assert!(recorded.as_bytes().ends_with(b"content-length: 0\r\n\r\n"));
        assert!(OutgoingHead::new("GET", &["/a b"], 0).is_err());
        assert!(OutgoingHead::new("GE T", &["/"], 0).is_err());
    }
}
