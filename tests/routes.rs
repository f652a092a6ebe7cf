//! Routes as people name them: ids no shape rule catches (`SKU-a7`,
//! base62) learned from the capture, a written `[[route]] template` first,
//! and the same names in `tandem diff`.

mod common;

use tandem::capture::Exchange;
use tandem::cli::replay::{job_from_args, run};

fn capture(dir: &std::path::Path) -> std::path::PathBuf {
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut id = 0;
    let mut push = |target: String| {
        id += 1;
        exchanges.push(common::exchange(
            id,
            id * 1_000,
            &format!("s{id}"),
            "GET",
            &target,
            &[],
        ));
    };
    for i in 0..30 {
        push(format!(
            "/v1/products/SKU-{}{}",
            (b'a' + i % 26) as char,
            i % 7
        ));
    }
    for _ in 0..10 {
        push("/v1/products/search".into());
    }
    for i in 0..12 {
        push(format!("/v1/carts/aZ{i}kQ"));
    }
    common::write_capture(&dir.join("c.jsonl"), exchanges)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_learned_written_and_kept_by_diff() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path());
    let (legacy, new) = (common::Echo::start().await, common::Echo::start().await);
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[defaults]\nignore_headers = [\"x-echo-host\"]\n\n[[route]]\ntemplate = \"/v1/carts/{cart}\"\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let job = job_from_args([
        capture.to_str().unwrap(),
        "--legacy",
        &legacy.url(),
        "--new",
        &new.url(),
        "--speed",
        "10",
        "--rules",
        rules.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let report = run(&job, std::future::pending()).await.unwrap().report;
    let names: Vec<String> = report
        .routes
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.route, r.total))
        .collect();
    assert_eq!(
        names,
        [
            "GET /v1/carts/{cart} 12",
            "GET /v1/products/search 10",
            "GET /v1/products/{id} 30",
        ]
    );
    assert_eq!(report.learned_routes, ["/v1/products/{id}"]);
    assert!(report.unused_rules.is_empty(), "{:?}", report.unused_rules);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Routes learned\n"), "{summary}");

    // tandem diff names routes as the replay did.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "diff",
            out.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .arg("--out")
        .arg(dir.path().join("again"))
        .status()
        .unwrap();
    assert!(status.success());
    let again = tandem::report::Report::load(&dir.path().join("again/report.json")).unwrap();
    let routes = |r: &tandem::report::Report| {
        r.routes
            .iter()
            .map(|x| (x.route.clone(), x.total))
            .collect::<Vec<_>>()
    };
    assert_eq!(routes(&again), routes(&report));
}

/// A `[[route]]` with neither `match` nor `template` is an error naming it.
#[test]
fn a_route_rule_needs_match_or_template() {
    let error = tandem::diff::RuleSet::parse("[[route]]\nignore_paths = [\"$.x\"]\n").unwrap_err();
    assert!(
        format!("{error:#}").contains("[[route]] #1: needs `match` or `template`"),
        "{error:#}"
    );
    let error = tandem::diff::RuleSet::parse("[[route]]\ntemplate = \"v1/x\"\n").unwrap_err();
    assert!(
        format!("{error:#}").contains("must be a path starting with /"),
        "{error:#}"
    );
}
