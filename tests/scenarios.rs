//! Scenario files (`tandem run`): every key, overrides, each kind of bad
//! file, and a run with setup, teardown and gates against the demo stacks.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem::cli::replay::{flags, job_from_args};
use tandem::demo::{self, Flavor};
use tandem::scenario::{Scenario, ScenarioError};

/// Certificate files, so that the TLS keys have something to read.
fn pem_files(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (crt, key) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    (crt, key)
}

fn scenario(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// Three lines: the capture, the run directory and both targets.
const HEAD: &str = "capture = \"captures/sample.jsonl\"\nout = \"reports/x\"\n\
                    targets = { legacy = { url = \"http://127.0.0.1:1\" }, new = { url = \"http://127.0.0.1:2\" } }\n";

/// Every `tandem replay` flag is a key of the same name, and means what
/// the flag means. A flag added without a value here fails this test.
#[test]
fn every_replay_flag_is_a_scenario_key() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = pem_files(dir.path());
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let quoted = |s: &str| format!("{s:?}");
    let values: Vec<(&str, String)> = vec![
        ("legacy", quoted("http://127.0.0.1:3")),
        ("new", quoted("http://127.0.0.1:4")),
        ("out", quoted("reports/y")),
        ("speed", "1.5".into()),
        ("rate", "250".into()),
        ("loop", "2".into()),
        ("duration", quoted("1m")),
        ("amplify", "2".into()),
        ("max-in-flight", "64".into()),
        ("max-lag", quoted("250ms")),
        ("unordered-sessions", "true".into()),
        ("shard", quoted("1/4")),
        ("start-at", quoted("2026-12-01T10:00:00Z")),
        ("keep-host", "true".into()),
        ("allow-recorded-host", "true".into()),
        ("legacy-header", format!("[{}]", quoted("x-a: 1"))),
        ("new-header", quoted("x-b: 2")),
        ("connect-timeout", quoted("2s")),
        ("warm-connections", "4".into()),
        ("max-connections", "8".into()),
        ("threads", "1".into()),
        ("ca-cert", format!("[{}]", quoted(&crt))),
        ("client-cert", quoted(&crt)),
        ("client-key", quoted(&key)),
        ("insecure", "true".into()),
        ("legacy-ca-cert", format!("[{}]", quoted(&crt))),
        ("legacy-client-cert", quoted(&crt)),
        ("legacy-client-key", quoted(&key)),
        ("new-ca-cert", quoted(&crt)),
        ("new-client-cert", quoted(&crt)),
        ("new-client-key", quoted(&key)),
        ("no-progress", "true".into()),
        ("http2", "true".into()),
        ("rules", quoted("scenarios/demo.rules.toml")),
        ("timeout", quoted("3s")),
        ("max-body", quoted("2MiB")),
        ("gate", format!("[{}]", quoted("parity >= 99%"))),
        ("max-mismatch-rate", "0.01".into()),
        ("min-fidelity", "0.9".into()),
        ("learn-noise", "true".into()),
        ("legacy-2", quoted("http://127.0.0.1:5")),
        ("noise-relative", "0.5".into()),
        ("noise-absolute", "0.01".into()),
        ("noise-z", "3".into()),
        ("write-rules", quoted("reports/y/learned.toml")),
        ("no-correlate", "true".into()),
        ("junit", quoted("reports/y/junit.xml")),
        ("interval", quoted("500ms")),
        ("metrics-addr", quoted("127.0.0.1:9464")),
        ("metrics-linger", quoted("1s")),
        ("legacy-webhook-sink", quoted("127.0.0.1:9101")),
        ("new-webhook-sink", quoted("127.0.0.1:9102")),
        ("legacy-smtp-sink", quoted("127.0.0.1:9103")),
        ("new-smtp-sink", quoted("127.0.0.1:9104")),
        ("legacy-pg", quoted("postgres://u@127.0.0.1:5432/legacy")),
        ("new-pg", quoted("postgres://u@127.0.0.1:5432/new")),
        ("pg-map", quoted("scenarios/demo.rules.toml")),
        ("effects-quiet", quoted("3s")),
    ];
    let flags = flags();
    let known: Vec<&str> = flags.keys().map(String::as_str).collect();
    let mut covered: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    covered.sort();
    assert_eq!(covered, known, "every flag has a value in this test");

    // All at once, but --rate (which excludes --speed) on its own below.
    let body: String = values
        .iter()
        .filter(|(k, _)| !["legacy", "new", "rate"].contains(k))
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect::<String>()
        + "[targets.legacy]\nurl = \"http://127.0.0.1:3\"\n[targets.new]\nurl = \"http://127.0.0.1:4\"\n";
    let path = scenario(
        dir.path(),
        "all.toml",
        &format!("capture = \"captures/sample.jsonl\"\n{body}"),
    );
    let loaded = Scenario::load(&path, &flags).unwrap();
    let job = job_from_args(loaded.replay_args(&[])).unwrap();
    let plan = &job.plan;
    assert_eq!(plan.legacy.to_string(), "http://127.0.0.1:3");
    assert_eq!((plan.speed, plan.passes, plan.amplify), (1.5, 2, 2));
    assert_eq!(plan.duration, Some(Duration::from_secs(60)));
    assert_eq!(plan.max_lag, Some(Duration::from_millis(250)));
    assert_eq!(plan.shard, Some((1, 4)));
    assert_eq!(plan.max_body, 2 << 20);
    assert!(!plan.ordered_sessions && plan.keep_host && plan.allow_recorded_host);
    assert_eq!(plan.legacy_headers, [("x-a".to_string(), "1".to_string())]);
    assert_eq!(plan.new_headers, [("x-b".to_string(), "2".to_string())]);
    assert!(plan.legacy_trust.is_some() && plan.new_trust.is_some());
    assert_eq!(
        plan.legacy2.as_ref().unwrap().to_string(),
        "http://127.0.0.1:5"
    );
    assert_eq!(job.out_dir, PathBuf::from("reports/y"));
    assert!(!job.correlate);
    assert_eq!(
        job.metrics,
        Some(("127.0.0.1:9464".parse().unwrap(), Duration::from_secs(1)))
    );
    let gates: Vec<&str> = job.gates.iter().map(|g| g.expression.as_str()).collect();
    assert_eq!(
        gates,
        ["mismatch_rate <= 1%", "fidelity >= 90%", "parity >= 99%"]
    );

    let effects = job.effects.as_ref().expect("effects collected");
    assert_eq!(
        effects.webhook_sinks[1].1,
        "127.0.0.1:9102".parse().unwrap()
    );
    assert_eq!(effects.smtp_sinks[0].1, "127.0.0.1:9103".parse().unwrap());
    assert_eq!(effects.databases[1].1, "postgres://u@127.0.0.1:5432/new");
    assert_eq!(effects.quiet, Duration::from_secs(3));

    // The same as an [effects] table, per stack.
    let path = scenario(
        dir.path(),
        "effects.toml",
        &format!(
            "{HEAD}[effects]\nquiet = \"1s\"\n[effects.legacy]\nwebhook = \"127.0.0.1:9201\"\n\
             pg = \"postgres://u@h/l\"\n[effects.new]\nwebhook = \"127.0.0.1:9202\"\n\
             pg = \"postgres://u@h/n\"\n"
        ),
    );
    let loaded = Scenario::load(&path, &flags).unwrap();
    let job = job_from_args(loaded.replay_args(&[])).unwrap();
    let effects = job.effects.expect("effects collected");
    assert_eq!(
        effects.webhook_sinks,
        [
            (0, "127.0.0.1:9201".parse().unwrap()),
            (1, "127.0.0.1:9202".parse().unwrap())
        ]
    );
    assert_eq!(effects.databases[0], (0, "postgres://u@h/l".to_string()));
    assert_eq!(effects.quiet, Duration::from_secs(1));
    let path = scenario(
        dir.path(),
        "bad-effects.toml",
        &format!("{HEAD}[effects.new]\nkafka = \"x\"\n"),
    );
    let err = Scenario::load(&path, &flags).unwrap_err().to_string();
    assert!(
        err.contains("effects.new.kafka") && err.contains("webhook, smtp or pg"),
        "{err}"
    );

    let path = scenario(dir.path(), "rate.toml", &format!("{HEAD}rate = 250\n"));
    let loaded = Scenario::load(&path, &flags).unwrap();
    let job = job_from_args(loaded.replay_args(&[])).unwrap();
    assert_eq!(job.plan.rate, Some(250.0));
}

/// Flags after the file replace the file's, each wholly (a repeatable flag
/// given once replaces all the file's values); the rest of the file stays.
#[test]
fn command_line_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(
        dir.path(),
        "s.toml",
        "capture = \"captures/sample.jsonl\"\nout = \"x\"\nrate = 200\nmax-lag = \"1s\"\n\
         [targets.legacy]\nurl = \"http://127.0.0.1:1\"\nheaders = { x-a = \"1\", x-b = \"2\" }\n\
         [targets.new]\nurl = \"http://127.0.0.1:2\"\n",
    );
    let loaded = Scenario::load(&path, &flags()).unwrap();
    let from_file = job_from_args(loaded.replay_args(&[])).unwrap();
    assert_eq!(from_file.plan.rate, Some(200.0));
    assert_eq!(from_file.plan.legacy_headers.len(), 2);
    let overrides: Vec<std::ffi::OsString> = [
        "--rate",
        "50",
        "--legacy-header",
        "x-c: 3",
        "--new=http://127.0.0.1:9",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let job = job_from_args(loaded.replay_args(&overrides)).unwrap();
    assert_eq!(job.plan.rate, Some(50.0));
    assert_eq!(
        job.plan.legacy_headers,
        [("x-c".to_string(), "3".to_string())]
    );
    assert_eq!(job.plan.new.to_string(), "http://127.0.0.1:9");
    assert_eq!(job.plan.legacy.to_string(), "http://127.0.0.1:1");
    assert_eq!(
        job.plan.max_lag,
        Some(Duration::from_secs(1)),
        "the rest stays"
    );
}

fn load_error(body: &str) -> ScenarioError {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(dir.path(), "bad.toml", body);
    Scenario::load(&path, &flags()).unwrap_err()
}

fn assert_error(error: &ScenarioError, line: usize, key: &str, why: &str) {
    let origin = error
        .origin
        .as_ref()
        .unwrap_or_else(|| panic!("no line: {error}"));
    assert_eq!((origin.line, origin.key.as_str()), (line, key), "{error}");
    assert!(error.why.contains(why), "{error}");
    assert!(error
        .to_string()
        .starts_with(&format!("{}:{line}: {key}: ", error.file.display())));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let e = load_error(&format!("{HEAD}\nmax_lag = \"1s\"\n"));
    assert_error(&e, 5, "max_lag", "did you mean `max-lag`?");
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let e = load_error(&format!("{HEAD}speed = [2]\n"));
    assert_error(
        &e,
        4,
        "speed",
        "expected a string or a number, found an array",
    );
    let e = load_error(&format!("{HEAD}learn-noise = \"yes\"\n"));
    assert_error(
        &e,
        4,
        "learn-noise",
        "expected true or false, found a string",
    );
}

#[test]
fn a_missing_file_is_named_with_its_line() {
    let e = load_error("out = \"x\"\n\ncapture = \"captures/nope.jsonl\"\n");
    assert_error(&e, 3, "capture", "captures/nope.jsonl: no such file");
    let e = load_error(&format!("{HEAD}rules = \"scenarios/nope.toml\"\n"));
    assert_error(&e, 4, "rules", "no such file");
    let e = load_error(&HEAD.replace(
        "url = \"http://127.0.0.1:2\"",
        "url = \"http://127.0.0.1:2\", ca-cert = \"none.pem\"",
    ));
    assert_error(&e, 3, "targets.new.ca-cert", "none.pem: no such file");
    let missing = Scenario::load(Path::new("scenarios/none.toml"), &flags()).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("scenarios/none.toml: cannot read the scenario"),
        "{missing}"
    );
    let no_capture = load_error("out = \"x\"\n");
    assert!(no_capture.why.contains("no `capture`"), "{no_capture}");
}

#[test]
fn a_syntax_error_is_named_with_its_line() {
    let e = load_error(&format!("{HEAD}rate = = 3\n"));
    assert_eq!(e.origin.as_ref().unwrap().line, 4, "{e}");
}

#[test]
fn a_bad_gate_is_named_with_its_line() {
    let e = load_error(&format!(
        "{HEAD}[gates]\nok = \"parity >= 99%\"\nslow = \"new.p99 < 250\"\n"
    ));
    assert_error(&e, 6, "gates.slow", "write 250ms");
    let e = load_error(&format!(
        "{HEAD}[gates]\nw = {{ check = \"parity >= 99%\", abort = true }}\n"
    ));
    assert_error(&e, 5, "gates.w.abort", "abort needs a window");
    let e = load_error(&format!(
        "{HEAD}[gates]\nw = {{ check = \"fidelity >= 99%\", over = \"30s\" }}\n"
    ));
    assert_error(&e, 5, "gates.w", "not kept per window");
    let e = load_error(&format!(
        "{HEAD}[gates]\nw = {{ check = \"parity >= 99%\", over = \"soon\" }}\n"
    ));
    assert_error(&e, 5, "gates.w.over", "\"soon\"");
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(
        dir.path(),
        "w.toml",
        &format!(
            "{HEAD}[gates]\nw = {{ check = \"new.p99 < 250ms\", over = \"30s\", abort = true }}\n"
        ),
    );
    let gate = &Scenario::load(&path, &flags()).unwrap().gates[0];
    assert_eq!(
        (gate.over, gate.abort),
        (Some(Duration::from_secs(30)), true)
    );
    let e = load_error(&format!(
        "{HEAD}[gates]\nr = {{ check = \"errors.new <= 1%\", route = \"GET /x\" }}\n"
    ));
    assert_error(&e, 5, "gates.r", "not kept per route");
}

#[test]
fn a_bad_target_is_named_with_its_line() {
    let head = "capture = \"captures/sample.jsonl\"\nout = \"x\"\n";
    let e = load_error(&format!(
        "{head}[targets.staging]\nurl = \"http://127.0.0.1:3\"\n"
    ));
    assert_error(&e, 3, "targets.staging", "legacy, new or legacy-2");
    let e = load_error(&format!(
        "{head}[targets.legacy-2]\nurl = \"http://127.0.0.1:3\"\nheaders = {{ a = \"b\" }}\n"
    ));
    assert_error(&e, 5, "targets.legacy-2.headers", "takes only `url`");
    let e = load_error(&HEAD.replace(
        "{ url = \"http://127.0.0.1:2\" }",
        "{ uri = \"http://127.0.0.1:2\" }",
    ));
    assert_error(&e, 3, "targets.new", "no `url`");
}

async fn tandem_run(args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("run")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("tandem run finished within 60 s")
        .unwrap()
}

/// The shipped CI scenario against the demo stacks: setup before, teardown
/// after, inline rules, its gates judged, and exit 1 for the new stack's
/// planted bugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_with_setup_teardown_and_gates() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let new = demo::start(Flavor::New).await.unwrap();
    let out = dir.path().join("run");
    let marks = dir.path().join("marks");
    let base = std::fs::read_to_string("scenarios/ci-parity.toml").unwrap();
    let body = format!(
        "setup = [\"echo setup $TANDEM_OUT >> {0}\"]\nteardown = [\"echo teardown >> {0}\"]\n{base}",
        marks.display()
    );
    let path = scenario(dir.path(), "ci.toml", &body);
    let output = tandem_run(&[
        path.to_str().unwrap(),
        "--legacy",
        &legacy.url(),
        "--new",
        &new.url(),
        "--out",
        out.to_str().unwrap(),
        "--speed",
        "4",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        format!("setup {}\nteardown\n", out.display())
    );
    let report = tandem::report::Report::load(&out.join("report.json")).unwrap();
    let gates: Vec<(&str, bool)> = report
        .gates
        .iter()
        .map(|g| (g.name.as_str(), g.passed))
        .collect();
    assert_eq!(
        gates,
        [
            ("fidelity", true),
            ("parity", false),
            ("errors", true),
            ("latency", gates[3].1),
            ("order-reads", false),
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("gate FAILED: order-reads: parity >= 100% on GET /api/orders/{id}"),
        "{stdout}"
    );
    assert!(out.join("scenario.rules.toml").exists());
    assert_eq!(
        report.run.rules.as_deref(),
        Some(out.join("scenario.rules.toml").to_str().unwrap())
    );
    // No noise group: the inline rules hold what differs between stacks.
    assert!(report
        .mismatch_groups
        .iter()
        .all(|g| g.path.as_deref() != Some("$.generated_at")));

    legacy.stop().await;
    new.stop().await;
}

/// A failing setup stops the run with exit 2, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let path = scenario(
        dir.path(),
        "s.toml",
        &format!(
            "setup = [\"true\", \"exit 7\"]\n{}",
            HEAD.replace("http://127.0.0.1:1", &target)
                .replace("http://127.0.0.1:2", &target)
        ),
    );
    let out = dir.path().join("run");
    let output = tandem_run(&[path.to_str().unwrap(), "--out", out.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("setup `exit 7` failed (exit status: 7): nothing was sent"),
        "{stderr}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "no connection was made");
    assert!(!out.join("report.json").exists());
}

/// A value the replay itself refuses names the scenario's line.
#[tokio::test]
async fn a_refused_value_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario(dir.path(), "s.toml", &format!("{HEAD}\nrate = \"fast\"\n"));
    let output = tandem_run(&[path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:5: rate: invalid value 'fast' for '--rate <RATE>'",
            path.display()
        )),
        "{stderr}"
    );
}

/// Every shipped example reads, and means a job `tandem replay` would run.
#[test]
fn the_shipped_scenarios_read() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("scenarios").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".toml") || name.ends_with(".rules.toml") {
            continue;
        }
        let loaded = Scenario::load(&path, &flags()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.gates.is_empty(), "{name} gates something");
        job_from_args(loaded.replay_args(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["ci-parity.toml", "demo.toml", "load-3x.toml"]);
}

/// The demo scenario at the demo stacks: faithful, and failing its parity
/// gate on exactly the new stack's planted bugs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scenario_finds_the_planted_bugs() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let new = demo::start(Flavor::New).await.unwrap();
    let out = dir.path().join("run");
    let output = tandem_run(&[
        "scenarios/demo.toml",
        "--legacy",
        &legacy.url(),
        "--new",
        &new.url(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let report = tandem::report::Report::load(&out.join("report.json")).unwrap();
    let gates: Vec<(&str, bool)> = report
        .gates
        .iter()
        .map(|g| (g.name.as_str(), g.passed))
        .collect();
    assert_eq!(gates, [("fidelity", true), ("parity", false)]);
    let mut groups: Vec<String> = report
        .mismatch_groups
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                g.method,
                g.route,
                g.path.as_deref().unwrap_or("")
            )
        })
        .collect();
    groups.sort();
    groups.dedup();
    assert!(
        groups
            .iter()
            .any(|g| g.contains("products/{id} $.currency")),
        "{groups:?}"
    );
    assert!(
        groups.iter().any(|g| g.contains("orders/{id} $.total")),
        "{groups:?}"
    );
    legacy.stop().await;
    new.stop().await;
}

/// `capture = [a, b]`: both replayed at once, each with its own timing and
/// sessions, every exchange of both reported; each checked for safety as a
/// single capture is (a write is never sent to the upstream it was recorded
/// from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_captures_are_replayed_together() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let new = demo::start(Flavor::New).await.unwrap();
    let browse = common::write_capture(
        &dir.path().join("browse.jsonl"),
        (1..=20).map(|i| {
            common::exchange(i, i * 2_000, "b", "GET", &format!("/api/products/{i}"), &[])
        }),
    );
    let out = dir.path().join("run");
    let body = format!(
        "capture = [\"captures/sample.jsonl\", {browse:?}]\nout = {out:?}\nrules = \"scenarios/demo.rules.toml\"\n\
         [targets.legacy]\nurl = \"{}\"\n[targets.new]\nurl = \"{}\"\n",
        legacy.url(),
        new.url()
    );
    let path = scenario(dir.path(), "mixed.toml", &body);
    let output = tandem_run(&[path.to_str().unwrap()]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = tandem::report::Report::load(&out.join("report.json")).unwrap();
    assert_eq!(report.summary.total, 48 + 20);
    assert_eq!(
        report.fidelity.as_ref().unwrap().rate,
        1.0,
        "tokens followed in the mix"
    );
    let sessions: std::collections::BTreeSet<String> = common::read_results(&out)
        .into_iter()
        .map(|r| r.session.split('/').next().unwrap().to_string())
        .collect();
    assert_eq!(sessions.into_iter().collect::<Vec<_>>(), ["1", "2"]);

    // A capture recorded from the very stack it would be replayed at.
    let header = tandem::capture::CaptureHeader::new(format!("proxy upstream={}", legacy.url()));
    let writes = dir.path().join("writes.jsonl");
    let mut w = tandem::capture::CaptureWriter::create(&writes, &header).unwrap();
    w.write(&common::exchange(1, 0, "w", "POST", "/api/orders", &[]))
        .unwrap();
    w.finish().unwrap();
    let body = body.replace(&format!("{browse:?}"), &format!("{writes:?}"));
    let path = scenario(dir.path(), "unsafe.toml", &body);
    let refused = tandem_run(&[
        path.to_str().unwrap(),
        "--out",
        dir.path().join("no").to_str().unwrap(),
    ])
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-recorded-host"));
    assert!(!dir.path().join("no/report.json").exists());
    legacy.stop().await;
    new.stop().await;
}
