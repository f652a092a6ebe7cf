//! Bounded memory for big bodies: a replay of targets answering 50 MB
//! bodies keeps at most `--max-body` of each, compares the rest by length
//! and hash, and its peak memory stays far below the bodies' size. A test
//! binary of its own: the peak is read from the children this process
//! waited for, and only the replay is one.

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
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
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
        .output()
        .await
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak_mb = usage.ru_maxrss / 1024;
    // 16 answers of 50 MB went through; a replay that kept them would hold
    // 800 MB.
    println!("peak RSS {peak_mb} MB");
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
