//! One TCP connection: two reassembled directions, two HTTP parsers, and the
//! pairing of each response with the oldest request still waiting.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::http1::{Message, Parser, Side, Trouble};
use super::tcp::{Piece, Stream};

/// A finished request, with its answer if one was seen.
pub struct Pair {
    /// Provisional number, in request arrival order across connections.
    pub id: u64,
    /// The client's address.
    pub session: SocketAddr,
    /// The request.
    pub request: Message,
    /// The answer, if any.
    pub response: Option<Message>,
}

/// What a connection reports as it goes.
#[derive(Default)]
pub struct Output {
    /// Provisional numbers given to requests, in order (so that the writer can
    /// wait for them).
    pub opened: Vec<u64>,
    /// Finished pairs.
    pub pairs: Vec<Pair>,
    /// Responses with no request to pair with.
    pub orphan_responses: u64,
    /// Bytes the parsers skipped, by reason.
    pub trouble: Vec<Trouble>,
    /// Tunnels (CONNECT, upgrades) whose bytes were skipped.
    pub tunnels: u64,
    /// Bytes never captured (holes in the streams).
    pub lost_bytes: u64,
}

/// A connection between a client and a server.
pub struct Connection {
    /// The client's address: the session key of its exchanges.
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    to_server: Stream,
    to_client: Stream,
    requests: Parser,
    responses: Parser,
    waiting: VecDeque<(u64, Message)>,
    /// Capture time of the last packet, µs.
    pub last_us: u64,
    client_done: bool,
    server_done: bool,
}

impl Connection {
    /// A connection; `midstream` when it was picked up without its SYN, so
    /// the parsers first look for the start of a message.
    pub fn new(
        client: SocketAddr,
        server: SocketAddr,
        max_body: usize,
        midstream: bool,
        ts: u64,
    ) -> Connection {
        let mut requests = Parser::new(Side::Request, max_body);
        let mut responses = Parser::new(Side::Response, max_body);
        if midstream {
            requests.resync_from_here("connection picked up mid-stream");
            responses.resync_from_here("connection picked up mid-stream");
        }
        Connection {
            client,
            server,
            to_server: Stream::default(),
            to_client: Stream::default(),
            requests,
            responses,
            waiting: VecDeque::new(),
            last_us: ts,
            client_done: false,
            server_done: false,
        }
    }

    /// The client's initial sequence number, if its SYN was seen.
    pub fn client_isn(&self) -> Option<u32> {
        self.to_server.isn
    }

    /// True once both sides closed, or either reset.
    pub fn is_done(&self) -> bool {
        self.client_done && self.server_done
    }

    /// A segment from `from` (the client or the server).
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        from_client: bool,
        seg: &super::link::Segment,
        ts: u64,
        next_id: &mut u64,
        out: &mut Output,
    ) {
        self.last_us = ts;
        if seg.ack {
            self.acknowledged(!from_client, seg.ack_number, ts, next_id, out);
        }
        let data_seq = if seg.syn {
            self.stream(from_client).syn(seg.seq);
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        self.pump(from_client, next_id, out, |stream, deliver| {
            stream.segment(data_seq, seg.payload, seg.wire_len, ts, deliver);
            if seg.fin || seg.rst {
                stream.closed = true;
                stream.finish(deliver);
            }
        });
        if seg.rst {
            self.close(true, next_id, out);
        } else if seg.fin {
            self.half_close(from_client, next_id, out);
        }
    }

    /// The other side acknowledged bytes of the stream from the client (or
    /// from the server).
    fn acknowledged(
        &mut self,
        of_client: bool,
        ack: u32,
        ts: u64,
        next_id: &mut u64,
        out: &mut Output,
    ) {
        self.pump(of_client, next_id, out, |stream, deliver| {
            stream.acknowledged(ack, ts, deliver)
        });
    }

    fn stream(&mut self, from_client: bool) -> &mut Stream {
        if from_client {
            &mut self.to_server
        } else {
            &mut self.to_client
        }
    }

    /// Runs `op` on one direction's stream and feeds what it delivers
    /// straight into that direction's parser (no copy), then handles the
    /// messages that completed.
    fn pump(
        &mut self,
        from_client: bool,
        next_id: &mut u64,
        out: &mut Output,
        op: impl FnOnce(&mut Stream, &mut dyn FnMut(Piece)),
    ) {
        let (stream, parser) = if from_client {
            (&mut self.to_server, &mut self.requests)
        } else {
            (&mut self.to_client, &mut self.responses)
        };
        let mut messages = Vec::new();
        let (trouble, lost) = (&mut out.trouble, &mut out.lost_bytes);
        op(stream, &mut |piece| match piece {
            Piece::Data(bytes, at) => parser.feed(bytes, at, &mut messages, trouble),
            Piece::Gap(len, _) => {
                *lost += len;
                parser.gap(len, &mut messages, trouble);
            }
        });
        if !messages.is_empty() {
            self.take(from_client, messages, next_id, out);
        }
    }

    /// Handles messages a parser finished.
    fn take(
        &mut self,
        from_client: bool,
        messages: Vec<Message>,
        next_id: &mut u64,
        out: &mut Output,
    ) {
        for message in messages {
            if from_client {
                let id = *next_id;
                *next_id += 1;
                out.opened.push(id);
                let http09 = message.version == "HTTP/0.9";
                self.responses.expect_response_to(&message.method, http09);
                self.waiting.push_back((id, message));
                continue;
            }
            if message.tunnel {
                out.tunnels += 1;
                self.requests.start_tunnel();
            }
            if self.waiting.is_empty() {
                self.catch_up_requests(next_id, out);
            }
            let early = self
                .waiting
                .is_empty()
                .then(|| self.requests.take_in_progress())
                .flatten();
            if let Some(request) = early {
                let id = *next_id;
                *next_id += 1;
                out.opened.push(id);
                self.waiting.push_back((id, request));
            }
            match self.waiting.pop_front() {
                Some((id, request)) => out.pairs.push(Pair {
                    id,
                    session: self.client,
                    request,
                    response: Some(message),
                }),
                None => out.orphan_responses += 1,
            }
        }
    }

    /// An answer came while its request is still short of bytes: whatever
    /// the server acknowledged and the capture lacks was lost from the
    /// capture; declaring it lets the request finish (marked) before pairing.
    fn catch_up_requests(&mut self, next_id: &mut u64, out: &mut Output) {
        self.pump(true, next_id, out, |stream, deliver| {
            stream.gap_to_acknowledged(deliver)
        });
    }

    fn half_close(&mut self, from_client: bool, next_id: &mut u64, out: &mut Output) {
        let mut messages = Vec::new();
        if from_client {
            self.client_done = true;
            self.requests.close(false, &mut messages, &mut out.trouble);
        } else {
            self.server_done = true;
            self.responses.close(false, &mut messages, &mut out.trouble);
        }
        self.take(from_client, messages, next_id, out);
        if self.is_done() {
            self.release_waiting(out);
        }
    }

    /// Ends the connection (reset, idle, end of capture): whatever is open is
    /// finished as far as it got, and requests with no answer are released.
    pub fn close(&mut self, reset: bool, next_id: &mut u64, out: &mut Output) {
        for from_client in [true, false] {
            self.pump(from_client, next_id, out, |stream, deliver| {
                stream.finish(deliver)
            });
        }
        for from_client in [true, false] {
            let mut messages = Vec::new();
            let parser = if from_client {
                &mut self.requests
            } else {
                &mut self.responses
            };
            parser.close(reset, &mut messages, &mut out.trouble);
            self.take(from_client, messages, next_id, out);
        }
        self.client_done = true;
        self.server_done = true;
        self.release_waiting(out);
    }

    fn release_waiting(&mut self, out: &mut Output) {
        for (id, request) in self.waiting.drain(..) {
            out.pairs.push(Pair {
                id,
                session: self.client,
                request,
                response: None,
            });
        }
    }
}
