//! HTTP/1.x messages out of one reassembled direction of a TCP connection.
//!
//! Incremental: bytes arrive as the capture delivers them, with holes where
//! packets were lost. Framing follows RFC 9112 §6: Transfer-Encoding chunked
//! over Content-Length, no body for HEAD, 1xx, 204 and 304, bodies ended by
//! the connection close, tunnels after CONNECT and 101. Obsolete line folding
//! is unfolded (RFC 9112 §5.2). After a message whose framing cannot be
//! trusted (an invalid Content-Length, a chunk size that overflows, lost
//! bytes inside a head), the parser resynchronises at the next line that
//! starts a message, so one bad message does not swallow those after it.

use memchr::memmem;

use crate::capture::Header;
use crate::http::framing::{
    content_length, joined, last_coding_is_chunked, response_framing, Framing,
};

/// Heads longer than this are not HTTP (or not worth keeping).
const MAX_HEAD: usize = 64 * 1024;

/// Which direction of the connection this parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// A parsed message.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request method (requests only).
    pub method: String,
    /// Request target (requests only).
    pub target: String,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/0.9`.
    pub version: String,
    /// Status code (responses only); 0 for an HTTP/0.9 answer, which has none.
    pub status: u16,
    /// Headers then trailers, names lower-cased.
    pub headers: Vec<Header>,
    /// Body after transfer decoding, up to the body limit.
    pub body: Vec<u8>,
    /// Body bytes seen, kept or not.
    pub body_len: u64,
    /// Capture time of the first byte, µs.
    pub first_us: u64,
    /// Capture time of the last byte, µs.
    pub last_us: u64,
    /// Why the message cannot be trusted whole, if it cannot.
    pub incomplete: Option<String>,
    /// After this message the connection carries a tunnel, not HTTP.
    pub tunnel: bool,
}

/// What the parser could not use, for the import summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// Bytes skipped while looking for the next message, and why.
    Skipped(&'static str, u64),
}

#[derive(Debug)]
enum State {
    /// Between messages.
    Head,
    /// A body of known length.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside a chunk.
    ChunkData(u64),
    /// The CRLF after a chunk.
    ChunkEnd,
    /// Trailer lines after the last chunk.
    Trailers,
    /// A body that ends when the connection closes.
    UntilClose,
    /// Tunnelled bytes (after CONNECT or an upgrade): skipped.
    Tunnel,
    /// Looking for the start of the next message.
    Resync(&'static str),
}

/// One direction's parser.
pub struct Parser {
    side: Side,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    current: Option<Message>,
    max_body: usize,
    /// Methods of requests whose responses are still due, oldest first;
    /// the response parser needs them to frame (HEAD, CONNECT).
    expected: std::collections::VecDeque<String>,
    /// The last request was HTTP/0.9: its answer has no head.
    expect_http09: bool,
}

impl Parser {
    /// A parser for one direction, keeping at most `max_body` bytes of a body.
    pub fn new(side: Side, max_body: usize) -> Parser {
        Parser {
            side,
            state: State::Head,
            buf: Vec::new(),
            pos: 0,
            current: None,
            max_body,
            expected: Default::default(),
            expect_http09: false,
        }
    }

    /// Tells a response parser that a request with `method` was sent.
    pub fn expect_response_to(&mut self, method: &str, http09: bool) {
        self.expected.push_back(method.to_string());
        self.expect_http09 = http09;
    }

    /// Starts by looking for the start of a message (a connection picked up
    /// without its SYN is likely mid-message).
    pub fn resync_from_here(&mut self, why: &'static str) {
        self.state = State::Resync(why);
    }

    /// Hands over the message whose head is parsed but whose body is still
    /// arriving: the other side answered it early (an error before the body,
    /// a refused `Expect: 100-continue`). Framing goes on; the rest of its
    /// body, if it comes, is skipped.
    pub fn take_in_progress(&mut self) -> Option<Message> {
        let mut message = self.current.take()?;
        message
            .incomplete
            .get_or_insert_with(|| "answered before the request body was complete".to_string());
        Some(message)
    }

    /// Puts the parser into tunnel mode (the other side saw a CONNECT accepted
    /// or a protocol switch).
    pub fn start_tunnel(&mut self) {
        self.state = State::Tunnel;
        self.buf.clear();
        self.pos = 0;
    }

    /// Feeds bytes captured at `ts`; complete messages go to `out`.
    pub fn feed(
        &mut self,
        data: &[u8],
        ts: u64,
        out: &mut Vec<Message>,
        trouble: &mut Vec<Trouble>,
    ) {
        if matches!(self.state, State::Tunnel) {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let data = if self.buf.is_empty() {
            self.body_straight(data, ts, out)
        } else {
            data
        };
        self.buf.extend_from_slice(data);
        while self.step(ts, out, trouble) {}
        if self.pos > 64 * 1024 || (self.pos > 0 && self.pos * 2 > self.buf.len()) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// `len` bytes were lost from the stream at `ts`.
    pub fn gap(&mut self, len: u64, out: &mut Vec<Message>, trouble: &mut Vec<Trouble>) {
        // Whatever was buffered and unparsed is now followed by a hole.
        let note = format!("{len} bytes lost from the capture");
        match self.state {
            State::Fixed(remaining) if self.pos == self.buf.len() && remaining >= len => {
                self.mark(note);
                self.add_body_len(len);
                self.state = State::Fixed(remaining - len);
                if remaining == len {
                    self.finish(out);
                }
            }
            State::UntilClose | State::ChunkData(_) if self.pos == self.buf.len() => {
                self.mark(note);
                self.add_body_len(len);
                if let State::ChunkData(r) = self.state {
                    if r >= len {
                        self.state = State::ChunkData(r - len);
                        return;
                    }
                    self.resync_after_loss(out, trouble);
                }
            }
            State::Tunnel | State::Resync(_) => {}
            _ => {
                if self.current.is_some() {
                    self.mark(note);
                }
                self.resync_after_loss(out, trouble);
            }
        }
    }

    fn resync_after_loss(&mut self, out: &mut Vec<Message>, trouble: &mut Vec<Trouble>) {
        let left = (self.buf.len() - self.pos) as u64;
        if left > 0 {
            trouble.push(Trouble::Skipped("bytes next to lost packets", left));
        }
        self.buf.clear();
        self.pos = 0;
        self.end_current(out);
        self.state = State::Resync("bytes after lost packets");
    }

    /// The connection ended (`reset` for RST): finishes or abandons what is open.
    pub fn close(&mut self, reset: bool, out: &mut Vec<Message>, trouble: &mut Vec<Trouble>) {
        match self.state {
            State::UntilClose => self.finish(out),
            State::Head if self.pos < self.buf.len() => {
                let rest = &self.buf[self.pos..];
                if !rest.iter().all(u8::is_ascii_whitespace) {
                    let why = if reset {
                        "message head cut by a reset"
                    } else {
                        "message head cut by the close"
                    };
                    trouble.push(Trouble::Skipped(why, rest.len() as u64));
                }
            }
            State::Head | State::Tunnel | State::Resync(_) => {}
            _ => {
                let why = if reset {
                    "connection reset mid-message"
                } else {
                    "connection closed mid-message"
                };
                self.mark(why.to_string());
                self.end_current(out);
            }
        }
        self.buf.clear();
        self.pos = 0;
        self.state = State::Head;
    }

    /// One parsing step; false when more bytes are needed.
    fn step(&mut self, ts: u64, out: &mut Vec<Message>, trouble: &mut Vec<Trouble>) -> bool {
        match self.state {
            State::Head => self.head(ts, out, trouble),
            State::Fixed(remaining) => {
                let take = self.take_body(remaining, ts);
                if take == remaining {
                    self.finish(out);
                    return true;
                }
                self.state = State::Fixed(remaining - take);
                false
            }
            State::UntilClose => {
                let n = (self.buf.len() - self.pos) as u64;
                self.take_body(n, ts);
                false
            }
            State::ChunkSize => self.chunk_size(out),
            State::ChunkData(remaining) => {
                let take = self.take_body(remaining, ts);
                if take == remaining {
                    self.state = State::ChunkEnd;
                    return true;
                }
                self.state = State::ChunkData(remaining - take);
                false
            }
            State::ChunkEnd => self.chunk_end(out),
            State::Trailers => self.trailers(out),
            State::Tunnel => {
                self.pos = self.buf.len();
                false
            }
            State::Resync(why) => self.resync(why, trouble),
        }
    }

    fn head(&mut self, ts: u64, out: &mut Vec<Message>, trouble: &mut Vec<Trouble>) -> bool {
        // Blank lines between messages are allowed (RFC 9112 §2.2).
        while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\r' | b'\n') {
            self.pos += 1;
        }
        if self.pos == self.buf.len() {
            return false;
        }
        if self.side == Side::Response && self.expect_http09 {
            return self.http09_response(ts);
        }
        let data = &self.buf[self.pos..];
        let parsed = match self.side {
            Side::Request => parse_request(data),
            Side::Response => parse_response(data),
        };
        match parsed {
            Parsed::Partial if data.len() > MAX_HEAD => {
                self.skip_bad_head("message head over 64 KiB", trouble);
                true
            }
            Parsed::Partial => false,
            Parsed::Invalid => {
                self.skip_bad_head(
                    match self.side {
                        Side::Request => "unparseable request head",
                        Side::Response => "unparseable response head",
                    },
                    trouble,
                );
                true
            }
            Parsed::Done(len, mut message) => {
                self.pos += len;
                message.first_us = ts;
                message.last_us = ts;
                self.start_body(message, out);
                true
            }
        }
    }

    fn http09_response(&mut self, ts: u64) -> bool {
        self.expect_http09 = false;
        self.expected.pop_front();
        self.current = Some(Message {
            version: "HTTP/0.9".into(),
            status: 0,
            first_us: ts,
            last_us: ts,
            ..Message::default()
        });
        self.state = State::UntilClose;
        true
    }

    fn skip_bad_head(&mut self, why: &'static str, trouble: &mut Vec<Trouble>) {
        // Skip the offending line, then look for the next message.
        let data = &self.buf[self.pos..];
        let line = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
        trouble.push(Trouble::Skipped(why, line as u64));
        self.pos += line;
        self.state = State::Resync(why);
    }

    /// Decides the body's framing from the head.
    fn start_body(&mut self, mut message: Message, out: &mut Vec<Message>) {
        let framing = match self.side {
            Side::Request => request_framing(&message),
            Side::Response => {
                if (100..200).contains(&message.status) && message.status != 101 {
                    // Interim answer (100 Continue): not the response yet.
                    self.state = State::Head;
                    return;
                }
                let method = self.expected.pop_front().unwrap_or_default();
                response_framing(message.status, &message.headers, &method)
            }
        };
        match framing {
            Framing::Invalid(why) => {
                message.incomplete = Some(why.to_string());
                out.push(message);
                self.state = State::Resync(why);
            }
            Framing::None => {
                self.current = Some(message);
                self.finish(out);
            }
            Framing::Tunnel => {
                message.tunnel = true;
                self.current = Some(message);
                self.finish(out);
                self.start_tunnel();
            }
            Framing::Length(0) => {
                self.current = Some(message);
                self.finish(out);
            }
            Framing::Length(n) => {
                message.body.reserve(n.min(self.max_body as u64) as usize);
                self.current = Some(message);
                self.state = State::Fixed(n);
            }
            Framing::Chunked => {
                self.current = Some(message);
                self.state = State::ChunkSize;
            }
            Framing::UntilClose => {
                self.current = Some(message);
                self.state = State::UntilClose;
            }
        }
    }

    fn chunk_size(&mut self, out: &mut Vec<Message>) -> bool {
        let data = &self.buf[self.pos..];
        let Some(eol) = memchr::memchr(b'\n', data) else {
            if data.len() > 1024 {
                self.bad_chunk("chunk-size line too long", out);
                return true;
            }
            return false;
        };
        let line = trim_line(&data[..eol]);
        let digits = line.split(|&b| b == b';').next().unwrap_or(b"");
        let digits = trim_spaces(digits);
        let size = parse_hex(digits);
        self.pos += eol + 1;
        match size {
            Some(0) => self.state = State::Trailers,
            Some(n) => self.state = State::ChunkData(n),
            None => self.bad_chunk("invalid or overflowing chunk size", out),
        }
        true
    }

    fn bad_chunk(&mut self, why: &'static str, out: &mut Vec<Message>) {
        self.mark(why.to_string());
        self.end_current(out);
        self.state = State::Resync(why);
    }

    fn chunk_end(&mut self, out: &mut Vec<Message>) -> bool {
        let data = &self.buf[self.pos..];
        match data {
            [b'\r', b'\n', ..] => self.pos += 2,
            [b'\n', ..] => self.pos += 1,
            [b'\r'] | [] => return false,
            _ => {
                self.bad_chunk("chunk not followed by CRLF", out);
                return true;
            }
        }
        self.state = State::ChunkSize;
        true
    }

    fn trailers(&mut self, out: &mut Vec<Message>) -> bool {
        let data = &self.buf[self.pos..];
        let Some(eol) = memchr::memchr(b'\n', data) else {
            return false;
        };
        let line = trim_line(&data[..eol]);
        self.pos += eol + 1;
        if line.is_empty() {
            self.finish(out);
            return true;
        }
        if let (Some(message), Some(colon)) = (self.current.as_mut(), memchr::memchr(b':', line)) {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = trim_spaces(&line[colon + 1..]);
            message.headers.push(Header::from_bytes(&name, value));
        }
        true
    }

    fn resync(&mut self, why: &'static str, trouble: &mut Vec<Trouble>) -> bool {
        let data = &self.buf[self.pos..];
        match find_message_start(self.side, data) {
            Some(at) => {
                if at > 0 {
                    trouble.push(Trouble::Skipped(why, at as u64));
                }
                self.pos += at;
                self.state = State::Head;
                true
            }
            None => {
                // Keep a short tail: a message start may straddle packets.
                let keep = data.len().min(32);
                let skipped = data.len() - keep;
                if skipped > 0 {
                    trouble.push(Trouble::Skipped(why, skipped as u64));
                }
                self.pos += skipped;
                false
            }
        }
    }

    /// With nothing buffered, body bytes go from the packet straight into the
    /// message; returns what is left for the buffer (the next head, a chunk
    /// size line).
    fn body_straight<'d>(
        &mut self,
        mut data: &'d [u8],
        ts: u64,
        out: &mut Vec<Message>,
    ) -> &'d [u8] {
        while !data.is_empty() {
            let remaining = match self.state {
                State::Fixed(r) | State::ChunkData(r) => r,
                State::UntilClose => u64::MAX,
                _ => break,
            };
            let take = (data.len() as u64).min(remaining) as usize;
            self.keep_body(&data[..take], ts);
            data = &data[take..];
            let left = remaining - take as u64;
            match self.state {
                State::Fixed(_) if left == 0 => self.finish(out),
                State::Fixed(_) => self.state = State::Fixed(left),
                State::ChunkData(_) if left == 0 => self.state = State::ChunkEnd,
                State::ChunkData(_) => self.state = State::ChunkData(left),
                _ => {}
            }
        }
        data
    }

    /// Appends body bytes to the message, up to the body limit.
    fn keep_body(&mut self, chunk: &[u8], ts: u64) {
        if let Some(message) = self.current.as_mut() {
            let room = self.max_body.saturating_sub(message.body.len());
            message
                .body
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room && message.incomplete.is_none() {
                message.incomplete =
                    Some(format!("body over the {} byte limit, cut", self.max_body));
            }
            message.body_len += chunk.len() as u64;
            message.last_us = ts;
        }
    }

    /// Moves up to `max` body bytes from the buffer into the message.
    fn take_body(&mut self, max: u64, ts: u64) -> u64 {
        let available = (self.buf.len() - self.pos) as u64;
        let take = available.min(max) as usize;
        if take == 0 {
            return 0;
        }
        let chunk = std::mem::take(&mut self.buf);
        self.keep_body(&chunk[self.pos..self.pos + take], ts);
        self.buf = chunk;
        self.pos += take;
        take as u64
    }

    fn add_body_len(&mut self, len: u64) {
        if let Some(message) = self.current.as_mut() {
            message.body_len += len;
        }
    }

    fn mark(&mut self, why: String) {
        if let Some(message) = self.current.as_mut() {
            message.incomplete.get_or_insert(why);
        }
    }

    fn finish(&mut self, out: &mut Vec<Message>) {
        self.end_current(out);
        if !matches!(self.state, State::Tunnel) {
            self.state = State::Head;
        }
    }

    /// Hands over the message in progress, if any. Its last byte's time was
    /// set as bytes arrived; ending it adds none.
    fn end_current(&mut self, out: &mut Vec<Message>) {
        if let Some(message) = self.current.take() {
            out.push(message);
        }
    }
}

enum Parsed {
    Partial,
    Invalid,
    Done(usize, Message),
}

fn parse_request(data: &[u8]) -> Parsed {
    if let Some(message) = http09_request(data) {
        return message;
    }
    // Uninitialised slots: zeroing 256 headers on every attempt shows in profiles.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(data, &mut headers) {
        Ok(httparse::Status::Complete(len)) => Parsed::Done(len, request_message(&req)),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => with_unfolded_head(data, |head| {
            let mut headers = [httparse::EMPTY_HEADER; 256];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(head) {
                Ok(httparse::Status::Complete(_)) => Some(request_message(&req)),
                _ => lenient_request(head),
            }
        }),
    }
}

fn parse_response(data: &[u8]) -> Parsed {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 256];
    let mut res = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    config.allow_obsolete_multiline_headers_in_responses(true);
    config.allow_spaces_after_header_name_in_responses(true);
    match config.parse_response_with_uninit_headers(&mut res, data, &mut headers) {
        Ok(httparse::Status::Complete(len)) => Parsed::Done(len, response_message(&res)),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// Retries a head that failed to parse with obsolete line folding replaced by
/// spaces (RFC 9112 §5.2) and a bare-LF line end tolerated.
fn with_unfolded_head(data: &[u8], parse: impl Fn(&[u8]) -> Option<Message>) -> Parsed {
    let end = memmem::find(data, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| memmem::find(data, b"\n\n").map(|i| i + 2));
    let Some(end) = end else {
        return if data.len() > MAX_HEAD {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    };
    let mut head = Vec::with_capacity(end);
    let mut i = 0;
    while i < end {
        let fold = data[i] == b'\r'
            && data.get(i + 1) == Some(&b'\n')
            && matches!(data.get(i + 2), Some(b' ' | b'\t'))
            && i + 2 < end;
        if fold {
            head.push(b' ');
            i += 3;
        } else {
            head.push(data[i]);
            i += 1;
        }
    }
    match parse(&head) {
        Some(message) => Parsed::Done(end, message),
        None => Parsed::Invalid,
    }
}

/// A request head httparse refuses but servers accept, read as Zeek reads
/// it: an empty target (`GET  HTTP/1.1`) or one with spaces, a version with
/// no minor digit (`HTTP/1.`), header lines without a colon (skipped). The
/// target is everything between the method and the last ` HTTP/`.
fn lenient_request(head: &[u8]) -> Option<Message> {
    let eol = memchr::memchr(b'\n', head)?;
    let line = trim_line(&head[..eol]);
    let sp = memchr::memchr(b' ', line)?;
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|b| is_method_char(*b)) {
        return None;
    }
    let version_at = memmem::rfind(line, b" HTTP/").filter(|&v| v >= sp)?;
    let version = String::from_utf8_lossy(&line[version_at + 1..]).into_owned();
    let target = trim_spaces(&line[sp..version_at]);
    let mut headers = Vec::new();
    for raw in head[eol + 1..].split(|&b| b == b'\n') {
        let raw = trim_line(raw);
        if raw.is_empty() {
            break;
        }
        if let Some(colon) = memchr::memchr(b':', raw) {
            let name = String::from_utf8_lossy(trim_spaces(&raw[..colon])).into_owned();
            if !name.is_empty() && !name.contains(' ') {
                headers.push(Header::from_bytes(&name, trim_spaces(&raw[colon + 1..])));
            }
        }
    }
    Some(Message {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        version,
        headers,
        ..Message::default()
    })
}

fn is_method_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'_' || b == b'-'
}

/// `GET /path\r\n` with no version: an HTTP/0.9 request.
fn http09_request(data: &[u8]) -> Option<Parsed> {
    let eol = memchr::memchr(b'\n', data)?;
    let line = trim_line(&data[..eol]);
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (method, target) = (parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !method.iter().all(|b| is_method_char(*b))
        || target.starts_with(b"HTTP/")
    {
        return None;
    }
    Some(Parsed::Done(
        eol + 1,
        Message {
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            version: "HTTP/0.9".into(),
            ..Message::default()
        },
    ))
}

fn request_message(req: &httparse::Request) -> Message {
    Message {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        version: format!("HTTP/1.{}", req.version.unwrap_or(1)),
        headers: headers(req.headers),
        ..Message::default()
    }
}

fn response_message(res: &httparse::Response) -> Message {
    Message {
        version: format!("HTTP/1.{}", res.version.unwrap_or(1)),
        status: res.code.unwrap_or(0),
        headers: headers(res.headers),
        ..Message::default()
    }
}

fn headers(list: &[httparse::Header]) -> Vec<Header> {
    list.iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| Header::from_bytes(h.name, trim_spaces(h.value)))
        .collect()
}

fn request_framing(message: &Message) -> Framing {
    if message.version == "HTTP/0.9" {
        return Framing::None;
    }
    if let Some(te) = joined(&message.headers, "transfer-encoding") {
        return if last_coding_is_chunked(&te) {
            Framing::Chunked
        } else {
            // RFC 9112 §6.3: the length of such a request cannot be known.
            Framing::Invalid("request Transfer-Encoding does not end in chunked")
        };
    }
    match content_length(&message.headers) {
        Ok(Some(n)) => Framing::Length(n),
        Ok(None) => Framing::None,
        Err(why) => Framing::Invalid(why),
    }
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Where the next message seems to start: a request line
/// (`TOKEN SP target SP HTTP/1.x`) or a status line (`HTTP/1.x SP 3DIGIT`)
/// at the start of a line; or, for requests, a well-known method right
/// before ` target HTTP/1.x`, or a status line, anywhere: a body without a
/// final newline runs straight into the next message.
fn find_message_start(side: Side, data: &[u8]) -> Option<usize> {
    let at_line_start = find_at_line_start(side, data);
    let inline = match side {
        Side::Request => find_inline_request(data),
        Side::Response => find_inline_status(data),
    };
    match (at_line_start, inline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn find_at_line_start(side: Side, data: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    while line_start < data.len() {
        let rest = &data[line_start..];
        let eol = memchr::memchr(b'\n', rest)?;
        if starts_message(side, trim_line(&rest[..eol])) {
            return Some(line_start);
        }
        line_start += eol + 1;
    }
    None
}

/// A status line anywhere, e.g. glued to the end of a binary body.
fn find_inline_status(data: &[u8]) -> Option<usize> {
    memmem::find_iter(data, b"HTTP/1.").find(|&at| {
        let rest = &data[at..];
        let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
        memchr::memchr(b'\n', rest).is_some() && starts_message(Side::Response, trim_line(line))
    })
}

const KNOWN_METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

fn find_inline_request(data: &[u8]) -> Option<usize> {
    for version in memmem::find_iter(data, b" HTTP/1.") {
        let line_start = memchr::memrchr(b'\n', &data[..version]).map_or(0, |i| i + 1);
        let line = &data[line_start..version];
        // The target is the last space-separated word before the version.
        let Some(sp) = memchr::memrchr(b' ', line) else {
            continue;
        };
        let before = &line[..sp];
        for method in KNOWN_METHODS {
            if before.ends_with(method) {
                return Some(line_start + sp - method.len());
            }
        }
    }
    None
}

fn starts_message(side: Side, line: &[u8]) -> bool {
    match side {
        Side::Response => {
            line.starts_with(b"HTTP/1.")
                && line.len() >= 12
                && line[8] == b' '
                && line[9..12].iter().all(u8::is_ascii_digit)
        }
        Side::Request => {
            let Some(sp) = memchr::memchr(b' ', line) else {
                return false;
            };
            let method = &line[..sp];
            !method.is_empty()
                && method.iter().all(|b| is_method_char(*b))
                && memmem::rfind(line, b" HTTP/1.").is_some_and(|v| v > sp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(side: Side, chunks: &[&[u8]]) -> (Vec<Message>, Vec<Trouble>) {
        let mut parser = Parser::new(side, 1 << 20);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        for (i, chunk) in chunks.iter().enumerate() {
            parser.feed(chunk, i as u64, &mut out, &mut trouble);
        }
        parser.close(false, &mut out, &mut trouble);
        (out, trouble)
    }

    #[test]
    fn pipelined_requests_split_anywhere() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
        for split in 1..stream.len() {
            let (out, trouble) = parse(Side::Request, &[&stream[..split], &stream[split..]]);
            let targets: Vec<_> = out.iter().map(|m| m.target.as_str()).collect();
            assert_eq!(targets, ["/a", "/b", "/c"], "split at {split}");
            assert_eq!(out[1].body, b"hello");
            assert!(trouble.is_empty());
        }
    }

    #[test]
    fn chunked_with_trailers() {
        let stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 7\r\n\r\n";
        let mut parser = Parser::new(Side::Response, 1 << 20);
        parser.expect_response_to("GET", false);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        for byte in stream.chunks(3) {
            parser.feed(byte, 1, &mut out, &mut trouble);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].body, b"hello world");
        assert!(out[0].headers.iter().any(|h| h.0 == "x-sum" && h.1 == "7"));
        assert!(out[0].incomplete.is_none());
    }

    #[test]
    fn head_and_204_have_no_body_and_close_ends_a_body() {
        let mut parser = Parser::new(Side::Response, 1 << 20);
        parser.expect_response_to("HEAD", false);
        parser.expect_response_to("GET", false);
        parser.expect_response_to("GET", false);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close";
        parser.feed(stream, 1, &mut out, &mut trouble);
        parser.close(false, &mut out, &mut trouble);
        assert_eq!(out.len(), 3);
        assert!(out[0].body.is_empty() && out[1].body.is_empty());
        assert_eq!(out[2].body, b"until close");
        assert!(out[2].incomplete.is_none());
    }

    #[test]
    fn interim_100_is_skipped() {
        let mut parser = Parser::new(Side::Response, 1 << 20);
        parser.expect_response_to("POST", false);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        parser.feed(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            1,
            &mut out,
            &mut trouble,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, 201);
    }

    #[test]
    fn smuggling_variants_resync_at_the_next_request() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0005\r\n\r\nXXXXXGET /next HTTP/1.1\r\n\r\n",
        ];
        for stream in cases {
            let (out, _) = parse(Side::Request, &[stream]);
            let targets: Vec<_> = out
                .iter()
                .map(|m| (m.method.as_str(), m.target.as_str()))
                .collect();
            assert_eq!(
                targets,
                [("POST", "/"), ("GET", "/next")],
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn resync_finds_a_request_glued_to_a_binary_body() {
        let mut parser = Parser::new(Side::Request, 1 << 20);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        parser.feed(
            b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nxx",
            1,
            &mut out,
            &mut trouble,
        );
        parser.gap(100, &mut out, &mut trouble);
        parser.feed(
            b"\x06\x06\x06DELETE /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nzGET /c HTTP/1.1\r\n\r\n",
            3,
            &mut out,
            &mut trouble,
        );
        let targets: Vec<_> = out.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/a", "/b", "/c"]);
        assert!(out[0].incomplete.is_some());
    }

    #[test]
    fn http09_request_and_answer() {
        let (out, _) = parse(Side::Request, &[b"GET /old.html\r\n"]);
        assert_eq!(
            (out[0].target.as_str(), out[0].version.as_str()),
            ("/old.html", "HTTP/0.9")
        );
        let mut parser = Parser::new(Side::Response, 1 << 20);
        parser.expect_response_to("GET", true);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        parser.feed(b"<html>raw</html>", 1, &mut out, &mut trouble);
        parser.close(false, &mut out, &mut trouble);
        assert_eq!(
            (out[0].status, out[0].body.as_slice()),
            (0, &b"<html>raw</html>"[..])
        );
    }

    #[test]
    fn a_gap_in_a_fixed_body_keeps_framing() {
        let mut parser = Parser::new(Side::Request, 1 << 20);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        parser.feed(
            b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
            1,
            &mut out,
            &mut trouble,
        );
        parser.gap(4, &mut out, &mut trouble);
        parser.feed(b"xyzGET /b HTTP/1.1\r\n\r\n", 3, &mut out, &mut trouble);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].body_len, 10);
        assert!(out[0]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("4 bytes lost"));
        assert_eq!(out[1].target, "/b");
    }

    #[test]
    fn body_limit_cuts_and_says_so() {
        let mut parser = Parser::new(Side::Request, 4);
        let (mut out, mut trouble) = (Vec::new(), Vec::new());
        parser.feed(
            b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
            1,
            &mut out,
            &mut trouble,
        );
        assert_eq!(out[0].body, b"0123");
        assert_eq!(out[0].body_len, 10);
        assert!(out[0].incomplete.as_deref().unwrap().contains("limit"));
    }
}
