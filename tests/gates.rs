//! Gates held against a real run: the demo's stacks on loopback, each
//! operator and selector, relative latency, per route, and `--gate` on the
//! command line of `tandem diff`.

mod common;

use std::time::Duration;

use tandem::gate::Gate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_read_the_run_and_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut report) = common::demo_run(dir.path(), 600).await;
    let parity = report.summary.parity;
    assert!(parity > 0.5 && parity < 1.0, "{:?}", report.summary);
    let pct = |x: f64| format!("{:.4}%", x * 100.0);
    let products = Some("GET /api/products/{id}".to_string());
    let cases: Vec<(Gate, bool)> = vec![
        // Each operator on either side of the observed parity.
        (g(&format!("parity >= {}", pct(parity - 0.001)), None), true),
        (
            g(&format!("parity >= {}", pct(parity + 0.001)), None),
            false,
        ),
        (g(&format!("parity > {}", pct(parity + 0.001)), None), false),
        (g(&format!("parity < {}", pct(parity + 0.001)), None), true),
        (
            g(&format!("parity <= {}", pct(parity - 0.001)), None),
            false,
        ),
        (g("mismatch_rate <= 100%", None), true),
        (g("fidelity >= 90%", None), true),
        (g("errors.new <= 0%", None), true),
        (g("dropped.legacy <= 0.5", None), true),
        // Latency: absolute and relative to legacy.
        (g("new.p99 < 60s", None), true),
        (g("new.p99 < 1us", None), false),
        (g("new.p99 <= 1000 * legacy.p99", None), true),
        (g("new.p99 <= 0.001 * legacy.p99", None), false),
        (g("legacy.p99.9 >= legacy.p50", None), true),
        (g("lag.new.p99 < 10s", None), true),
        // Per route: every product read misses its currency on new.
        (g("mismatch_rate >= 99%", products.clone()), true),
        (g("parity >= 1%", products.clone()), false),
        (g("new.p99 < 60s", products), true),
        (g("parity >= 0%", Some("GET /nowhere".into())), false),
    ];
    let gates: Vec<Gate> = cases.iter().map(|(g, _)| g.clone()).collect();
    report.apply_gates(&gates);
    for ((gate, expected), verdict) in cases.iter().zip(&report.gates) {
        assert_eq!(verdict.passed, *expected, "{gate:?}: {verdict:?}");
        assert_eq!(verdict.expression, gate.expression);
    }
    let nowhere = report.gates.last().unwrap();
    assert!(nowhere.text.contains("no route"), "{nowhere:?}");
    assert_eq!(nowhere.observed, None);
    let relative = &report.gates[12];
    assert!(relative.text.contains(" <= "), "{relative:?}");
    assert!(relative.observed.unwrap() > relative.threshold.unwrap());
    assert!(!report.passed());
}

fn g(expression: &str, route: Option<String>) -> Gate {
    Gate::parse(expression, expression, route).unwrap()
}

/// `tandem diff --gate`: a bad expression is bad usage (2); a failing gate
/// exits 1 and is in report.json; passing gates exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_takes_gates_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 200).await;
    let run = options.out_dir.to_str().unwrap().to_string();
    let diff = |gates: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
        command.args(["diff", &run, "--rules", "scenarios/demo.rules.toml"]);
        for gate in gates {
            command.args(["--gate", gate]);
        }
        let started = std::time::Instant::now();
        let output = command.output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(60));
        output
    };
    let bad = diff(&["parity >= 250ms"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("the left side is a share"), "{stderr}");

    let failed = diff(&["fidelity >= 90%", "parity >= 100%"]);
    assert_eq!(failed.status.code(), Some(1));
    let report = tandem::report::Report::load(&options.out_dir.join("report.json")).unwrap();
    let verdicts: Vec<_> = report.gates.iter().map(|g| g.passed).collect();
    assert_eq!(verdicts, [true, false]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(stdout.contains("gate FAILED: parity >= 100% ("), "{stdout}");

    let passed = diff(&["fidelity >= 90%", "new.p99 <= 100 * legacy.p99"]);
    assert_eq!(passed.status.code(), Some(0));
}

/// A stack that answers at once, then, `after` its first request, takes
/// 400 ms for every answer: a new stack that slows down halfway.
async fn slowing_stack(after: Duration) -> std::net::SocketAddr {
    use std::sync::{Arc, OnceLock};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first: Arc<OnceLock<std::time::Instant>> = Arc::new(OnceLock::new());
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        move |_req: hyper::Request<hyper::body::Incoming>, _peer| {
            let first = first.clone();
            async move {
                let since = first.get_or_init(std::time::Instant::now).elapsed();
                if since > after {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"{\"ok\":true}",
                )))
            }
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}

/// A windowed gate with abort stops a run whose new stack slows down
/// halfway, within the failing window plus about a second; the gate is
/// reported failed in that window, and the run exits 1 (a gate failed),
/// not 3 (interrupted). The same gate without abort lets the run finish
/// and fails it afterwards, naming the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_gate_aborts_a_run_that_slows_down() {
    let dir = tempfile::tempdir().unwrap();
    // 5 s of traffic: 500 GETs 10 ms apart.
    let exchanges: Vec<_> = (1..=500u64)
        .map(|i| tandem::capture::Exchange {
            id: i,
            offset_us: i * 10_000,
            session: format!("s{i}"),
            request: tandem::capture::Request {
                method: "GET".into(),
                target: format!("/item/{i}"),
                version: "HTTP/1.1".into(),
                headers: vec![],
                body: tandem::capture::Body::default(),
            },
            response: None,
            error: None,
            incomplete: None,
        })
        .collect();
    let capture = dir.path().join("c.jsonl");
    let mut w = tandem::capture::CaptureWriter::create(
        &capture,
        &tandem::capture::CaptureHeader::new("test"),
    )
    .unwrap();
    for e in &exchanges {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    let run = |gate: &str, out: &str, legacy, new| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(["replay", capture.to_str().unwrap()])
            .args(["--legacy", &format!("http://{legacy}")])
            .args(["--new", &format!("http://{new}")])
            .args(["--gate", gate, "--out"])
            .arg(dir.path().join(out))
            .kill_on_drop(true);
        command
    };
    let started = std::time::Instant::now();
    let (legacy, new) = (
        slowing_stack(Duration::from_secs(3600)).await,
        slowing_stack(Duration::from_millis(1_500)).await,
    );
    let output = run("new.p99 < 100ms over 1s abort", "abort", legacy, new)
        .output()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Slow from 1.5 s: the window 1–2 s fails, judged a second after its end.
    assert!(elapsed < Duration::from_millis(4_800), "{elapsed:?}");
    let report = tandem::report::Report::load(&dir.path().join("abort/report.json")).unwrap();
    let aborted = report.aborted.as_deref().unwrap();
    assert!(
        aborted.contains("failed in window 1.00s–2.00s"),
        "{aborted}"
    );
    assert!(!report.interrupted && !report.passed());
    assert!(report.summary.total < 420, "{}", report.summary.total);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("verdict FAILED: gate new.p99 < 100ms over 1s abort failed in window"),
        "{stdout}"
    );

    // Without abort: the whole run, then the failing window named.
    let (legacy, new) = (
        slowing_stack(Duration::from_secs(3600)).await,
        slowing_stack(Duration::from_millis(1_500)).await,
    );
    let output = run("new.p99 < 100ms over 1s", "whole", legacy, new)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = tandem::report::Report::load(&dir.path().join("whole/report.json")).unwrap();
    assert_eq!(report.summary.total, 500);
    assert!(report.aborted.is_none());
    let verdict = &report.gates[0];
    assert!(!verdict.passed);
    assert!(
        verdict.text.starts_with("window 1.00s–2.00s: "),
        "{}",
        verdict.text
    );
    assert!(verdict.observed.unwrap() >= 100_000.0);
    // A window that holds: legacy never slows.
    let mut held = report.clone();
    held.apply_gates(&[Gate::parse("l", "legacy.p99 < 100ms", None)
        .unwrap()
        .windowed(Duration::from_secs(1), false)
        .unwrap()]);
    assert!(held.gates[0].passed, "{:?}", held.gates[0]);
    assert!(
        held.gates[0].text.starts_with("all ") && held.gates[0].text.contains(" windows held"),
        "{}",
        held.gates[0].text
    );
}
