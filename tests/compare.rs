//! `tandem report compare BASE RUN`: the same demo results judged with and
//! without a rule that hides the currency bug: the group is new one way,
//! fixed the other, the rest still there; `--fail-on-new-groups` exits 1
//! only when something is new.

mod common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fixed_and_still_there() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 400).await;
    let hiding = dir.path().join("hiding.toml");
    std::fs::write(
        &hiding,
        std::fs::read_to_string("scenarios/demo.rules.toml").unwrap()
            + "\n[[route]]\nmatch = \"GET /api/products/*\"\nignore_paths = [\"$.currency\"]\n",
    )
    .unwrap();
    let tandem = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .output()
            .unwrap()
    };
    let run = options.out_dir.to_str().unwrap();
    let base = dir.path().join("base");
    let judged = tandem(&[
        "diff",
        run,
        "--rules",
        hiding.to_str().unwrap(),
        "--out",
        base.to_str().unwrap(),
    ]);
    assert!(judged.status.success());
    let base = base.to_str().unwrap();

    let out = tandem(&["report", "compare", base, run, "--fail-on-new-groups"]);
    assert_eq!(out.status.code(), Some(1), "the currency group is new");
    let md = std::fs::read_to_string(options.out_dir.join("compare.md")).unwrap();
    assert!(md.contains("Mismatch groups: 1 new, 0 fixed, "), "{md}");
    assert!(
        md.contains("| new | `GET /api/products/{id} missing_field $.currency` | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| still | `GET /api/orders/{id} value $.total` |"),
        "{md}"
    );
    // Per route: products went from full parity to none.
    let products = md
        .lines()
        .find(|l| l.starts_with("| `GET /api/products/{id}` |"))
        .unwrap();
    assert!(
        products.contains("100.00% → 0.00% (-100.00 pts)"),
        "{products}"
    );
    let html = std::fs::read_to_string(options.out_dir.join("compare.html")).unwrap();
    assert!(html
        .contains("<td>new</td><td><code>GET /api/products/{id} missing_field $.currency</code>"));

    let reversed = dir.path().join("reversed");
    let out = tandem(&[
        "report",
        "compare",
        run,
        base,
        "--fail-on-new-groups",
        "--out",
        reversed.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing new: the group was fixed"
    );
    let md = std::fs::read_to_string(reversed.join("compare.md")).unwrap();
    assert!(md.contains("Mismatch groups: 0 new, 1 fixed, "), "{md}");

    // Had the run's engine been saturated, its latencies may be tandem's,
    // and had its machine's host paused it, the host's: the comparison says
    // so, naming the run.
    let path = options.out_dir.join("report.json");
    let mut report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    report["generator"] = serde_json::json!({"engines": [
        {"cpu_ms": 900, "waited_ms": 70, "span_ms": 1_000, "busy": 0.97, "stolen": 0.2}
    ]});
    std::fs::write(&path, report.to_string()).unwrap();
    let caveat = dir.path().join("caveat");
    let out = tandem(&[
        "report",
        "compare",
        base,
        run,
        "--out",
        caveat.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let md = std::fs::read_to_string(caveat.join("compare.md")).unwrap();
    let expected = format!(
        "**{run}: tandem's own limit may have been reached, 1 replay engine, 97% busy \
         (running 90%, waiting for a core 7%)"
    );
    assert!(md.contains(&expected), "{md}");
    let host = format!("**{run}: the host of the machine that replayed took 20% of its CPU time");
    assert!(md.contains(&host), "{md}");
    let html = std::fs::read_to_string(caveat.join("compare.html")).unwrap();
    assert!(html.contains("<p class=\"warning\">"), "{html}");
}
