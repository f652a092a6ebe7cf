//! `tandem capacity` against two loopback servers of known capacity: a
//! fixed pool of workers with a fixed service time each, so the knee is
//! computable (4 x 4 ms = 1,000 requests/s, 3 x 5 ms = 600). The search
//! finds each within 10% and the ratio within 15%, in bounded time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;

/// A server with `workers` workers, each taking `service` per request: a
/// request waits for the first free worker. Capacity: workers / service.
async fn pool_server(workers: usize, service: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let free_at = Arc::new(Mutex::new(vec![Instant::now(); workers]));
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        move |_req: hyper::Request<hyper::body::Incoming>, _peer| {
            let free_at = free_at.clone();
            async move {
                let done = {
                    let mut free = free_at.lock().unwrap();
                    let (i, &earliest) = free.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
                    let done = earliest.max(Instant::now()) + service;
                    free[i] = done;
                    done
                };
                tokio::time::sleep_until(done).await;
                hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
            }
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_finds_known_capacities() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = (1..=200u64).map(|i| {
        let mut e = common::exchange(
            i,
            i * 1_000,
            &format!("s{i}"),
            "GET",
            &format!("/item/{i}"),
            &[],
        );
        e.response = Some(tandem::capture::Response {
            status: 200,
            headers: vec![],
            body: tandem::capture::Body::from("{\"ok\":true}"),
            latency_us: 100,
            truncated: None,
        });
        e
    });
    let capture = common::write_capture(&dir.path().join("c.jsonl"), exchanges);
    let legacy = pool_server(4, Duration::from_millis(4)).await;
    let new = pool_server(3, Duration::from_millis(5)).await;
    let out = dir.path().join("capacity");
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["capacity", capture.to_str().unwrap()])
        .args(["--legacy", &legacy, "--new", &new, "--slo", "p99<50ms"])
        .args([
            "--step-hold",
            "1s",
            "--warmup",
            "300ms",
            "--confirm-hold",
            "2s",
        ])
        .args([
            "--start-rate",
            "100",
            "--projected-rps",
            "500",
            "--json",
            "--out",
        ])
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the search ends in bounded time")
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(0),
        "new sustains the projected 500/s: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: tandem::capacity::CapacityReport = serde_json::from_slice(&output.stdout).unwrap();
    let rate = |i: usize| report.searches[i].sustainable_rps.unwrap();
    let (legacy_rps, new_rps) = (rate(0), rate(1));
    assert!(
        (900.0..=1_100.0).contains(&legacy_rps),
        "legacy {legacy_rps:.0}: {report:#?}"
    );
    assert!(
        (540.0..=660.0).contains(&new_rps),
        "new {new_rps:.0}: {report:#?}"
    );
    let ratio = report.new_over_legacy.unwrap();
    assert!((0.51..=0.69).contains(&ratio), "ratio {ratio:.2}");
    // Each search doubled, failed, bisected and confirmed.
    for s in &report.searches {
        assert!(s.steps.iter().any(|st| !st.passed), "{s:#?}");
        let last = s.steps.last().unwrap();
        assert!(last.confirmation && last.passed, "{s:#?}");
        // A failing step says why, and an overloaded one why it is so.
        assert!(s
            .steps
            .iter()
            .filter(|st| !st.passed)
            .all(|st| !st.failed.is_empty()));
        // At about 1,000 requests/s tandem has room to spare: the limits
        // found are the servers', and the report says how busy it was.
        assert!(!s.limited_by_tandem, "{s:#?}");
        assert!(
            s.steps
                .iter()
                .all(|st| st.engine_busy > 0.0 && st.engine_busy < 0.9),
            "{s:#?}"
        );
        // And how much of the machine its host took, a share.
        assert!(
            s.steps
                .iter()
                .all(|st| (0.0..=1.0).contains(&st.host_stolen)),
            "{s:#?}"
        );
    }
    assert!(report.searches[1].headroom.unwrap() > 1.0);
    assert!(out.join("capacity.md").exists() && out.join("capacity.html").exists());
    let md = std::fs::read_to_string(out.join("capacity.md")).unwrap();
    assert!(md.contains("| engine busy | host stole | why |"), "{md}");
    eprintln!(
        "capacity search took {elapsed:?}\n{}",
        std::fs::read_to_string(out.join("capacity.md")).unwrap()
    );
}

/// A scenario with `[capacity]` runs a capacity search, its keys checked as
/// the others (an unknown one is named with its line), between setup and
/// teardown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_a_capacity_search() {
    let dir = tempfile::tempdir().unwrap();
    let capture = common::write_capture(
        &dir.path().join("c.jsonl"),
        (1..=50u64).map(|i| common::exchange(i, i * 1_000, &format!("s{i}"), "GET", "/x", &[])),
    );
    let legacy = pool_server(4, Duration::from_millis(4)).await;
    let new = pool_server(4, Duration::from_millis(4)).await;
    let out = dir.path().join("cap");
    let marks = dir.path().join("marks");
    let body = format!(
        "capture = {capture:?}\nsetup = \"echo setup >> {m}\"\nteardown = \"echo teardown >> {m}\"\n\
         timeout = \"5s\"\n\
         [targets.legacy]\nurl = \"{legacy}\"\n[targets.new]\nurl = \"{new}\"\n\
         [capacity]\nslo = \"p99<50ms\"\nstep-hold = \"500ms\"\nwarmup = \"200ms\"\n\
         confirm-hold = \"500ms\"\nstart-rate = 400\nmax-rate = 800\nprecision = 0.5\n\
         out = {out:?}\njson = true\n",
        m = marks.display()
    );
    let path = dir.path().join("cap.toml");
    std::fs::write(&path, &body).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["run", path.to_str().unwrap()])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: tandem::capacity::CapacityReport = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report.searches[0].sustainable_rps,
        Some(800.0),
        "{report:#?}"
    );
    assert!(out.join("capacity.json").exists());
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "setup\nteardown\n"
    );

    std::fs::write(&path, body.replace("step-hold", "step_hold")).unwrap();
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["run", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(":11: capacity.step_hold: unknown key (not a `tandem capacity` flag")
            && stderr.contains("`step-hold`"),
        "{stderr}"
    );
}
