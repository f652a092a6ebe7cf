//! Nothing lost, nothing clobbered: outputs never overwrite their inputs,
//! an existing output stays whole until its replacement is, a killed run
//! leaves what it had flushed, and a report that cannot be written still
//! leaves the terminal summary.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tandem::demo::{self, Flavor};
use tokio::process::Command;

async fn tandem(args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("tandem finished within 60 s")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn zeek_trace(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/zeek-http/traces")
        .join(name)
}

/// Files in `dir` whose name says they were left half-written.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tandem-") || n.ends_with(".partial"))
        .collect()
}

#[tokio::test]
async fn an_output_never_overwrites_an_input_nor_an_existing_file_before_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    // import X --out X: refused, X untouched.
    let pcap = dir.path().join("same.pcap");
    std::fs::copy(zeek_trace("100-continue.pcap"), &pcap).unwrap();
    let before = std::fs::read(&pcap).unwrap();
    let out = tandem(&[
        "import",
        pcap.to_str().unwrap(),
        "--out",
        pcap.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("would overwrite the input"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read(&pcap).unwrap() == before,
        "the pcap is untouched"
    );

    // A good import, then a bad file imported over it: the capture stays.
    let capture = dir.path().join("kept.jsonl");
    let out = tandem(&[
        "import",
        pcap.to_str().unwrap(),
        "--out",
        capture.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let good = std::fs::read(&capture).unwrap();
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, b"this is not a packet capture\n").unwrap();
    let out = tandem(&[
        "import",
        bad.to_str().unwrap(),
        "--out",
        capture.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        std::fs::read(&capture).unwrap() == good,
        "the capture is whole"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // A replay whose run directory holds its capture as results.jsonl.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let inside = run.join("results.jsonl");
    std::fs::write(&inside, &good).unwrap();
    let dead = format!("http://{}", common::dead_port().await);
    let out = tandem(&[
        "replay",
        inside.to_str().unwrap(),
        "--legacy",
        &dead,
        "--new",
        &dead,
        "--out",
        run.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("would overwrite the input"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read(&inside).unwrap() == good,
        "the capture is untouched"
    );
}

/// A replay killed with SIGKILL part way leaves the results it had: they
/// are pushed to `results.jsonl.partial` at least once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replay_leaves_what_it_had_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 200).await;
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let run = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "replay",
            options.capture.to_str().unwrap(),
            "--legacy",
            &legacy.url(),
            "--new",
            &legacy.url(),
            "--rate",
            "40",
            "--out",
            run.to_str().unwrap(),
            "--no-progress",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // From the first flush (a second in), 2.5 s more at 40 exchanges/s:
    // 100 more sent, those older than the last second flushed.
    let first = common::wait_for_results(&run, 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let pid = child.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait().await.unwrap();
    assert!(
        !run.join("results.jsonl").exists(),
        "not finished, not named"
    );
    let partial = run.join("results.jsonl.partial");
    let lines = std::fs::read_to_string(&partial).unwrap();
    let results = lines.lines().count().saturating_sub(1);
    assert!(
        results >= first + 40,
        "{results} results kept, {first} at the first flush"
    );
    let mut reader = tandem::results::ResultsReader::open(&partial).unwrap();
    let read = std::iter::from_fn(|| reader.next_result())
        .filter(Result::is_ok)
        .count();
    // Every whole line; the kill may have cut the last.
    assert!(read + 1 >= results, "{read} of {results} results readable");
    legacy.stop().await;
}

/// A report that cannot be written (the file size limit stands in for a
/// full disk) leaves any earlier report whole, no temporary file behind,
/// and the terminal summary printed from memory; exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_cannot_be_written_leaves_the_summary_and_the_old_report() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 200).await;
    let out = dir.path().join("rejudged");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.json"), b"{\"earlier\": true}\n").unwrap();
    // ulimit -f counts KiB in bash; SIGXFSZ ignored, so writes past the
    // limit fail with EFBIG instead of killing the process.
    let script = format!(
        "ulimit -f 8; trap '' XFSZ; exec '{}' diff '{}' --out '{}'",
        env!("CARGO_BIN_EXE_tandem"),
        options.out_dir.display(),
        out.display()
    );
    let run = Command::new("bash")
        .args(["-c", &script])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        stdout.contains("parity"),
        "the summary, from memory: {stdout}"
    );
    assert!(
        stderr.contains("report.json: write failed") && stderr.contains("was not written"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("report.json")).unwrap(),
        b"{\"earlier\": true}\n"
    );
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

/// A target URL's password is sent (as Basic credentials where a request
/// has none) but never printed: not in the report files, the results, the
/// terminal or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_s_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _) = common::demo_run(dir.path(), 100).await;
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let with_password = |url: String| url.replace("http://", "http://ops:topsecret@");
    let run = dir.path().join("secret-run");
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "replay",
            options.capture.to_str().unwrap(),
            "--legacy",
            &with_password(legacy.url()),
            "--new",
            &with_password(new.url()),
            "--out",
            run.to_str().unwrap(),
            "--no-progress",
        ])
        .env("RUST_LOG", "tandem=debug")
        .output()
        .await
        .unwrap();
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(printed.contains("ops:***@127.0.0.1"), "{printed}");
    assert!(!printed.contains("topsecret"), "{printed}");
    let report = tandem::report::Report::load(&run.join("report.json")).unwrap();
    assert!(report.summary.total > 0);
    for file in ["report.json", "summary.md", "report.html", "results.jsonl"] {
        let written = std::fs::read_to_string(run.join(file)).unwrap();
        assert!(!written.contains("topsecret"), "{file} holds the password");
    }
    assert!(report.run.legacy.starts_with("http://ops:***@"));
    legacy.stop().await;
    new.stop().await;
}
