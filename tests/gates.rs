//! Gates held against a real run: the demo's stacks on loopback, each
//! operator and selector, relative latency, per route, and `--gate` on the
//! command line of `tandem diff`.

use std::time::Duration;

use tandem::demo::DemoOptions;
use tandem::gate::Gate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_read_the_run_and_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        requests: 600,
        capture: dir.path().join("demo.jsonl"),
        out_dir: dir.path().join("run"),
        ..Default::default()
    };
    let outcome = tandem::cli::demo::run(&options).await.unwrap();
    let mut report = outcome.replay.report;
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
    let options = DemoOptions {
        requests: 200,
        capture: dir.path().join("demo.jsonl"),
        out_dir: dir.path().join("run"),
        ..Default::default()
    };
    tandem::cli::demo::run(&options).await.unwrap();
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
