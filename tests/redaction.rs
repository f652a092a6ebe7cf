//! Redaction: tokens are stable for a key and keep equal values equal, so
//! a redacted capture replays, correlates and diffs as the original does;
//! the recorder writes its counts (never values) in the capture's trailer.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tandem::capture::{CaptureReader, Exchange};
use tandem::cli::replay::ReplayJob;
use tandem::demo::{self, DemoOptions, Flavor};
use tandem::record::{record_proxy, ProxyConfig, Rotation, Selection, Sink};
use tandem::redact::Redactor;
use tandem::replay::ReplayPlan;

const KEY: &str = "0123456789abcdef-test-key";

const RULES: &str = r#"
[redact]
headers = ["x-demo-user"]
json = ["$.token", "$.customer"]
# A value redacted in one place must be redacted in all: customers are
# read back by query too.
query = ["customer"]
detect = ["bearer", "email", "card"]
"#;

fn redact(input: &Path, out: &Path, rules: &Path, key: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "redact",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--redact", rules.to_str().unwrap()])
        .env("TANDEM_REDACT_KEY", key)
        .output()
        .unwrap()
}

fn exchanges(path: &Path) -> Vec<Exchange> {
    CaptureReader::open(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The demo's job on `capture`, against fresh stacks.
async fn replayed(capture: PathBuf, out: PathBuf) -> tandem::report::Report {
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let job = ReplayJob {
        rules: Some("scenarios/demo.rules.toml".into()),
        ..ReplayJob::new(
            ReplayPlan {
                speed: 1.0,
                timeout: Duration::from_secs(5),
                ..ReplayPlan::new(
                    capture,
                    legacy.url().parse().unwrap(),
                    new.url().parse().unwrap(),
                )
            },
            out,
        )
    };
    let outcome = tandem::cli::replay::run(&job, std::future::pending())
        .await
        .unwrap();
    legacy.stop().await;
    new.stop().await;
    outcome.report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_capture_replays_correlates_and_diffs_as_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.jsonl");
    demo::record(&DemoOptions {
        requests: 300,
        capture: original.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let rules = dir.path().join("redact.toml");
    std::fs::write(&rules, RULES).unwrap();
    let (a, b, other) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("other-key.jsonl"),
    );
    for (out, key) in [
        (&a, KEY),
        (&b, KEY),
        (&other, "another key, also long enough"),
    ] {
        let done = redact(&original, out, &rules, key);
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    // Stable for a key, different for another.
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    assert!(std::fs::read(&a).unwrap() != std::fs::read(&other).unwrap());

    // No token or customer of the original is left; equal values stay
    // equal (as many distinct tokens and sessions as before).
    let (before, after) = (exchanges(&original), exchanges(&a));
    let tokens = |xs: &[Exchange]| -> std::collections::BTreeSet<String> {
        xs.iter()
            .filter_map(|x| x.response.as_ref())
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r.body.bytes()).ok())
            .filter_map(|v| v["token"].as_str().map(str::to_string))
            .collect()
    };
    let (real, redacted) = (tokens(&before), tokens(&after));
    assert!(!real.is_empty());
    assert_eq!(real.len(), redacted.len());
    assert!(real.is_disjoint(&redacted));
    let text = std::fs::read_to_string(&a).unwrap();
    for token in &real {
        assert!(!text.contains(token.as_str()), "a token is left");
    }
    let sessions = |xs: &[Exchange]| -> std::collections::BTreeSet<String> {
        xs.iter().map(|x| x.session.clone()).collect()
    };
    assert_eq!(sessions(&before).len(), sessions(&after).len());
    assert!(sessions(&before).is_disjoint(&sessions(&after)));
    let trailer = CaptureReader::open(&a)
        .map(|mut r| {
            r.by_ref().for_each(drop);
            r.trailer().cloned()
        })
        .unwrap()
        .expect("a trailer");
    assert!(trailer.redacted["json:$.token"] > 0, "{trailer:?}");
    assert!(trailer.redacted["detect:bearer"] > 0, "{trailer:?}");
    assert!(!text.contains("\"trailer\":{\"redacted\":{\"json:$.token\":0"));

    // Replayed, both find the same: counts, groups, correlation links.
    let original_report = replayed(original, dir.path().join("run-original")).await;
    let redacted_report = replayed(a, dir.path().join("run-redacted")).await;
    let groups = |r: &tandem::report::Report| -> Vec<String> {
        let mut g: Vec<String> = r
            .mismatch_groups
            .iter()
            .map(|g| format!("{} {} {:?} {}", g.route, g.kind.as_str(), g.path, g.count))
            .collect();
        g.sort();
        g
    };
    assert_eq!(original_report.summary.total, redacted_report.summary.total);
    assert_eq!(
        original_report.summary.matched,
        redacted_report.summary.matched,
        "{:#?}\n{:#?}\n{:#?}\n{:#?}",
        groups(&original_report),
        groups(&redacted_report),
        original_report.correlation.as_ref().map(|c| &c.reasons),
        redacted_report.correlation.as_ref().map(|c| &c.reasons)
    );
    assert_eq!(groups(&original_report), groups(&redacted_report));
    let links = |r: &tandem::report::Report| r.correlation.as_ref().unwrap().links.len();
    assert!(links(&original_report) > 0);
    assert_eq!(
        links(&original_report),
        links(&redacted_report),
        "{:#?}\n{:#?}",
        original_report.correlation.as_ref().unwrap().links,
        redacted_report.correlation.as_ref().unwrap().links
    );
}

/// Recording through the proxy with redaction: what is written is redacted,
/// what the client gets is not, and the counts are in the trailer.
#[tokio::test]
async fn the_recorder_redacts_what_it_writes_and_counts_it() {
    let upstream = common::Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl");
    let rules_file = dir.path().join("redact.toml");
    std::fs::write(&rules_file, RULES).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let config = ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        ..ProxyConfig::new(listener, upstream.url().parse().unwrap())
    };
    let redactor = Redactor::load(&rules_file, KEY.as_bytes().to_vec()).unwrap();
    let sink = Sink::create_with(
        &out,
        &config.source(),
        Selection::default(),
        Rotation::default(),
        Some(redactor),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    let client = tandem::http::client(Duration::from_secs(5));
    let body = r#"{"customer":"jane@example.com","card":"4111-1111-1111-1111","note":"call jane@example.com"}"#;
    let seen = common::send(
        &client,
        &format!("{proxy}/api/pay?x=1"),
        "POST",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer abc123secret"),
        ],
        Bytes::from_static(body.as_bytes()),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert!(
        String::from_utf8_lossy(&seen.body).contains("4111-1111-1111-1111"),
        "the client's answer is untouched"
    );
    stop.send(()).unwrap();
    let summary = recording.await.unwrap().unwrap();
    // The echo upstream answers with the request: its body is redacted too.
    assert_eq!(
        summary.redacted["json:$.customer"], 2,
        "{:?}",
        summary.redacted
    );
    let text = std::fs::read_to_string(&out).unwrap();
    for secret in ["jane@example.com", "4111-1111-1111-1111", "abc123secret"] {
        assert!(!text.contains(secret), "{secret} was written");
    }
    let mut reader = CaptureReader::open(&out).unwrap();
    let kept: Vec<Exchange> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(kept.len(), 1);
    let request: serde_json::Value = serde_json::from_slice(kept[0].request.body.bytes()).unwrap();
    let card = request["card"].as_str().unwrap();
    assert!(tandem::redact::is_card(card), "still a card: {card}");
    assert!(card.starts_with('4') && card.len() == 19);
    let bearer = tandem::capture::header_value(&kept[0].request.headers, "authorization").unwrap();
    assert!(bearer.starts_with("Bearer ") && bearer.len() == "Bearer abc123secret".len());
    let trailer = reader.trailer().expect("a trailer");
    assert_eq!(trailer.redacted, summary.redacted);
    assert!(trailer.redacted["detect:email"] >= 1);
    assert!(trailer.redacted["detect:card"] >= 1);
}
