//! The differ on real servers: noise learning against stacks whose ids,
//! timestamps and request ids are random per request, learned rules, offline
//! re-diff, unused rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::demo::{self, DemoOptions, Flavor};
use tandem::diff::MismatchKind;
use tandem::judge::{judge_results as rediff, NoiseThresholds};
use tandem::replay::ReplayPlan;
use tandem::report::{merge::merge, Report};

type Group = (String, String, MismatchKind, Option<String>);

fn groups(report: &Report) -> BTreeSet<Group> {
    report
        .mismatch_groups
        .iter()
        .map(|g| (g.method.clone(), g.route.clone(), g.kind, g.path.clone()))
        .collect()
}

fn group(method: &str, route: &str, kind: MismatchKind, path: Option<&str>) -> Group {
    (method.into(), route.into(), kind, path.map(str::to_string))
}

fn the_planted_bugs() -> BTreeSet<Group> {
    [
        group(
            "GET",
            "/api/orders/{id}",
            MismatchKind::Value,
            Some("$.total"),
        ),
        group(
            "GET",
            "/api/products/{id}",
            MismatchKind::MissingField,
            Some("$.currency"),
        ),
        group("POST", "/api/orders", MismatchKind::Status, None),
        // Only a replay that follows each stack's token and order ids reads
        // a paid order back at all.
        group(
            "GET",
            "/api/orders/{id}",
            MismatchKind::Value,
            Some("$.status"),
        ),
    ]
    .into_iter()
    .collect()
}

async fn capture(dir: &Path) -> PathBuf {
    let options = DemoOptions {
        requests: 800,
        capture: dir.join("demo.jsonl.gz"),
        out_dir: dir.join("demo-run"),
        ..DemoOptions::default()
    };
    tandem::cli::demo::run(&options).await.unwrap();
    options.capture
}

fn plan(capture: PathBuf, legacy: String, new: String, out: PathBuf) -> ReplayJob {
    ReplayJob::new(
        ReplayPlan {
            speed: 4.0,
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            ..ReplayPlan::new(capture, legacy.parse().unwrap(), new.parse().unwrap())
        },
        out,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_learning_keeps_the_bugs_and_drops_random_fields() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let (legacy, legacy2, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let learned_rules = dir.path().join("learned.toml");
    let mut p = plan(capture, legacy.url(), new.url(), dir.path().join("learn"));
    p.plan.legacy2 = Some(legacy2.url().parse().unwrap());
    p.write_rules = Some(learned_rules.clone());
    let report = replay(&p, std::future::pending()).await.unwrap().report;

    // No rules at all: what remains is the three bugs, and the header only
    // the new stack sends (no legacy answer has it, so it is no noise), on
    // every route.
    let (headers, others): (Vec<Group>, Vec<Group>) = groups(&report)
        .into_iter()
        .partition(|g| g.2 == MismatchKind::Header);
    assert_eq!(
        others.into_iter().collect::<BTreeSet<_>>(),
        the_planted_bugs()
    );
    assert!(!headers.is_empty());
    assert!(
        headers
            .iter()
            .all(|g| g.3.as_deref() == Some("x-correlation-id")),
        "{headers:#?}"
    );

    // The random fields were learned as noise, each at its route.
    let noise = report.learned_noise.as_ref().expect("learned noise");
    let noisy: BTreeSet<(String, Option<String>)> = noise
        .groups
        .iter()
        .map(|g| (format!("{} {}", g.method, g.route), g.path.clone()))
        .collect();
    // Ids are no noise: each stack's stand for the same recorded ones.
    assert!(!noisy.contains(&("POST /api/orders".to_string(), Some("$.id".to_string()))));
    assert!(report.correlation.as_ref().unwrap().settled > 0);
    for (route, path) in [
        ("POST /api/orders", "$.created_at"),
        ("GET /api/products", "$.generated_at"),
        ("POST /api/orders/{id}/pay", "$.payment_id"),
        ("POST /api/orders/{id}/pay", "$.paid_at"),
    ] {
        assert!(
            noisy.contains(&(route.to_string(), Some(path.to_string()))),
            "{route} {path}: {noisy:#?}"
        );
    }
    assert!(noise.groups.iter().all(|g| g.noise_rate > 0.0));

    // The learned rules, applied offline to the same results, leave the same
    // real groups and no noise.
    let text = std::fs::read_to_string(&learned_rules).unwrap();
    assert!(
        text.contains("match = \"POST /api/orders\"") && text.contains("\"$.created_at\""),
        "{text}"
    );
    // The links the replay followed are written too, as rules that load.
    assert!(
        text.contains("[[correlate]]") && text.contains("from = \"$.token\""),
        "{text}"
    );
    assert!(
        tandem::correlate::rules_in(&learned_rules)
            .unwrap()
            .correlate
            .len()
            >= 2
    );
    let results = dir.path().join("learn/results.jsonl");
    let offline = rediff(
        &results,
        Some(&learned_rules),
        NoiseThresholds::default(),
        true,
    )
    .unwrap();
    assert_eq!(groups(&offline), groups(&report));
    assert_eq!(offline.summary.total, report.summary.total);

    // Split by session into three shards' results, as `--shard I/3` would
    // have replayed them: their merged report judges noise as the report
    // of all the results does.
    let whole = rediff(&results, None, NoiseThresholds::default(), true).unwrap();
    let merged = merge(shard_reports(&results, dir.path(), 3)).unwrap();
    assert_eq!(merged.summary, whole.summary);
    assert_eq!(counted(&merged), counted(&whole));
    assert_eq!(noise_paths(&merged), noise_paths(&whole));
    for server in [legacy, legacy2, new] {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_rediff_equals_the_live_report_and_takes_new_rules() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let rules = Path::new("scenarios/demo.rules.toml");
    let mut p = plan(capture, legacy.url(), new.url(), dir.path().join("run"));
    p.rules = Some(rules.to_path_buf());
    let live = replay(&p, std::future::pending()).await.unwrap().report;
    legacy.stop().await;
    new.stop().await;
    assert_eq!(groups(&live), the_planted_bugs());

    let results = dir.path().join("run/results.jsonl");
    // The file states repeated bodies once, and reads them back whole.
    let text = std::fs::read_to_string(&results).unwrap();
    assert!(text.contains(r#"{"same":"#) && text.contains(r#""keep":"#));
    let same = rediff(&results, Some(rules), NoiseThresholds::default(), true).unwrap();
    assert_eq!(same.summary, live.summary);
    assert_eq!(groups(&same), groups(&live));
    let counts = |r: &Report| {
        r.mismatch_groups
            .iter()
            .map(|g| g.count)
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&same), counts(&live));

    // Without rules the noise shows again; nothing was sent to do it.
    let bare = rediff(&results, None, NoiseThresholds::default(), true).unwrap();
    assert!(groups(&bare).len() > 5, "{:#?}", groups(&bare));
    assert!(bare.summary.mismatched > live.summary.mismatched);

    // A rules file can name more headers to redact in reports.
    let redacting = dir.path().join("redacting.toml");
    let text = std::fs::read_to_string(rules).unwrap();
    std::fs::write(
        &redacting,
        text.replacen(
            "[defaults]\n",
            "[defaults]\nredact_headers = [\"x-demo-user\"]\n",
            1,
        ),
    )
    .unwrap();
    let redacted = rediff(&results, Some(&redacting), NoiseThresholds::default(), true).unwrap();
    let shown = &redacted.mismatch_groups[0].examples[0].request.headers;
    assert!(
        shown
            .iter()
            .any(|h| h.0 == "x-demo-user" && h.1.starts_with("<redacted")),
        "{shown:?}"
    );
    assert_eq!(
        groups(&redacted),
        groups(&live),
        "redaction changes no verdict"
    );

    // Examples carry the request and both answers.
    let example = &live.mismatch_groups[0].examples[0];
    assert!(example.request.line.starts_with("GET /api/products/"));
    assert_eq!(example.legacy.line, "200");
    assert!(example.legacy.body.contains("\"currency\":\"EUR\""));
    assert!(!example.new.body.contains("currency"));
    assert!(example
        .request
        .headers
        .iter()
        .any(|h| h.0 == "authorization" && h.1.starts_with("<redacted")));
    assert!(live
        .mismatch_groups
        .iter()
        .all(|g| (1..=3).contains(&g.examples.len())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_match_nothing_are_reported_unused() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let rules = dir.path().join("stale.toml");
    let shipped = std::fs::read_to_string("scenarios/demo.rules.toml").unwrap();
    let stale = "\n[[route]]\nmatch = \"GET /api/legacy-only\"\nignore_paths = [\"$.x\"]\n\n[[route]]\nmatch = \"GET /api/products/{id}\"\nignore_paths = [\"$.no_such_field\"]\nignore_headers = [\"x-nobody-sends-this\"]\n";
    std::fs::write(&rules, shipped + stale).unwrap();
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let mut p = plan(capture, legacy.url(), new.url(), dir.path().join("run"));
    p.rules = Some(rules);
    let report = replay(&p, std::future::pending()).await.unwrap().report;
    legacy.stop().await;
    new.stop().await;
    let unused = report.unused_rules.join("\n");
    assert!(
        unused.contains("GET /api/legacy-only\"): matched no route"),
        "{unused}"
    );
    assert!(unused.contains("$.no_such_field"), "{unused}");
    assert!(unused.contains("x-nobody-sends-this"), "{unused}");
    // The shipped rule for the stacks' webhook calls applies to side
    // effects, which this replay does not collect.
    assert!(unused.contains("POST /hooks"), "{unused}");
    assert_eq!(report.unused_rules.len(), 4, "{unused}");
    let summary = std::fs::read_to_string(dir.path().join("run/summary.md")).unwrap();
    assert!(summary.contains("## Unused rules"));
}

/// Mismatch groups with their counts.
fn counted(report: &Report) -> BTreeSet<(Group, u64)> {
    report
        .mismatch_groups
        .iter()
        .map(|g| {
            (
                (g.method.clone(), g.route.clone(), g.kind, g.path.clone()),
                g.count,
            )
        })
        .collect()
}

fn noise_paths(report: &Report) -> BTreeSet<(String, String, Option<String>)> {
    let noise = report.learned_noise.as_ref().expect("learned noise");
    noise
        .groups
        .iter()
        .map(|g| (g.method.clone(), g.route.clone(), g.path.clone()))
        .collect()
}

/// The reports of `results` split by session hash into `n` results files,
/// each re-diffed and read back from JSON as `tandem report merge` would.
fn shard_reports(results: &Path, dir: &Path, n: u64) -> Vec<Report> {
    use tandem::results::{ResultSink, ResultsReader, ResultsWriter};
    // Read and written as results, not as lines: a line may repeat a body
    // of a line that goes to another shard.
    let mut reader = ResultsReader::open(results).unwrap();
    let paths: Vec<_> = (0..n)
        .map(|i| dir.join(format!("shard-{i}.jsonl")))
        .collect();
    let mut shards: Vec<ResultsWriter> = paths
        .iter()
        .map(|path| ResultsWriter::create(path, reader.header()).unwrap())
        .collect();
    while let Some(result) = reader.next_result() {
        let result = result.unwrap();
        let hash = tandem::capture::session_hash(&result.session);
        shards[(hash % n) as usize].accept(&result).unwrap();
    }
    for shard in &mut shards {
        shard.finish().unwrap();
    }
    paths
        .iter()
        .map(|path| {
            let report = rediff(path, None, NoiseThresholds::default(), true).unwrap();
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap()
        })
        .collect()
}
