//! Real servers on 127.0.0.1 for the integration tests.
#![allow(dead_code)]

pub mod servers;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A request header's value as text, empty when absent.
fn header_text<B>(req: &Request<B>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A hyper server that echoes: the request body back (byte for byte), the
/// method in `x-echo-method`, the status asked for in `x-want-status`.
pub struct Echo {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Echo {
    pub async fn start() -> Echo {
        Echo::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Echo {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(tandem::server::serve(
            listener,
            None,
            |req: Request<hyper::body::Incoming>, _peer| async move {
                let status = req
                    .headers()
                    .get("x-want-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                    .unwrap_or(200);
                let method = req.method().to_string();
                let target = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_string(), |p| p.to_string());
                let version = format!("{:?}", req.version());
                let header = |n: &str| header_text(&req, n);
                // The host the request names: `:authority` over HTTP/2
                // (RFC 9113 §8.3.1), else Host; and how many Host headers
                // came, since a second one beside `:authority` is refused by
                // nginx.
                let host = match req.uri().authority() {
                    Some(authority) if req.version() == hyper::Version::HTTP_2 => {
                        authority.to_string()
                    }
                    _ => header("host"),
                };
                let hosts = req.headers().get_all("host").iter().count();
                let env = header("x-env");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut response = Response::new(Full::new(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
                    .headers_mut()
                    .insert("x-echo-method", method.parse().unwrap());
                response
                    .headers_mut()
                    .insert("x-echo-target", target.parse().unwrap());
                let headers = response.headers_mut();
                headers.insert("x-echo-version", version.parse().unwrap());
                headers.insert("x-echo-host", host.parse().unwrap());
                headers.insert("x-echo-host-headers", hosts.into());
                headers.insert("x-echo-env", env.parse().unwrap());
                response
            },
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        Echo {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Sends one request and reads the whole answer.
pub async fn send(
    client: &tandem::http::Client,
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Seen {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        headers,
        body,
    }
}

/// A port on which nothing listens (bound, then released).
pub async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A server that accepts connections and resets them at once.
pub async fn resetting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Linger 0 turns the close into a RST.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    addr
}

/// A plain TCP server that answers every request on a connection with a
/// chunked body and a trailer, written by hand so the bytes are exactly
/// these: `HTTP/1.1 200 OK`, body `chunk-one|chunk-two|<target>`.
pub async fn chunked_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let last = format!("|{target}");
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-check\r\n\r\n9\r\nchunk-one\r\n{:x}\r\n|chunk-two{last}\r\n0\r\nx-check: done\r\n\r\n",
                            10 + last.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A packet capture of loopback traffic by tcpdump or tshark, stopped on drop.
pub struct Sniffer {
    child: Option<std::process::Child>,
    file: std::path::PathBuf,
    said: Option<std::thread::JoinHandle<String>>,
}

impl Sniffer {
    /// Starts `program` with `args` (which name the file after `-w`) and
    /// waits until it captures: until it says it listens and its file holds
    /// a header, which tcpdump and dumpcap write once the interface is open
    /// and filtered (tshark says "Capturing on" before it starts dumpcap,
    /// which took 285 ms more on an idle machine, longer when loaded).
    pub fn start(program: &str, args: &[&str]) -> Sniffer {
        use std::io::BufRead;
        let file = args
            .iter()
            .position(|a| *a == "-w")
            .map(|i| std::path::PathBuf::from(args[i + 1]))
            .expect("a sniffer writes a file (-w)");
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} cannot start ({e}): run .ci/setup"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let said = std::thread::spawn(move || {
            let mut said = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") || line.contains("Capturing on") {
                    let _ = tx.send(());
                }
                said.push_str(&line);
                said.push('\n');
            }
            said
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{program} did not start capturing within 20 s"));
        let began = std::time::Instant::now();
        while file_len(&file) == 0 {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "{program} wrote no header to {} within 20 s",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Sniffer {
            child: Some(child),
            file,
            said: Some(said),
        }
    }

    /// Stops the capture, waits until the file is complete, and says what
    /// the sniffer said on the way (its counts of packets the kernel dropped
    /// among them).
    pub fn stop(mut self) -> SnifferEnd {
        self.halt();
        let said = self
            .said
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        SnifferEnd { said }
    }

    fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Interrupted, it writes what it has read but not what the
            // kernel still holds: wait until the file stops growing.
            let began = std::time::Instant::now();
            let mut last = file_len(&self.file);
            loop {
                std::thread::sleep(Duration::from_millis(300));
                let now = file_len(&self.file);
                if now == last || began.elapsed() > Duration::from_secs(10) {
                    break;
                }
                last = now;
            }
            let pid = child.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status();
            let _ = child.wait();
        }
    }
}

/// Bytes in `path` so far; 0 while it does not exist.
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What a sniffer said before it ended.
pub struct SnifferEnd {
    /// Its standard error.
    pub said: String,
}

impl SnifferEnd {
    /// Packets it reports the kernel dropped before they reached it:
    /// tcpdump's "N packets dropped by kernel" and "by interface", tshark's
    /// "N packets dropped from IF" or "(N dropped)". (tcpdump's "received by
    /// filter" is no measure of packets left unread: on this loopback it was
    /// exactly twice "captured" in 120 of 125 captures, more in the other 5.)
    pub fn dropped(&self) -> u64 {
        self.counts("dropped").sum()
    }

    /// The number just before `words` on each line that has them.
    fn counts<'a>(&'a self, words: &'a str) -> impl Iterator<Item = u64> + 'a {
        self.said.lines().filter_map(move |line| {
            let (before, _) = line.split_once(words)?;
            before.split_whitespace().rev().find_map(|word| {
                word.trim_matches(|c: char| !c.is_ascii_digit())
                    .parse::<u64>()
                    .ok()
            })
        })
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the tracking server saw.
#[derive(Default)]
pub struct Seen2 {
    /// Requests in flight per `x-session`, now.
    pub in_flight: std::collections::HashMap<String, usize>,
    /// Highest in flight per session.
    pub most: std::collections::HashMap<String, usize>,
    /// `x-seq` values per session, in arrival order.
    pub order: std::collections::HashMap<String, Vec<u32>>,
}

/// Serves `handler` with tandem's own server on an ephemeral loopback
/// port until the test's runtime ends; returns the address.
pub async fn serve_loopback<H, F, B>(handler: H) -> SocketAddr
where
    H: Fn(Request<hyper::body::Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: tandem::server::ResponseBody,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        handler,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}

/// A hyper server that answers after `delay`, noting per `x-session`
/// header how many requests overlapped and in which `x-seq` order they came;
/// a request out of its session's order (a read before its create) gets 409.
pub async fn tracking_server(
    delay: Duration,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Seen2>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen2::default()));
    let state = seen.clone();
    let addr = serve_loopback(move |req: Request<hyper::body::Incoming>, _peer| {
        let state = state.clone();
        async move {
            let header = |n: &str| header_text(&req, n);
            let (session, seq) = (header("x-session"), header("x-seq").parse().unwrap_or(0));
            let in_order = {
                let mut s = state.lock().unwrap();
                let order = s.order.entry(session.clone()).or_default();
                // A read before its create: a request ahead of the
                // next one its session is due (a second stack on the
                // same server may send what came before again).
                let next = order.iter().max().map_or(0, |&m| m + 1);
                let in_order = seq <= next;
                order.push(seq);
                let now = {
                    let n = s.in_flight.entry(session.clone()).or_default();
                    *n += 1;
                    *n
                };
                let most = s.most.entry(session.clone()).or_default();
                *most = (*most).max(now);
                in_order
            };
            tokio::time::sleep(delay).await;
            *state.lock().unwrap().in_flight.get_mut(&session).unwrap() -= 1;
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            if !in_order {
                *response.status_mut() = StatusCode::CONFLICT;
            }
            response
        }
    })
    .await;
    (addr, seen)
}

/// A recorded request with no body, and no recorded answer.
pub fn exchange(
    id: u64,
    offset_us: u64,
    session: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
) -> tandem::capture::Exchange {
    tandem::capture::Exchange {
        id,
        offset_us,
        session: session.to_string(),
        request: tandem::capture::Request {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(n, v)| tandem::capture::Header((*n).into(), v.as_str().into()))
                .collect(),
            body: tandem::capture::Body::default(),
        },
        response: None,
        error: None,
        incomplete: None,
    }
}

/// A recorded JSON answer: 200, `body`, 100 µs.
pub fn json_answer(body: serde_json::Value) -> tandem::capture::Response {
    tandem::capture::Response {
        status: 200,
        headers: vec![tandem::capture::Header(
            "content-type".into(),
            "application/json".into(),
        )],
        body: tandem::capture::Body(Bytes::from(body.to_string())),
        latency_us: 100,
        truncated: None,
    }
}

/// A small JSON service on an ephemeral loopback port, for the stacks a
/// test writes itself: `answer` gets each request's path and
/// `traceparent` (its body is read and dropped) and says what to answer
/// with 200. Returns its URL; it serves until the test's runtime ends.
pub async fn json_stack<F, Fut>(answer: F) -> String
where
    F: Fn(String, Option<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = serde_json::Value> + Send + 'static,
{
    let addr = serve_loopback(move |req: Request<hyper::body::Incoming>, _| {
        let answer = answer.clone();
        async move {
            let trace = req
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let path = req.uri().path().to_string();
            let _ = req.into_body().collect().await;
            let body = answer(path, trace).await;
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
    })
    .await;
    format!("http://{addr}")
}

/// Writes `exchanges` as a capture at `path`.
pub fn write_capture(
    path: &std::path::Path,
    exchanges: impl IntoIterator<Item = tandem::capture::Exchange>,
) -> std::path::PathBuf {
    let header = tandem::capture::CaptureHeader::new("test");
    let mut w = tandem::capture::CaptureWriter::create(path, &header).unwrap();
    for e in exchanges {
        w.write(&e).unwrap();
    }
    w.finish().unwrap();
    path.to_path_buf()
}

/// Every line of a run directory's results file.
pub fn read_results(run: &std::path::Path) -> Vec<tandem::results::ExchangeResult> {
    let mut results = tandem::results::ResultsReader::open(&run.join("results.jsonl")).unwrap();
    std::iter::from_fn(|| results.next_result())
        .map(Result::unwrap)
        .collect()
}

/// Waits until the run writing into `run` has flushed `n` results to its
/// `results.jsonl.partial` (it flushes at least once a second), at most
/// `within`; the count it holds then. Tests that stop a run part way signal
/// it on this rather than after a guessed delay, which a loaded machine
/// outlasts: a replay that took long to start would be stopped before it
/// sent anything.
pub async fn wait_for_results(run: &std::path::Path, n: usize, within: Duration) -> usize {
    let partial = run.join("results.jsonl.partial");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        // Whole lines only, less the header.
        let lines = std::fs::read(&partial)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        let results = lines.saturating_sub(1);
        if results >= n {
            return results;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} held {results} results after {within:?}, not {n}",
            partial.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a run stopped by a signal must show: exit 3, a report that says
/// it was interrupted and never passes, `sent` exchanges (what went out
/// before the stop) within `expected`, each of them a results line.
pub fn assert_interrupted(
    exit: std::process::ExitStatus,
    run: &std::path::Path,
    expected: std::ops::Range<u64>,
) -> tandem::report::Report {
    assert_eq!(exit.code(), Some(3), "an interrupted run exits 3");
    let report = tandem::report::Report::load(&run.join("report.json")).unwrap();
    assert!(report.interrupted && !report.passed());
    assert!(
        expected.contains(&report.summary.total),
        "sent before the stop: {:?}",
        report.summary
    );
    assert_eq!(
        read_results(run).len() as u64,
        report.summary.total,
        "every sent exchange is in the results"
    );
    report
}

/// Runs a future to its end on a thread and runtime of its own, so that
/// sync helpers can call async sources from inside a tokio test too.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(future)
    })
    .join()
    .expect("the future panicked")
}

/// The demo end to end in `dir`: `requests` recorded into `dir/demo.jsonl`,
/// replayed into `dir/run`; its options and report.
pub async fn demo_run(
    dir: &std::path::Path,
    requests: usize,
) -> (tandem::demo::DemoOptions, tandem::report::Report) {
    let options = tandem::demo::DemoOptions {
        requests,
        capture: dir.join("demo.jsonl"),
        out_dir: dir.join("run"),
        ..Default::default()
    };
    let outcome = tandem::cli::demo::run(&options).await.unwrap();
    (options, outcome.replay.report)
}

/// `N` distinct free ports: all bound at once, then released, so that the
/// kernel cannot hand the same one out twice (a server told to listen twice
/// on one port exits at once).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}
