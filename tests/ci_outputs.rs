//! CI outputs: JUnit XML checked against the usual schema's rules with an
//! XML parser, its size bounds, and the GitHub step summary's 1 MiB cap.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use tandem::demo::{self, Flavor};
use tandem::report::{Junit, Render, Report};

/// One testcase as read back.
#[derive(Debug)]
struct Case {
    classname: String,
    name: String,
    failure: Option<String>,
    skipped: bool,
}

/// Reads JUnit XML, holding it to the schema CI systems read (the Jenkins
/// / Ant XSD): `testsuites` of `testsuite`s with `name`, `tests`,
/// `failures`, `errors`; `testcase`s with `name` and `classname`; a
/// `failure` with a `message`; counts that add up.
fn read_junit(xml: &str) -> (Vec<(String, String)>, Vec<Case>) {
    let mut reader = Reader::from_str(xml);
    let mut properties = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut suite_counts: Option<(usize, usize, usize)> = None;
    let mut seen_in_suite = (0, 0);
    let attrs = |e: &quick_xml::events::BytesStart| -> Vec<(String, String)> {
        e.attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect()
    };
    let get = |a: &[(String, String)], k: &str| {
        a.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing attribute {k} in {a:?}"))
    };
    loop {
        let event = reader.read_event().unwrap();
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
            let a = attrs(&e);
            let parent = stack.last().cloned().unwrap_or_default();
            match name.as_str() {
                "testsuites" => assert!(parent.is_empty()),
                "testsuite" => {
                    assert_eq!(parent, "testsuites");
                    get(&a, "name");
                    let n = |k: &str| get(&a, k).parse::<usize>().unwrap();
                    suite_counts = Some((n("tests"), n("failures"), n("errors")));
                    seen_in_suite = (0, 0);
                }
                "properties" => assert_eq!(parent, "testsuite"),
                "property" => {
                    assert_eq!(parent, "properties");
                    properties.push((get(&a, "name"), get(&a, "value")));
                }
                "testcase" => {
                    assert_eq!(parent, "testsuite");
                    seen_in_suite.0 += 1;
                    cases.push(Case {
                        classname: get(&a, "classname"),
                        name: get(&a, "name"),
                        failure: None,
                        skipped: false,
                    });
                }
                "failure" => {
                    assert_eq!(parent, "testcase");
                    seen_in_suite.1 += 1;
                    cases.last_mut().unwrap().failure = Some(get(&a, "message"));
                }
                "skipped" => {
                    assert_eq!(parent, "testcase");
                    cases.last_mut().unwrap().skipped = true;
                }
                other => panic!("unexpected element {other}"),
            }
            if !empty {
                stack.push(name);
            }
        }
        match event {
            Event::End(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()));
                if name == "testsuite" {
                    let (tests, failures, errors) = suite_counts.take().unwrap();
                    assert_eq!(
                        (tests, failures, errors),
                        (seen_in_suite.0, seen_in_suite.1, 0)
                    );
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty());
    let names: BTreeSet<(&str, &str)> = cases
        .iter()
        .map(|c| (c.classname.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(names.len(), cases.len(), "testcase names are unique");
    (properties, cases)
}

/// `tandem replay --junit` against the demo stacks, with the step summary
/// file nearly full: JUnit per gate and group, and the summary kept under
/// 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_and_step_summary_from_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let (out, junit, summary) = (
        dir.path().join("run"),
        dir.path().join("ci/junit.xml"),
        dir.path().join("step-summary.md"),
    );
    let filler = "x".repeat((1 << 20) - 400) + "\n";
    std::fs::write(&summary, &filler).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["replay", "captures/sample.jsonl", "--legacy", &legacy.url()])
        .args(["--new", &new.url(), "--speed", "4"])
        .args(["--rules", "scenarios/demo.rules.toml"])
        .args(["--gate", "fidelity >= 90%", "--gate", "parity >= 99%"])
        .arg("--junit")
        .arg(&junit)
        .arg("--out")
        .arg(&out)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    legacy.stop().await;
    new.stop().await;

    let (properties, cases) = read_junit(&std::fs::read_to_string(&junit).unwrap());
    let report = Report::load(&out.join("report.json")).unwrap();
    assert!(properties.contains(&("exchanges".into(), report.summary.total.to_string())));
    let generator = report.generator.as_ref().expect("engines measured");
    assert!(properties.contains(&("engines".into(), generator.engines.len().to_string())));
    let busiest = generator.busiest().unwrap().busy;
    assert!(properties.contains(&("engine_busiest".into(), format!("{busiest:.2}"))));
    let gates: Vec<(&str, bool)> = cases
        .iter()
        .filter(|c| c.classname == "gates")
        .map(|c| (c.name.as_str(), c.failure.is_some()))
        .collect();
    assert_eq!(gates, [("fidelity >= 90%", false), ("parity >= 99%", true)]);
    let parity_failure = cases.iter().find(|c| c.name == "parity >= 99%").unwrap();
    assert!(parity_failure
        .failure
        .as_ref()
        .unwrap()
        .contains(" >= 99.00%"));
    for g in &report.mismatch_groups {
        let classname = format!("{} {}", g.method, g.route);
        assert!(
            cases
                .iter()
                .any(|c| c.classname == classname && c.failure.is_some()),
            "{classname}"
        );
    }
    assert!(
        cases
            .iter()
            .any(|c| c.name == "parity" && c.failure.is_none()),
        "routes with no mismatch pass"
    );

    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.len() < 1 << 20, "{}", text.len());
    assert!(text.starts_with(&filler));
    let appended = &text[filler.len()..];
    assert!(appended.starts_with("## tandem parity"), "{appended}");
    assert!(
        appended.contains("**Verdict FAILED: 1 of 2 gates failed**"),
        "{appended}"
    );
    assert!(
        appended.contains("cut to fit the step summary"),
        "{appended}"
    );
}

/// Thousands of mismatch groups: JUnit stays bounded and says what it left
/// out; learned noise is skipped; names stay unique.
#[test]
fn junit_is_bounded_and_marks_noise_skipped() {
    let report = sample_report();
    let mut big = report.clone();
    let group = big.mismatch_groups[0].clone();
    big.mismatch_groups = (0..2_000)
        .map(|i| {
            let mut g = group.clone();
            g.path = Some(format!("$.field{i}"));
            if let Some(e) = g.examples.first_mut() {
                e.request.line = format!("GET /{}", "y".repeat(10_000));
            }
            g
        })
        .collect();
    big.learned_noise = Some(tandem::report::LearnedNoise {
        legacy2: "http://127.0.0.1:1".into(),
        relative_threshold: 0.5,
        absolute_threshold: 0.01,
        z_threshold: 2.58,
        groups: vec![tandem::report::NoiseGroup {
            method: "GET".into(),
            route: "/api/products".into(),
            kind: tandem::diff::MismatchKind::Value,
            path: Some("$.generated_at".into()),
            diff_rate: 1.0,
            noise_rate: 1.0,
        }],
        evidence: None,
    });
    let mut xml = Vec::new();
    Junit.render(&big, &mut xml).unwrap();
    assert!(xml.len() < 3 << 20, "{} bytes", xml.len());
    let (properties, cases) = read_junit(std::str::from_utf8(&xml).unwrap());
    assert!(properties.contains(&("groups_left_out".into(), "1500".into())));
    let failures: Vec<&Case> = cases.iter().filter(|c| c.failure.is_some()).collect();
    assert!(failures.len() <= 500 + big.gates.len() + big.routes.len());
    let noise = cases.iter().find(|c| c.name.starts_with("noise")).unwrap();
    assert!(noise.skipped);
}

/// A report of the demo's stacks, run here.
fn sample_report() -> Report {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(common::demo_run(dir.path(), 200)).1
}
