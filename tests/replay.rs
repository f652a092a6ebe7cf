//! Replay, differ and report against the demo stacks and broken targets on
//! loopback.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::demo::{self, DemoOptions, Flavor};
use tandem::diff::MismatchKind;
use tandem::gate::Gate;
use tandem::replay::{ReplayError, ReplayPlan};
use tandem::report::Report;
use tandem::results::ErrorKind;

fn demo_options(dir: &Path, requests: usize) -> DemoOptions {
    DemoOptions {
        requests,
        rate: 1000.0,
        capture: dir.join("demo.jsonl.gz"),
        out_dir: dir.join("run"),
        ..DemoOptions::default()
    }
}

fn plan(capture: PathBuf, legacy: String, new: String, out: PathBuf) -> ReplayJob {
    ReplayJob::new(
        ReplayPlan {
            speed: 4.0,
            timeout: Duration::from_millis(500),
            drain: Duration::from_secs(2),
            ..ReplayPlan::new(capture, legacy.parse().unwrap(), new.parse().unwrap())
        },
        out,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_report_names_exactly_the_planted_bugs_and_no_noise() {
    let dir = tempfile::tempdir().unwrap();
    let options = demo_options(dir.path(), 2000);
    let outcome = tandem::cli::demo::run(&options).await.unwrap();
    assert_eq!(outcome.recorded.exchanges, 2000);

    // The report on disk, read back through its typed form.
    let report = Report::load(&dir.path().join("run/report.json")).unwrap();
    let groups: BTreeSet<(String, String, MismatchKind, Option<String>)> = report
        .mismatch_groups
        .iter()
        .map(|g| (g.method.clone(), g.route.clone(), g.kind, g.path.clone()))
        .collect();
    let expected: BTreeSet<_> = [
        (
            "GET",
            "/api/orders/{id}",
            MismatchKind::Value,
            Some("$.total"),
        ),
        (
            "GET",
            "/api/products/{id}",
            MismatchKind::MissingField,
            Some("$.currency"),
        ),
        ("POST", "/api/orders", MismatchKind::Status, None),
        // Seen only when each stack's own token and order ids are followed.
        (
            "GET",
            "/api/orders/{id}",
            MismatchKind::Value,
            Some("$.status"),
        ),
    ]
    .into_iter()
    .map(|(m, r, k, p)| (m.to_string(), r.to_string(), k, p.map(str::to_string)))
    .collect();
    assert_eq!(groups, expected);
    // The replay was faithful, because it followed the ids and tokens.
    let fidelity = report.fidelity.as_ref().unwrap();
    assert!(fidelity.rate >= 0.99, "{fidelity:?}");
    let correlation = report.correlation.as_ref().unwrap();
    assert!(
        correlation
            .links
            .iter()
            .any(|l| l.from.to_string() == "$.token"),
        "{correlation:?}"
    );
    assert_eq!(correlation.unresolved, 0);
    // Bug 5 shows only in the stacks' webhook calls: every payment's
    // order.paid is sent twice by new; the rest of the calls, with each
    // stack's own order and payment ids, are alike.
    let effects = report.effects.as_ref().expect("effects collected");
    let effect_groups: Vec<(String, String, String)> = effects
        .mismatch_groups
        .iter()
        .map(|g| (g.route.clone(), g.kind.clone(), g.what.clone()))
        .collect();
    assert_eq!(
        effect_groups,
        [(
            "POST /api/orders/{id}/pay".to_string(),
            "webhook POST /hooks order.paid".to_string(),
            "count".to_string()
        )]
    );
    assert!(effects.collected.legacy > 0);
    assert_eq!(effects.untied, 0, "every call passed its traceparent on");
    assert_eq!(
        effects.tied,
        effects.collected.legacy + effects.collected.new
    );
    assert_eq!(effects.mismatched, effects.mismatch_groups[0].count);
    assert_eq!(effects.matched + effects.mismatched, effects.exchanges);

    let s = &report.summary;
    assert_eq!(s.total, 2000);
    assert_eq!(s.errors, 0);
    assert_eq!(s.matched + s.mismatched, s.total);
    let grouped: u64 = report.mismatch_groups.iter().map(|g| g.count).sum();
    assert!(
        grouped >= s.mismatched,
        "each mismatched exchange shows a bug (a paid order read back can show two)"
    );
    // Every product read misses its currency; the routes add up.
    let product_reads = report
        .routes
        .iter()
        .find(|r| r.method == "GET" && r.route == "/api/products/{id}")
        .unwrap();
    assert_eq!(product_reads.mismatched, product_reads.total);
    assert_eq!(report.routes.iter().map(|r| r.total).sum::<u64>(), s.total);
    assert_eq!(report.latency.legacy.count, 2000);
    assert_eq!(report.latency.new.count, 2000);
    assert!(report.latency.new.p50 > 0 && report.latency.new.p99 >= report.latency.new.p50);

    // Both raw answers are kept in the results file, one line an exchange.
    let results = std::fs::read_to_string(dir.path().join("run/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 2001);
    assert!(dir.path().join("run/summary.md").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rules_the_noise_shows() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = demo_options(dir.path(), 300);
    let empty_rules = dir.path().join("empty.toml");
    std::fs::write(&empty_rules, "").unwrap();
    options.rules = Some(empty_rules);
    tandem::cli::demo::run(&options).await.unwrap();
    let report = Report::load(&dir.path().join("run/report.json")).unwrap();
    let paths: BTreeSet<Option<String>> = report
        .mismatch_groups
        .iter()
        .map(|g| g.path.clone())
        .collect();
    assert!(
        paths.contains(&Some("x-correlation-id".to_string())),
        "{paths:?}"
    );
    assert!(
        paths.contains(&Some("$.generated_at".to_string())),
        "{paths:?}"
    );
}

/// Records a small demo capture to replay at broken targets.
async fn small_capture(dir: &Path) -> PathBuf {
    let options = demo_options(dir, 100);
    tandem::cli::demo::run(&options).await.unwrap();
    options.capture
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_targets_are_errors_in_the_report_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let capture = small_capture(dir.path()).await;
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let cases = [
        (
            format!("http://{}", common::dead_port().await),
            ErrorKind::Refused,
        ),
        (
            format!("http://{}", common::silent_server().await),
            ErrorKind::Timeout,
        ),
        (
            format!("http://{}", common::resetting_server().await),
            ErrorKind::Reset,
        ),
    ];
    for (i, (new, kind)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("broken{i}"));
        let outcome = replay(
            &plan(capture.clone(), legacy.url(), new, out),
            std::future::pending(),
        )
        .await
        .unwrap();
        let report = &outcome.report;
        assert_eq!(report.summary.total, 100, "{kind:?}");
        assert_eq!(report.summary.errors, 100, "{kind:?}");
        assert_eq!(report.summary.parity, 0.0);
        assert_eq!(
            report.errors.new.get(&kind),
            Some(&100),
            "{kind:?}: {:?}",
            report.errors
        );
        assert!(
            report.errors.legacy.is_empty(),
            "{:?}",
            report.errors.legacy
        );
        assert_eq!(report.latency.legacy.count, 100);
    }
    legacy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_fails_on_mismatches_and_on_an_empty_run() {
    let dir = tempfile::tempdir().unwrap();
    let capture = small_capture(dir.path()).await;
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let new = demo::start(Flavor::New).await.unwrap();
    let mut p = plan(capture, legacy.url(), new.url(), dir.path().join("gate"));
    p.rules = Some("scenarios/demo.rules.toml".into());
    p.gates = vec![Gate::max_mismatch_rate(0.0)];
    let outcome = replay(&p, std::future::pending()).await.unwrap();
    assert!(outcome.report.summary.mismatched > 0);
    assert!(!outcome.passed());
    p.gates = vec![Gate::max_mismatch_rate(1.0)];
    p.out_dir = dir.path().join("gate2");
    assert!(replay(&p, std::future::pending()).await.unwrap().passed());
    legacy.stop().await;
    new.stop().await;
}

/// Each engine parses only the requests it sends: a request that does not
/// parse is still reported once, naming its line, by whichever engine owns
/// its session; a recorded answer that does not parse does not keep its
/// request from being replayed (a replay never sends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_requests_are_reported_once_whichever_engine_owns_them() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges =
        (1..=8).map(|i| common::exchange(i, i * 1_000, &format!("s{i}"), "GET", "/", &[]));
    let capture = common::write_capture(&dir.path().join("c.jsonl"), exchanges);
    let mut lines: Vec<String> = std::fs::read_to_string(&capture)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // Lines 4 and 5 (exchanges 3 and 4, whose sessions go to different
    // engines of two): a method that is not a string. Line 6 (exchange 5): a
    // recorded answer without its fields. Line 8 (exchange 7): not JSON.
    let engine = |s: &str| tandem::capture::session_hash(s) % 2;
    assert_ne!(engine("s3"), engine("s4"));
    for line in [3, 4] {
        lines[line] = lines[line].replace("\"method\":\"GET\"", "\"method\":42");
        assert!(lines[line].contains("42"));
    }
    lines[5] = lines[5].replace("\"response\":null", "\"response\":{\"status\":\"x\"}");
    assert!(lines[5].contains("\"x\""));
    lines[7].truncate(20);
    std::fs::write(&capture, lines.join("\n") + "\n").unwrap();
    let (legacy, new) = (common::Echo::start().await, common::Echo::start().await);
    let run = |threads| {
        let mut plan = plan(
            capture.clone(),
            legacy.url(),
            new.url(),
            dir.path().join(format!("run-{threads}")),
        );
        plan.plan.threads = threads;
        plan
    };
    for threads in [1, 2] {
        let outcome = replay(&run(threads), std::future::pending()).await.unwrap();
        let unreadable = outcome.report.unreadable.as_ref().expect("reported");
        assert_eq!(unreadable.lines, 3);
        for (example, line) in unreadable.examples.iter().zip([4, 5, 8]) {
            let named = format!("{}: line {line}: expected an exchange", capture.display());
            assert!(example.starts_with(&named), "{unreadable:?}");
        }
        assert_eq!(outcome.report.summary.total, 5, "threads {threads}");
    }
    // Over three passes (the second and third from the lines the first
    // kept): the same five exchanges each time, the three lines reported
    // once.
    let mut looped = run(1);
    looped.plan.passes = 3;
    looped.out_dir = dir.path().join("run-looped");
    let outcome = replay(&looped, std::future::pending()).await.unwrap();
    assert_eq!(outcome.report.unreadable.as_ref().unwrap().lines, 3);
    assert_eq!(outcome.report.summary.total, 15);
    let mut ids: Vec<(u32, u64)> = common::read_results(&looped.out_dir)
        .iter()
        .map(|r| (r.pass, r.id))
        .collect();
    ids.sort_unstable();
    let each: Vec<(u32, u64)> = (0..3)
        .flat_map(|pass| [1, 2, 5, 6, 8].map(|id| (pass, id)))
        .collect();
    assert_eq!(ids, each);
}

/// A plan that cannot run is refused as such (a typed error the caller can
/// tell from a failed run) before any file is written or request sent.
#[tokio::test]
async fn a_plan_that_cannot_run_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = (1..=2).map(|i| common::exchange(i, i * 1_000, "s", "GET", "/", &[]));
    let capture = common::write_capture(&dir.path().join("c.jsonl"), exchanges);
    let out = dir.path().join("run");
    let job = plan(
        capture,
        "http://127.0.0.1:1".into(),
        "http://127.0.0.1:2".into(),
        out.clone(),
    )
    .map_plan(|p| ReplayPlan {
        rate: Some(-1.0),
        ..p
    });
    let error = replay(&job, std::future::pending()).await.unwrap_err();
    assert!(
        matches!(error.downcast_ref(), Some(ReplayError::Plan(_))),
        "{error:?}"
    );
    assert!(
        !out.exists(),
        "nothing is written for a plan that cannot run"
    );
}

/// Both stacks answering 401 where 201 was recorded (a replay sending a
/// stale token) match each other, but the replay was not faithful: the
/// report says so first, counts the failures alike, and --min-fidelity
/// fails the run where --max-mismatch-rate alone would pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replay_never_reads_as_a_green_report() {
    let dir = tempfile::tempdir().unwrap();
    let exchanges = (1..=6).map(|i| {
        // The echo stacks answer with the status a request asks for.
        let status = if i <= 4 { "401" } else { "201" };
        let mut e = common::exchange(
            i,
            i * 1_000,
            "s",
            "POST",
            "/api/cart",
            &[("x-want-status", status.to_string())],
        );
        e.response = Some(tandem::capture::Response {
            status: 201,
            headers: Vec::new(),
            body: tandem::capture::Body::default(),
            latency_us: 100,
            truncated: None,
        });
        e
    });
    let capture = common::write_capture(&dir.path().join("c.jsonl"), exchanges);
    let (legacy, new) = (common::Echo::start().await, common::Echo::start().await);
    // The echo stacks name their own address; nothing else differs.
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[defaults]\nignore_headers = [\"x-echo-host\"]\n").unwrap();
    let job = ReplayJob {
        rules: Some(rules),
        gates: vec![Gate::max_mismatch_rate(0.0), Gate::min_fidelity(0.9)],
        ..plan(capture, legacy.url(), new.url(), dir.path().join("run"))
    };
    let outcome = replay(&job, std::future::pending()).await.unwrap();
    let report = &outcome.report;
    assert_eq!(
        report.summary.matched, 6,
        "the stacks agree with each other"
    );
    assert_eq!(report.summary.failed_alike, 4);
    let fidelity = report.fidelity.as_ref().expect("fidelity");
    assert_eq!((fidelity.judged, fidelity.faithful), (6, 2));
    let top = &fidelity.divergences[0];
    assert_eq!(
        (top.recorded.as_deref(), top.replayed.as_deref(), top.count),
        (Some("201"), Some("401"), 4)
    );
    assert!(!outcome.passed(), "the fidelity gate fails the run");
    let verdicts: Vec<_> = report
        .gates
        .iter()
        .map(|g| (g.expression.as_str(), g.passed))
        .collect();
    assert_eq!(
        verdicts,
        [("mismatch_rate <= 0%", true), ("fidelity >= 90%", false)]
    );

    // What people read says it first.
    let summary = std::fs::read_to_string(dir.path().join("run/summary.md")).unwrap();
    let first = summary
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    assert!(
        first.is_some_and(|l| l.contains("Parity cannot be trusted")
            && l.contains("recorded 201, legacy 401 on 4 exchanges")),
        "{summary}"
    );
    // And report merge and tandem diff keep it.
    let merged = tandem::report::merge::merge(vec![report.clone()]).unwrap();
    assert_eq!(merged.fidelity, report.fidelity);
    let rejudged = tandem::judge::judge_results(
        &dir.path().join("run/results.jsonl"),
        None,
        Default::default(),
        true,
    )
    .unwrap();
    assert_eq!(rejudged.fidelity, report.fidelity);
}

/// A schedule that would never finish, or flood, is refused up front with
/// what is wrong: a corrupt offset, a rate or speed so small that the next
/// send is years away, `--duration` over a capture with no span.
#[tokio::test]
async fn a_schedule_that_would_never_finish_or_flood_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, offsets: &[u64]| {
        let exchanges = offsets
            .iter()
            .enumerate()
            .map(|(i, o)| common::exchange(i as u64 + 1, *o, "s", "GET", "/", &[]));
        common::write_capture(&dir.path().join(name), exchanges)
    };
    let normal = write("normal.jsonl", &[0, 1_000, 2_000]);
    let corrupt = write("corrupt.jsonl", &[0, 1_000, u64::MAX]);
    let flat = write("flat.jsonl", &[5_000, 5_000, 5_000]);
    let refused = |capture: std::path::PathBuf, change: fn(ReplayPlan) -> ReplayPlan| {
        let job = plan(
            capture,
            "http://127.0.0.1:1".into(),
            "http://127.0.0.1:2".into(),
            dir.path().join("run"),
        )
        .map_plan(change);
        async move {
            match replay(&job, std::future::pending()).await {
                Err(e) => match e.downcast_ref() {
                    Some(ReplayError::Plan(why)) => why.clone(),
                    _ => panic!("not a plan error: {e:?}"),
                },
                Ok(_) => panic!("the plan was run"),
            }
        }
    };
    let why = refused(corrupt.clone(), |p| p).await;
    assert!(
        why.contains("corrupt.jsonl: line 4: offset 18446744073709551615"),
        "{why}"
    );
    let why = refused(normal.clone(), |p| ReplayPlan {
        rate: Some(1e-9),
        ..p
    })
    .await;
    assert!(
        why.contains("--rate 0.000000001: one request every"),
        "{why}"
    );
    let why = refused(normal.clone(), |p| ReplayPlan { speed: 1e-300, ..p }).await;
    assert!(
        why.contains("line 3") && why.contains("refusing waits over 1day"),
        "{why}"
    );
    let why = refused(flat, |p| ReplayPlan {
        duration: Some(Duration::from_secs(1)),
        ..p
    })
    .await;
    assert!(why.contains("under a microsecond"), "{why}");
    assert!(!dir.path().join("run").exists());
}
