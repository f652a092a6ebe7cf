//! Recording from packets: `tandem import` (pcap and pcapng files) and
//! `tandem record --interface` (live, libpcap).
//!
//! Frames are decoded to TCP segments ([`link`]), each connection's two
//! directions are reassembled by sequence number ([`tcp`]), HTTP/1.x messages
//! are parsed out of them ([`http1`]) and paired into exchanges ([`flow`]).
//! Nothing is dropped silently: what cannot be used is counted by reason in
//! the [`PacketSummary`], and usable requests with trouble are kept, marked
//! incomplete.

pub mod flow;
pub mod http1;
pub mod link;
pub mod tcp;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::capture::{Body, Exchange, Request, Response};
use flow::{Connection, Output, Pair};
use http1::Trouble;
use link::{Segment, Skip};

/// How packets become exchanges.
#[derive(Debug, Clone)]
pub struct AssemblyOptions {
    /// Bytes of a body kept at most; longer bodies are cut and marked.
    pub max_body: usize,
    /// A connection with no packet for this long (capture time) is closed.
    pub idle_timeout_us: u64,
    /// Server ports, when known: they tell client from server on a
    /// connection picked up without its SYN.
    pub server_ports: Vec<u16>,
    /// Connections tracked at most; past this the longest idle is closed.
    pub max_connections: usize,
}

impl Default for AssemblyOptions {
    fn default() -> Self {
        AssemblyOptions {
            max_body: 16 << 20,
            idle_timeout_us: 120_000_000,
            server_ports: Vec::new(),
            max_connections: 100_000,
        }
    }
}

/// What a packet recording saw and what it could not use, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketSummary {
    /// Frames read.
    pub packets: u64,
    /// Bytes of frames read (as captured).
    pub bytes: u64,
    /// TCP segments decoded.
    pub segments: u64,
    /// Connections tracked.
    pub connections: u64,
    /// Exchanges produced (requests, with or without an answer).
    pub exchanges: u64,
    /// Of which whole: request and answer, nothing missing.
    pub complete: u64,
    /// Of which marked incomplete.
    pub incomplete: u64,
    /// Of which no answer was seen.
    pub unanswered: u64,
    /// Answers with no request to pair with.
    pub orphan_responses: u64,
    /// Tunnels (CONNECT, protocol upgrades) whose payload was skipped.
    pub tunnels: u64,
    /// Bytes lost from the capture (holes in TCP streams).
    pub lost_bytes: u64,
    /// Frames not used, by reason.
    pub frames_skipped: BTreeMap<String, u64>,
    /// Stream bytes not used, by reason.
    pub bytes_skipped: BTreeMap<String, u64>,
    /// Why exchanges are incomplete, by reason.
    pub incomplete_reasons: BTreeMap<String, u64>,
    /// Connections closed early because too many were open.
    pub connections_evicted: u64,
    /// Packets the kernel dropped (live capture only).
    pub kernel_dropped: Option<u64>,
}

impl fmt::Display for PacketSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} packets ({} bytes), {} TCP segments, {} connections",
            self.packets, self.bytes, self.segments, self.connections
        )?;
        writeln!(
            f,
            "{} exchanges: {} complete, {} incomplete, {} without an answer",
            self.exchanges, self.complete, self.incomplete, self.unanswered
        )?;
        if let Some(dropped) = self.kernel_dropped {
            writeln!(f, "kernel dropped {dropped} packets")?;
        }
        let lines = [
            ("answers without a request", self.orphan_responses),
            ("tunnels skipped (CONNECT, upgrades)", self.tunnels),
            ("bytes lost from the capture", self.lost_bytes),
            (
                "connections closed early (too many open)",
                self.connections_evicted,
            ),
        ];
        for (what, n) in lines.into_iter().filter(|(_, n)| *n > 0) {
            writeln!(f, "  {what}: {n}")?;
        }
        for (title, map) in [
            ("frames not used", &self.frames_skipped),
            ("stream bytes not used", &self.bytes_skipped),
            ("incomplete exchanges", &self.incomplete_reasons),
        ] {
            for (reason, n) in map {
                writeln!(f, "  {title}: {n} ({reason})")?;
            }
        }
        Ok(())
    }
}

type Key = (SocketAddr, SocketAddr);

fn key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// A finished exchange with its provisional number, or a number given up.
pub type Produced = (u64, Option<Exchange>);

/// Turns packets into exchanges.
pub struct Assembler {
    options: AssemblyOptions,
    connections: HashMap<Key, Connection>,
    next_id: u64,
    first_us: Option<u64>,
    last_sweep_us: u64,
    summary: PacketSummary,
    produced: Vec<Produced>,
}

impl Assembler {
    /// An assembler with `options`.
    pub fn new(options: AssemblyOptions) -> Assembler {
        Assembler {
            options,
            connections: HashMap::new(),
            next_id: 1,
            first_us: None,
            last_sweep_us: 0,
            summary: PacketSummary::default(),
            produced: Vec::new(),
        }
    }

    /// One captured frame of link type `linktype`, captured at `ts_us`.
    pub fn frame(&mut self, ts_us: u64, linktype: i32, frame: &[u8]) {
        self.summary.packets += 1;
        self.summary.bytes += frame.len() as u64;
        self.first_us.get_or_insert(ts_us);
        match link::decode(linktype, frame) {
            Ok(segment) => self.segment(ts_us, &segment),
            Err(Skip::NotTcp) => {}
            Err(skip) => {
                let reason = match skip {
                    Skip::Fragment => "IP fragment (not reassembled)",
                    Skip::Malformed => "malformed or cut headers",
                    Skip::UnsupportedLink => "unsupported link type",
                    Skip::NotTcp => unreachable!(),
                };
                *self
                    .summary
                    .frames_skipped
                    .entry(reason.to_string())
                    .or_default() += 1;
            }
        }
        if ts_us >= self.last_sweep_us + 1_000_000 {
            self.sweep(ts_us);
        }
    }

    /// Everything finished since the last call.
    pub fn take_produced(&mut self) -> Vec<Produced> {
        std::mem::take(&mut self.produced)
    }

    /// Ends every connection (end of the capture) and returns the summary.
    pub fn finish(&mut self) -> PacketSummary {
        let keys: Vec<Key> = self.connections.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        self.summary.clone()
    }

    /// The summary so far.
    pub fn summary(&self) -> &PacketSummary {
        &self.summary
    }

    /// Time passes with no packet (live capture): closes idle connections.
    pub fn tick(&mut self, now_us: u64) {
        if now_us >= self.last_sweep_us + 1_000_000 {
            self.sweep(now_us);
        }
    }

    /// Sets the kernel's drop count (live capture).
    pub fn set_kernel_dropped(&mut self, dropped: u64) {
        self.summary.kernel_dropped = Some(dropped);
    }

    fn segment(&mut self, ts: u64, seg: &Segment) {
        self.summary.segments += 1;
        let k = key(seg.src, seg.dst);
        let opening = seg.syn && !seg.ack;
        if opening {
            // A new SYN on a known 4-tuple with another sequence number: the
            // port was reused, the old connection is over.
            let reused = self
                .connections
                .get(&k)
                .is_some_and(|c| c.client_isn() != Some(seg.seq));
            if reused {
                self.close(k);
            }
        }
        if !self.connections.contains_key(&k) {
            if seg.payload.is_empty() && !seg.syn {
                return; // a bare ACK or FIN of a connection we never saw
            }
            self.open(k, ts, seg);
        }
        let mut out = Output::default();
        let connection = self.connections.get_mut(&k).expect("opened above");
        let from_client = seg.src == connection.client;
        connection.segment(from_client, seg, ts, &mut self.next_id, &mut out);
        let done = connection.is_done();
        self.absorb(out);
        if done {
            self.connections.remove(&k);
        }
    }

    fn open(&mut self, k: Key, ts: u64, seg: &Segment) {
        if self.connections.len() >= self.options.max_connections {
            self.evict_oldest();
        }
        let (client, server) = self.roles(seg);
        let midstream = !seg.syn;
        let connection = Connection::new(client, server, self.options.max_body, midstream, ts);
        self.summary.connections += 1;
        self.connections.insert(k, connection);
    }

    /// Who is the client: the SYN's sender; else whoever speaks first a
    /// request line; else whoever talks to a known server port; else the
    /// higher port.
    fn roles(&self, seg: &Segment) -> (SocketAddr, SocketAddr) {
        let sender_is_client = if seg.syn {
            !seg.ack
        } else if looks_like_request(seg.payload) {
            true
        } else if seg.payload.starts_with(b"HTTP/") {
            false
        } else if self.options.server_ports.contains(&seg.dst.port()) {
            true
        } else if self.options.server_ports.contains(&seg.src.port()) {
            false
        } else {
            seg.src.port() > seg.dst.port()
        };
        if sender_is_client {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        }
    }

    fn sweep(&mut self, now: u64) {
        self.last_sweep_us = now;
        let idle = self.options.idle_timeout_us;
        let stale: Vec<Key> = self
            .connections
            .iter()
            .filter(|(_, c)| c.last_us + idle < now)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.close(k);
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .connections
            .iter()
            .min_by_key(|(_, c)| c.last_us)
            .map(|(k, _)| *k)
        {
            self.summary.connections_evicted += 1;
            self.close(k);
        }
    }

    /// Ends a connection that did not end itself (idle, evicted, end of
    /// capture, port reused).
    fn close(&mut self, k: Key) {
        if let Some(mut connection) = self.connections.remove(&k) {
            let mut out = Output::default();
            connection.close(false, &mut self.next_id, &mut out);
            self.absorb(out);
        }
    }

    fn absorb(&mut self, out: Output) {
        self.summary.orphan_responses += out.orphan_responses;
        self.summary.tunnels += out.tunnels;
        self.summary.lost_bytes += out.lost_bytes;
        for Trouble::Skipped(reason, n) in out.trouble {
            if reason.contains("lost") {
                continue; // counted as lost bytes below
            }
            *self
                .summary
                .bytes_skipped
                .entry(reason.to_string())
                .or_default() += n;
        }
        let first = self.first_us.unwrap_or(0);
        for pair in out.pairs {
            let id = pair.id;
            let exchange = self.exchange(pair, first);
            self.produced.push((id, Some(exchange)));
        }
    }

    fn exchange(&mut self, pair: Pair, first_us: u64) -> Exchange {
        let Pair {
            id,
            session,
            request,
            response,
        } = pair;
        let session = session.to_string();
        let incomplete = request
            .incomplete
            .clone()
            .or_else(|| response.as_ref().and_then(|r| r.incomplete.clone()));
        self.summary.exchanges += 1;
        if let Some(reason) = &incomplete {
            self.summary.incomplete += 1;
            *self
                .summary
                .incomplete_reasons
                .entry(generalize(reason))
                .or_default() += 1;
        }
        if response.is_none() {
            self.summary.unanswered += 1;
        } else if incomplete.is_none() {
            self.summary.complete += 1;
        }
        let started = request.first_us;
        Exchange {
            id,
            offset_us: started.saturating_sub(first_us),
            session,
            request: Request {
                method: request.method,
                target: request.target,
                version: request.version,
                headers: request.headers,
                body: Body(Bytes::from(request.body)),
            },
            error: response
                .is_none()
                .then(|| "no answer in the capture".to_string()),
            response: response.map(|r| Response {
                status: r.status,
                headers: r.headers,
                body: Body(Bytes::from(r.body)),
                latency_us: r.last_us.saturating_sub(started),
                truncated: None,
            }),
            incomplete,
        }
    }
}

/// Reasons with numbers in them, grouped: "4 bytes lost" → "bytes lost".
fn generalize(reason: &str) -> String {
    reason
        .split(' ')
        .filter(|w| !w.bytes().all(|b| b.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn looks_like_request(payload: &[u8]) -> bool {
    let Some(sp) = payload.iter().position(|&b| b == b' ') else {
        return false;
    };
    sp > 0
        && sp < 20
        && payload[..sp]
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'_' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const CLIENT: [u8; 4] = [127, 0, 0, 11];
    const SERVER: [u8; 4] = [127, 0, 0, 12];

    /// A raw IPv4 TCP frame; `flags` among "S", "A", "F", "R".
    fn frame(
        from_client: bool,
        port: u16,
        seq: u32,
        ack: u32,
        flags: &str,
        payload: &[u8],
    ) -> Vec<u8> {
        let (src, dst, sport, dport) = if from_client {
            (CLIENT, SERVER, port, 80)
        } else {
            (SERVER, CLIENT, 80, port)
        };
        let mut tcp = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 1024);
        if flags.contains('S') {
            tcp = tcp.syn();
        }
        if flags.contains('A') {
            tcp = tcp.ack(ack);
        }
        if flags.contains('F') {
            tcp = tcp.fin();
        }
        if flags.contains('R') {
            tcp = tcp.rst();
        }
        let mut out = Vec::new();
        tcp.write(&mut out, payload).unwrap();
        out
    }

    fn run(options: AssemblyOptions, frames: &[(u64, Vec<u8>)]) -> (Vec<Exchange>, PacketSummary) {
        let mut assembler = Assembler::new(options);
        let mut exchanges = Vec::new();
        for (ts, f) in frames {
            assembler.frame(*ts, link::linktype::RAW, f);
            exchanges.extend(assembler.take_produced().into_iter().filter_map(|(_, e)| e));
        }
        let summary = assembler.finish();
        exchanges.extend(assembler.take_produced().into_iter().filter_map(|(_, e)| e));
        (exchanges, summary)
    }

    /// One whole connection on `port` with client ISN `isn`: request, answer, FINs.
    fn connection(port: u16, isn: u32, target: &str, t0: u64) -> Vec<(u64, Vec<u8>)> {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (c, s) = (isn + 1, 5001);
        let (r, a) = (request.len() as u32, answer.len() as u32);
        vec![
            (t0, frame(true, port, isn, 0, "S", b"")),
            (t0 + 1, frame(false, port, 5000, c, "SA", b"")),
            (t0 + 2, frame(true, port, c, s, "A", request.as_bytes())),
            (t0 + 300, frame(false, port, s, c + r, "A", answer)),
            (t0 + 301, frame(true, port, c + r, s + a, "AF", b"")),
            (t0 + 302, frame(false, port, s + a, c + r + 1, "AF", b"")),
        ]
    }

    #[test]
    fn a_reused_port_is_a_new_connection() {
        let mut frames = connection(40000, 100, "/first", 0);
        frames.extend(connection(40000, 900_000, "/second", 1_000));
        let (exchanges, summary) = run(AssemblyOptions::default(), &frames);
        let targets: Vec<&str> = exchanges
            .iter()
            .map(|e| e.request.target.as_str())
            .collect();
        assert_eq!(targets, ["/first", "/second"]);
        assert_eq!(summary.connections, 2);
        assert_eq!(exchanges[0].response.as_ref().unwrap().latency_us, 298);
        assert_eq!(exchanges[1].offset_us, 1_002);
        // Even without the FINs of the first, the second SYN starts anew.
        let mut no_fin = connection(40001, 100, "/a", 0);
        no_fin.truncate(4);
        no_fin.extend(connection(40001, 777_777, "/b", 1_000));
        let (exchanges, _) = run(AssemblyOptions::default(), &no_fin);
        assert_eq!(exchanges.len(), 2);
        assert!(exchanges.iter().all(|e| e.response.is_some()));
    }

    #[test]
    fn a_connection_picked_up_mid_stream() {
        // No SYN; the capture starts in the middle of a body, then a whole
        // request follows: the partial one is skipped and counted.
        let frames = vec![
            (
                0,
                frame(true, 40002, 500, 9000, "A", b"tail of an earlier body"),
            ),
            (
                1,
                frame(
                    true,
                    40002,
                    523,
                    9000,
                    "A",
                    b"\r\nGET /whole HTTP/1.1\r\n\r\n",
                ),
            ),
            (
                2,
                frame(
                    false,
                    40002,
                    9000,
                    549,
                    "A",
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                ),
            ),
        ];
        let (exchanges, summary) = run(AssemblyOptions::default(), &frames);
        assert_eq!(exchanges.len(), 1);
        assert_eq!(exchanges[0].request.target, "/whole");
        assert_eq!(exchanges[0].session, "127.0.0.11:40002");
        assert_eq!(exchanges[0].response.as_ref().unwrap().status, 204);
        assert!(
            summary
                .bytes_skipped
                .contains_key("connection picked up mid-stream"),
            "{summary}"
        );
    }

    #[test]
    fn idle_connections_are_closed_and_written() {
        let options = AssemblyOptions {
            idle_timeout_us: 1_000_000,
            ..AssemblyOptions::default()
        };
        let mut assembler = Assembler::new(options);
        // A request whose answer never comes, on a connection never closed.
        for (ts, f) in connection(40003, 10, "/hangs", 0).into_iter().take(3) {
            assembler.frame(ts, link::linktype::RAW, &f);
        }
        assert!(assembler.take_produced().is_empty());
        // Five seconds of other traffic later, it has been let go.
        for (ts, f) in connection(40004, 10, "/later", 5_000_000) {
            assembler.frame(ts, link::linktype::RAW, &f);
        }
        let produced: Vec<Exchange> = assembler
            .take_produced()
            .into_iter()
            .filter_map(|(_, e)| e)
            .collect();
        let hung = produced
            .iter()
            .find(|e| e.request.target == "/hangs")
            .expect("flushed when idle");
        assert!(hung.response.is_none());
        assert_eq!(hung.error.as_deref(), Some("no answer in the capture"));
        assert_eq!(assembler.connections.len(), 0, "nothing left open");
    }
}
