//! report.html in a real browser: headless Chromium (installed by
//! `.ci/setup`) loads the demo's report from disk with no network, every
//! chart draws, no script error, the routes table sorts, and the mismatch
//! groups show both answers side by side.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The page's DOM after its scripts ran, and Chromium's log.
fn load(page: &Path, fragment: &str) -> (String, String) {
    let started = Instant::now();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        // Nothing may come from the network: the page is self-contained.
        .args([
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
        ])
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .arg("--dump-dom")
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .expect("chromium runs (.ci/setup installs it)");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_report_draws_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (options, report) = common::demo_run(dir.path(), 600).await;
    let page = options.out_dir.join("report.html");
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(
        !text.contains("<script src") && !text.contains("<link"),
        "inline only"
    );

    let (dom, log) = tokio::task::spawn_blocking({
        let page = page.clone();
        move || load(&page, "")
    })
    .await
    .unwrap();
    assert!(
        dom.contains("data-charts-ready=\"5\""),
        "not every chart drew: {log}"
    );
    assert!(!dom.contains("data-error"), "a script failed: {dom}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
    // uPlot drew its canvases.
    assert!(dom.matches("<canvas").count() >= 5, "canvases");
    // Each mismatch group, with both answers side by side, lines marked.
    for g in &report.mismatch_groups {
        assert!(dom.contains(&format!("<code>{} {}</code>", g.method, g.route)));
    }
    assert!(dom.contains("<del>") && dom.contains("<ins>"));
    // The new stack's webhook sent twice, in the side effects' table.
    let effects = dom
        .split("id=\"effects\"")
        .nth(1)
        .expect("an effects table");
    assert!(
        effects.contains("order.paid") && effects.contains("2 times"),
        "{effects}"
    );
    assert!(!dom.contains("Bearer "), "credentials stay out of the page");
    // Who sent the load, and how busy it was.
    let generator = report.generator.as_ref().expect("engines measured");
    assert!(
        dom.contains(&format!("sent by {}", generator.describe())),
        "{dom}"
    );

    // Sorted by count (one click: ascending): the quietest route first.
    let (sorted, _) = tokio::task::spawn_blocking(move || load(&page, "#sort=1"))
        .await
        .unwrap();
    let busiest = report.routes.iter().max_by_key(|r| r.total).unwrap();
    let first_row = sorted
        .split("class=\"routes sortable\"")
        .nth(1)
        .and_then(|table| table.split("<tbody>").nth(1))
        .and_then(|body| body.split("</tr>").next())
        .unwrap()
        .to_string();
    let least = report.routes.iter().min_by_key(|r| r.total).unwrap();
    assert!(
        first_row.contains(&format!("{} {}", least.method, least.route)),
        "ascending after one click: {first_row}"
    );
    assert_ne!(busiest.total, least.total);
}

/// `tandem report html` writes the page again from report.json alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_html_rewrites_the_page_from_report_json() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 200).await;
    let page = options.out_dir.join("report.html");
    let first = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["report", "html"])
        .arg(&options.out_dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&page).unwrap(), first);
    let missing = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["report", "html"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
