//! Bounded memory for big bodies: a replay of targets answering 50 MB
//! bodies keeps at most `--max-body` of each, compares the rest by length
//! and hash, and its peak memory stays far below the bodies' size; the
//! recording proxy passes such bodies on as they arrive. A test binary of
//! its own, so that no other test's child runs beside them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod common;

use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

const SIZE: usize = 50 << 20;

/// A server answering every request with `body`, or with `other` on
/// `/big/7`.
async fn big_server(body: Bytes, other: Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        move |req: hyper::Request<hyper::body::Incoming>, _| {
            let answer = match req.uri().path() {
                "/big/7" => other.clone(),
                _ => body.clone(),
            };
            async move { hyper::Response::new(http_body_util::Full::new(answer)) }
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_50_mb_are_compared_by_hash_in_bounded_memory() {
    let body = Bytes::from(vec![b'x'; SIZE]);
    let mut different = vec![b'x'; SIZE];
    different[SIZE - 1] = b'y';
    let legacy = big_server(body.clone(), body.clone()).await;
    let new = big_server(body.clone(), Bytes::from(different)).await;
    let dir = tempfile::tempdir().unwrap();
    let exchanges =
        (1..=8u64).map(|i| common::exchange(i, i * 1_000, "s", "GET", &format!("/big/{i}"), &[]));
    let capture = common::write_capture(&dir.path().join("big.jsonl"), exchanges);
    let run = dir.path().join("run");
    let replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "replay",
            capture.to_str().unwrap(),
            "--legacy",
            &legacy,
            "--new",
            &new,
        ])
        .args([
            "--max-body",
            "1MiB",
            "--timeout",
            "30s",
            "--out",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let peak = Peak::watch(replay.id().unwrap());
    let out = replay.wait_with_output().await.unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_mb = peak.mb();
    // 16 answers of 50 MB went through; a replay that kept them would hold
    // 800 MB.
    println!("replay: peak RSS {peak_mb} MB");
    assert!(peak_mb < 200, "peak RSS {peak_mb} MB");
    let report = tandem::report::Report::load(&run.join("report.json")).unwrap();
    assert_eq!(report.summary.total, 8);
    assert_eq!(report.summary.matched, 7);
    let group = &report.mismatch_groups[0];
    assert_eq!(group.kind.as_str(), "body");
    assert_eq!(group.path.as_deref(), Some("sha256"));
    assert_eq!(group.count, 1);
    let results = common::read_results(&run);
    let kept = results[0].legacy.response.as_ref().unwrap();
    assert_eq!(kept.body.bytes().len(), 1 << 20);
    assert_eq!(kept.truncated.as_ref().unwrap().len, SIZE as u64);
}

/// An upstream answering GETs with `body`, and POSTs with the length of
/// what they carried, once read to its end.
async fn upload_counting_server(body: Bytes) -> String {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        move |req: hyper::Request<hyper::body::Incoming>, _| {
            let body = body.clone();
            async move {
                if req.method() != hyper::Method::POST {
                    return hyper::Response::new(http_body_util::Full::new(body));
                }
                let mut incoming = req.into_body();
                let mut len = 0usize;
                while let Some(Ok(frame)) = incoming.frame().await {
                    len += frame.data_ref().map_or(0, Bytes::len);
                }
                hyper::Response::new(http_body_util::Full::new(Bytes::from(len.to_string())))
            }
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    url
}

/// The recording proxy passes 50 MB answers and uploads on as they arrive:
/// clients get every byte, the capture keeps `--max-body` of each with the
/// whole body's length and hash, and the proxy's peak memory stays far
/// below the bodies' size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_50_mb_bodies_on_in_bounded_memory() {
    use http_body_util::BodyExt;
    use sha2::Digest;
    let body = Bytes::from(vec![b'x'; SIZE]);
    let expected_sha = tandem::capture::sha256_of_bytes(&body);
    let upstream = upload_counting_server(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("big.jsonl");
    let [port] = common::free_ports::<1>();
    let proxy = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["record", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &upstream, "--max-body", "1MiB", "--out"])
        .arg(&capture)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = proxy.id() as i32;
    // Ended by PID whatever happens below.
    let _stop = KillOnDrop(pid);
    let peak = Peak::watch(pid as u32);
    let client = tandem::http::client(Duration::from_secs(5));
    let proxy_url = format!("http://127.0.0.1:{port}");
    let mut waited = 0;
    // Six downloads, read as they come, and two uploads.
    for i in 0..8 {
        let request = || {
            let (method, path, sent) = match i < 6 {
                true => ("GET", "big", Bytes::new()),
                false => ("POST", "upload", body.clone()),
            };
            hyper::Request::builder()
                .method(method)
                .uri(format!("{proxy_url}/{path}/{i}"))
                .body(http_body_util::Full::new(sent))
                .unwrap()
        };
        let answer = loop {
            match client.request(request()).await {
                Ok(answer) => break answer,
                Err(_) if waited < 100 => {
                    // Not listening yet.
                    waited += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the proxy did not answer: {e}"),
            }
        };
        assert_eq!(answer.status(), 200);
        let (mut len, mut hasher, mut incoming) = (0usize, sha2::Sha256::new(), answer.into_body());
        while let Some(frame) = incoming.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                len += data.len();
                hasher.update(data);
            }
        }
        if i < 6 {
            assert_eq!(len, SIZE, "every byte reached the client");
            let sha: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(sha, expected_sha);
        } else {
            assert_eq!(len, SIZE.to_string().len(), "the upload's length came back");
        }
    }
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let waited = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        proxy.wait()
    });
    let status = tokio::time::timeout(Duration::from_secs(30), waited)
        .await
        .expect("the proxy ended within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let peak_mb = peak.mb();
    // 400 MB went through each way; a proxy that held each body whole would
    // peak above 100 MB with one exchange in flight.
    println!("proxy: peak RSS {peak_mb} MB");
    assert!(peak_mb < 100, "peak RSS {peak_mb} MB");

    let exchanges: Vec<_> = tandem::capture::CaptureReader::open(&capture)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(exchanges.len(), 8);
    for e in &exchanges[..6] {
        let answer = e.response.as_ref().expect("answered");
        assert_eq!(answer.body.bytes().len(), 1 << 20);
        let whole = answer.truncated.as_ref().expect("marked truncated");
        assert_eq!(
            (whole.len, whole.sha256.as_str()),
            (SIZE as u64, expected_sha.as_str())
        );
    }
    for e in &exchanges[6..] {
        assert_eq!(e.request.body.bytes().len(), 1 << 20);
        let incomplete = e.incomplete.as_deref().unwrap_or_default();
        assert!(incomplete.contains("cut to --max-body"), "{incomplete}");
        assert_eq!(
            e.response.as_ref().unwrap().body.bytes(),
            SIZE.to_string().as_bytes()
        );
    }
}

/// Sends SIGKILL to a process when dropped, unless it has already ended
/// (a test that fails half way leaves no proxy behind).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// A child's peak resident memory, VmHWM read from /proc every 5 ms until
/// it exits. Not `getrusage`'s ru_maxrss: Linux carries a forked child's
/// RSS at fork (this test process's, holding 50 MB bodies) across exec
/// into it.
struct Peak(Arc<AtomicU64>);

impl Peak {
    fn watch(pid: u32) -> Peak {
        let kb = Arc::new(AtomicU64::new(0));
        let seen = kb.clone();
        std::thread::spawn(move || {
            let status = format!("/proc/{pid}/status");
            // A zombie has no VmHWM line left: the watch ends there.
            while let Some(hwm) = std::fs::read_to_string(&status).ok().and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            }) {
                seen.fetch_max(hwm, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Peak(kb)
    }

    fn mb(&self) -> u64 {
        self.0.load(Ordering::Relaxed) / 1024
    }
}
