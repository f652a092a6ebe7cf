//! The recording proxy against a real hyper server on loopback.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tandem::capture::{CaptureReader, Exchange};
use tandem::record::{record_proxy, ProxyConfig, Rotation, Selection, Sink};
use tokio::net::TcpListener;

/// The proxy on `listener` to `upstream`, 5 s timeout, 2 s drain.
fn config(listener: TcpListener, upstream: &str) -> ProxyConfig {
    ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        ..ProxyConfig::new(listener, upstream.parse().unwrap())
    }
}

/// A sink keeping everything in `out`.
fn sink(config: &ProxyConfig, out: &std::path::Path) -> Sink {
    Sink::create(
        out,
        &config.source(),
        Selection::default(),
        Rotation::default(),
    )
    .unwrap()
}

/// Requests with text, binary and empty bodies, queries and odd methods.
fn requests() -> Vec<(&'static str, String, Bytes)> {
    let mut out = Vec::new();
    for i in 0..60u32 {
        let (method, body) = match i % 4 {
            0 => ("GET", Bytes::new()),
            1 => (
                "POST",
                Bytes::from(format!("{{\"n\":{i},\"text\":\"héllo\"}}")),
            ),
            2 => ("PUT", Bytes::from(vec![0u8, 159, 146, 150, 255, i as u8])),
            _ => ("DELETE", Bytes::from_static(b"line one\r\nline two")),
        };
        out.push((method, format!("/things/{i}?q={i}&x=%20y"), body));
    }
    out
}

#[tokio::test]
async fn capture_holds_every_exchange_byte_for_byte() {
    let upstream = common::Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = config(listener, &upstream.url());
    let sink = sink(&config, &out);
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));

    // Several clients at once, so that completions interleave.
    let mut tasks = Vec::new();
    for (method, target, body) in requests() {
        let url = format!("{proxy}{target}");
        tasks.push(tokio::spawn(async move {
            let client = tandem::http::client(Duration::from_secs(5));
            let headers = [("x-custom", "a b"), ("x-want-status", "201")];
            common::send(&client, &url, method, &headers, body).await
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    stop.send(()).unwrap();
    let summary = recording.await.unwrap().unwrap();
    assert_eq!(summary.exchanges, 60);

    let exchanges: Vec<Exchange> = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(exchanges.len(), 60);
    // Written in arrival order: ids and offsets increase.
    for pair in exchanges.windows(2) {
        assert_eq!(pair[1].id, pair[0].id + 1);
        assert!(pair[1].offset_us >= pair[0].offset_us);
    }
    for (method, target, body) in requests() {
        let exchange = exchanges
            .iter()
            .find(|e| e.request.target == target)
            .unwrap_or_else(|| panic!("{target} not in the capture"));
        assert_eq!(exchange.request.method, method);
        assert_eq!(
            exchange.request.body.bytes(),
            &body,
            "{target}: request body"
        );
        assert!(exchange
            .request
            .headers
            .iter()
            .any(|h| h.0 == "x-custom" && h.1 == "a b"));
        let response = exchange.response.as_ref().expect("a response");
        assert_eq!(response.status, 201);
        assert_eq!(response.body.bytes(), &body, "{target}: response body");
        assert!(response.latency_us > 0);
        // What the client saw is what was recorded.
        let client_saw = seen
            .iter()
            .find(|s| {
                s.headers
                    .iter()
                    .any(|(n, v)| n == "x-echo-target" && v == &target)
            })
            .unwrap();
        assert_eq!(client_saw.status, response.status);
        assert_eq!(&client_saw.body, response.body.bytes());
        for (name, value) in &client_saw.headers {
            let recorded = tandem::capture::header_value(&response.headers, name);
            assert_eq!(recorded, Some(value.as_str()), "{target}: header {name}");
        }
    }
}

#[tokio::test]
async fn upstream_down_is_recorded_not_lost() {
    let dead = common::dead_port().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl.gz");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = config(listener, &format!("http://{dead}"));
    let sink = sink(&config, &out);
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let client = tandem::http::client(Duration::from_secs(5));
    let seen = common::send(&client, &format!("{proxy}/x"), "GET", &[], Bytes::new()).await;
    assert_eq!(seen.status, 502);
    stop.send(()).unwrap();
    let summary = recording.await.unwrap().unwrap();
    assert_eq!((summary.exchanges, summary.upstream_errors), (1, 1));
    let exchanges: Vec<Exchange> = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(exchanges[0].response.is_none());
    assert!(exchanges[0].error.as_deref().unwrap().contains("upstream"));
}

/// The proxy keeps only what the selection names and rotates its file, as
/// packet recording does: the parts hold the kept exchanges once each,
/// numbered from 1 across the parts.
#[tokio::test]
async fn selection_and_rotation_apply_to_the_proxy() {
    let upstream = common::Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let config = config(listener, &upstream.url());
    let selection = Selection {
        methods: vec!["GET".into()],
        ..Selection::default()
    };
    let rotation = Rotation {
        max_bytes: Some(2_000),
        ..Rotation::default()
    };
    let sink = Sink::create(&out, &config.source(), selection, rotation).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let client = tandem::http::client(Duration::from_secs(5));
    for (method, target, body) in requests() {
        let url = format!("{proxy}{target}");
        common::send(&client, &url, method, &[], body).await;
    }
    stop.send(()).unwrap();
    let summary = recording.await.unwrap().unwrap();
    assert_eq!((summary.exchanges, summary.filtered), (15, 45));
    assert!(summary.files.len() > 1, "{:?}", summary.files);
    let kept: Vec<Exchange> = summary
        .files
        .iter()
        .flat_map(|f| CaptureReader::open(f).unwrap().map(Result::unwrap))
        .collect();
    assert!(kept.iter().all(|e| e.request.method == "GET"));
    let ids: Vec<u64> = kept.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=15).collect::<Vec<_>>());
}

/// Proxy manners: an upstream timeout is 504 (not 502); a malformed request
/// is answered 400 by the server and counted; a client whose request head
/// takes longer than the header timeout is disconnected.
#[tokio::test]
async fn timeouts_and_malformed_requests_are_answered_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let silent = common::silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ProxyConfig {
        timeout: Duration::from_millis(300),
        header_timeout: Duration::from_millis(500),
        ..config(listener, &format!("http://{silent}"))
    };
    let sink = sink(&config, &dir.path().join("cap.jsonl"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let client = tandem::http::client(Duration::from_secs(5));
    let answer = common::send(
        &client,
        &format!("http://{addr}/slow"),
        "GET",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 504);
    // Raw bytes: a request line hyper cannot parse.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"NOT A REQUEST\x01\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A head begun and never finished: closed after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client was disconnected");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A body cut off by its client: 10 of 100 bytes, then the client is gone.
    let mut cut = tokio::net::TcpStream::connect(addr).await.unwrap();
    cut.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    cut.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), cut.read_to_end(&mut rest)).await;
    stop.send(()).unwrap();
    let summary = recording.await.unwrap().unwrap();
    assert_eq!(summary.upstream_errors, 1);
    assert_eq!(summary.malformed_requests, 1);
    assert_eq!(summary.incomplete_requests, 1);
    assert_eq!(
        summary.exchanges, 2,
        "the timed-out and the cut-off exchanges are recorded"
    );
    let exchanges: Vec<Exchange> = CaptureReader::open(dir.path().join("cap.jsonl"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let upload = &exchanges[1];
    assert_eq!(
        upload.request.body.bytes().as_ref(),
        b"0123456789",
        "what arrived is kept"
    );
    let error = upload.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("request body cut off after 10 bytes"),
        "{error}"
    );
}

/// A capture that cannot be written (the file size limit stands in for a
/// full disk): the proxy goes on serving every client, and at the end
/// counts what it served but could not record, exit 2; with
/// `--on-write-error stop` it stops accepting instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_that_cannot_be_written_is_counted_and_said() {
    let upstream = common::Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    for stop_on_error in [false, true] {
        let [port] = common::free_ports::<1>();
        let out = dir.path().join(format!("cap-{stop_on_error}.jsonl"));
        let policy = if stop_on_error { "stop" } else { "serve" };
        let script = format!(
            "ulimit -f 24; trap '' XFSZ; exec '{}' record --listen 127.0.0.1:{port} --upstream '{}' --out '{}' --on-write-error {policy}",
            env!("CARGO_BIN_EXE_tandem"),
            upstream.url(),
            out.display()
        );
        let child = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let proxy = format!("http://127.0.0.1:{port}");
        let listening = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < listening,
                "record did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = tandem::http::client(Duration::from_secs(5));
        let mut served = 0u64;
        for i in 0..450u32 {
            if served == 400 {
                break;
            }
            let request = hyper::Request::post(format!("{proxy}/orders/{i}"))
                .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 1024])))
                .unwrap();
            match client.request(request).await {
                Ok(answer) if answer.status() == 200 => served += 1,
                Ok(answer) => panic!("answered {}", answer.status()),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if !stop_on_error {
            assert_eq!(served, 400, "every client was served");
            let pid = child.id().unwrap() as i32;
            assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        } else {
            assert!(
                served < 400,
                "the proxy stopped accepting after the failure"
            );
        }
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the proxy ended")
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
        let number = |text: &str, before: &str| -> u64 {
            let end = text
                .find(before)
                .unwrap_or_else(|| panic!("{before:?} in {text}"));
            text[..end]
                .split_whitespace()
                .last()
                .unwrap()
                .parse()
                .unwrap()
        };
        let unrecorded = number(&stderr, " exchanges were served but not recorded");
        let recorded = number(&stdout, " exchanges into");
        assert!(unrecorded > 0, "{stderr}");
        assert_eq!(recorded + unrecorded, served, "{stdout}{stderr}");
    }
}

/// Stopped while an upstream hangs: the exchange still in flight at the
/// drain deadline is written (its request, no answer) and counted.
#[tokio::test]
async fn an_exchange_cut_off_at_stop_is_written_and_counted() {
    let silent = common::silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ProxyConfig {
        timeout: Duration::from_secs(30),
        drain: Duration::from_millis(300),
        ..config(listener, &format!("http://{silent}"))
    };
    let sink = sink(&config, &out);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let client = tandem::http::client(Duration::from_secs(10));
    let waiting = tokio::spawn(async move {
        let request = hyper::Request::post(format!("http://{addr}/pay"))
            .body(http_body_util::Full::new(Bytes::from_static(
                b"{\"amount\":5}",
            )))
            .unwrap();
        client.request(request).await.map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(5), recording)
        .await
        .expect("stopped within the drain, not the upstream timeout")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(summary.abandoned_at_stop, 1, "{summary:?}");
    assert_eq!(summary.exchanges, 1);
    let kept: Vec<Exchange> = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kept[0].request.target, "/pay");
    assert_eq!(kept[0].request.body.bytes().as_ref(), b"{\"amount\":5}");
    assert!(kept[0].response.is_none());
    assert!(kept[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("abandoned at stop"));
    let _ = waiting.await;
}
