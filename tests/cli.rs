//! The `tandem` binary: exit codes, error messages, signals.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use tandem::capture::CaptureReader;
use tandem::demo::{self, Flavor};
use tokio::process::Command;

async fn tandem(args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("RUST_LOG", "tandem=info")
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

/// A small capture recorded by the demo.
async fn capture(dir: &Path) -> std::path::PathBuf {
    let options = demo::DemoOptions {
        requests: 200,
        capture: dir.join("small.jsonl"),
        out_dir: dir.join("demo-run"),
        ..Default::default()
    };
    tandem::cli::demo::run(&options).await.unwrap();
    options.capture
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let out = tandem(&[
        "replay",
        "x.jsonl",
        "--legacy",
        "ftp://x",
        "--new",
        "http://127.0.0.1:1",
        "--out",
        "o",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("scheme \"ftp\" is not supported"),
        "{}",
        text(&out.stderr)
    );
    let out = tandem(&["frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let new = demo::start(Flavor::New).await.unwrap();
    let (l, n) = (legacy.url(), new.url());
    let cap = capture.to_str().unwrap();
    let run = |max: &'static str, out: &'static str| {
        let out = dir.path().join(out);
        let (l, n) = (l.clone(), n.clone());
        let cap = cap.to_string();
        async move {
            tandem(&[
                "replay",
                &cap,
                "--legacy",
                &l,
                "--new",
                &n,
                "--speed",
                "4",
                "--rules",
                "scenarios/demo.rules.toml",
                "--out",
                out.to_str().unwrap(),
                "--max-mismatch-rate",
                max,
            ])
            .await
        }
    };
    let failed = run("0", "strict").await;
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let stdout = text(&failed.stdout);
    assert!(
        stdout.contains("gate FAILED: max-mismatch-rate: mismatch_rate <= 0% ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict FAILED: 1 of 1 gates failed"),
        "{stdout}"
    );
    assert!(stdout.contains("missing_field $.currency"), "{stdout}");
    assert!(dir.path().join("strict/report.json").exists());
    let passed = run("0.9", "lenient").await;
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed.stderr));
    assert!(text(&passed.stdout).contains("verdict PASSED"));
    legacy.stop().await;
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_capture_line_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let mut lines: Vec<String> = std::fs::read_to_string(&capture)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines[7].truncate(40);
    // Line 12: one byte that is not UTF-8, inside a JSON string.
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    let line_12: usize = lines[..11].iter().map(|l| l.len() + 1).sum();
    let quote = line_12 + lines[11].find("\"method\"").unwrap() + 1;
    bytes[quote] = 0xff;
    std::fs::write(&capture, bytes).unwrap();
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let out_dir = dir.path().join("run");
    let out = tandem(&[
        "replay",
        capture.to_str().unwrap(),
        "--legacy",
        &legacy.url(),
        "--new",
        &legacy.url(),
        "--speed",
        "4",
        "--out",
        out_dir.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: line 8:", capture.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: line 12: not UTF-8", capture.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 input lines could not be read and were skipped"),
        "{stderr}"
    );
    // The rest was replayed, and the skipped lines are in the report.
    let report = tandem::report::Report::load(&out_dir.join("report.json")).unwrap();
    assert_eq!(report.summary.total, 198);
    let unreadable = report.unreadable.expect("skipped lines reported");
    assert_eq!(unreadable.lines, 2);
    assert!(unreadable.examples[1].contains("line 12"), "{unreadable:?}");
    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(
        summary.contains("2 input lines could not be read and were skipped"),
        "{summary}"
    );

    // `tandem diff` skips a bad results line the same way, and goes on.
    let results = out_dir.join("results.jsonl");
    let mut bytes = std::fs::read(&results).unwrap();
    let third = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0;
    bytes[third + 3] = 0xfe;
    std::fs::write(&results, bytes).unwrap();
    let rejudged = dir.path().join("rejudged");
    let out = tandem(&[
        "diff",
        out_dir.to_str().unwrap(),
        "--out",
        rejudged.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{}: line 4: not UTF-8", results.display())),
        "{}",
        text(&out.stderr)
    );
    let report = tandem::report::Report::load(&rejudged.join("report.json")).unwrap();
    assert_eq!(report.summary.total, 197);
    assert_eq!(report.unreadable.unwrap().lines, 1);
    legacy.stop().await;
}

#[tokio::test]
async fn an_empty_capture_fails_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    let header = tandem::capture::CaptureHeader::new("test");
    tandem::capture::CaptureWriter::create(&path, &header)
        .unwrap()
        .finish()
        .unwrap();
    let dead = format!("http://{}", common::dead_port().await);
    let out_dir = dir.path().join("run");
    let out = tandem(&[
        "replay",
        path.to_str().unwrap(),
        "--legacy",
        &dead,
        "--new",
        &dead,
        "--out",
        out_dir.to_str().unwrap(),
        "--max-mismatch-rate",
        "0.5",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing replayed proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_flushes_everything_on_sigint_and_sigterm() {
    for signal in ["-INT", "-TERM"] {
        let upstream = common::Echo::start().await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rec.jsonl.gz");
        let port = common::dead_port().await.port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["record", "--listen", &listen, "--upstream", &upstream.url()])
            .args(["--out", out.to_str().unwrap()])
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_port(&listen).await;
        let client = tandem::http::client(Duration::from_secs(5));
        for i in 0..50 {
            let url = format!("http://{listen}/item/{i}");
            let seen =
                common::send(&client, &url, "POST", &[], Bytes::from(format!("body {i}"))).await;
            assert_eq!(seen.status, 200);
        }
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("record stops after the signal")
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{signal}");
        assert!(
            text(&output.stdout).contains("recorded 50 exchanges"),
            "{}",
            text(&output.stdout)
        );
        // A complete gzip stream holding every exchange.
        let exchanges: Vec<_> = CaptureReader::open(&out)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(exchanges.len(), 50, "{signal}");
        assert_eq!(exchanges[49].request.body.bytes().as_ref(), b"body 49");
    }
}

/// A replay stopped by SIGINT or SIGTERM exits 3, even with a gate that
/// what it sent would pass, and its report says it was interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_exits_3_and_never_passes() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    for signal in ["-INT", "-TERM"] {
        let out_dir = dir.path().join(format!("run{signal}"));
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["replay", capture.to_str().unwrap()])
            .args(["--legacy", &legacy.url(), "--new", &legacy.url()])
            // 200 exchanges/s for up to 60 s: stopped once 50 are in.
            .args(["--rate", "200", "--duration", "60s", "--no-correlate"])
            .args(["--gate", "mismatch_rate <= 100%"])
            .args(["--out", out_dir.to_str().unwrap()])
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        common::wait_for_results(&out_dir, 50, Duration::from_secs(20)).await;
        let pid = child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("replay stops after the signal")
            .unwrap();
        // What was sent before the stop: the 50 flushed and whatever went
        // out since (the first flush comes a second in, about 200).
        common::assert_interrupted(output.status, &out_dir, 50..2_000);
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("gate passed: mismatch_rate <= 100%"),
            "{stdout}"
        );
        assert!(
            stdout.contains("verdict FAILED: the run was interrupted"),
            "{stdout}"
        );
        let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
        assert!(summary.contains("**Verdict FAILED: the run was interrupted"));
    }
    legacy.stop().await;
}

async fn wait_for_port(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr} after 5 s");
}

#[tokio::test]
async fn import_names_the_packet_where_a_file_is_cut_and_keeps_the_rest() {
    let corpus =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/zeek-http/traces");
    let whole = std::fs::read(corpus.join("pipelined-requests.pcap"))
        .expect("the Zeek corpus beside the repository");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &whole[..whole.len() - 700]).unwrap();
    let out = dir.path().join("cut.jsonl");
    let run = tandem(&[
        "import",
        cut.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stdout));
    let stderr = text(&run.stderr);
    // pcap: a 24-byte file header, then a 16-byte header and the data of each packet.
    let mut end = 24;
    let mut cut_packet = 0;
    let mut packets = pcap::Capture::from_file(corpus.join("pipelined-requests.pcap")).unwrap();
    while let Ok(p) = packets.next_packet() {
        cut_packet += 1;
        end += 16 + p.header.caplen as usize;
        if end > whole.len() - 700 {
            break;
        }
    }
    assert!(
        stderr.contains(&format!("cut.pcap: packet {cut_packet}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(
        stderr.contains("everything before it was written"),
        "{stderr}"
    );
    let kept = CaptureReader::open(&out).unwrap().count();
    assert!(kept >= 4, "{kept} exchanges kept");

    // Selection: only the PNG requests.
    let whole_file = dir.path().join("whole.pcap");
    std::fs::write(&whole_file, &whole).unwrap();
    let run = tandem(&[
        "import",
        whole_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--methods",
        "get",
        "--path-regex",
        r"\.png$",
    ])
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("wrote 3 exchanges (2 left out"),
        "{}",
        text(&run.stdout)
    );
    let targets: Vec<String> = CaptureReader::open(&out)
        .unwrap()
        .map(|e| e.unwrap().request.target)
        .collect();
    assert!(targets.iter().all(|t| t.ends_with(".png")), "{targets:?}");

    let missing = tandem(&[
        "import",
        "/nonexistent.pcap",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("/nonexistent.pcap: not a readable pcap"),
        "{}",
        text(&missing.stderr)
    );
}

/// Certificate files are read before anything starts; a bad one is named,
/// and nothing is recorded or sent.
#[tokio::test]
async fn bad_certificate_files_are_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let not_pem = not_pem.display().to_string();
    let out_capture = dir.path().join("rec.jsonl");
    let runs: [Vec<&str>; 3] = [
        vec![
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://127.0.0.1:1",
            "--out",
            out_capture.to_str().unwrap(),
            "--ca-cert",
            &not_pem,
        ],
        vec![
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--out",
            out_capture.to_str().unwrap(),
            "--tls-cert",
            &not_pem,
            "--tls-key",
            &not_pem,
        ],
        vec![
            "replay",
            "captures/sample.jsonl",
            "--legacy",
            "https://127.0.0.1:1",
            "--new",
            "https://127.0.0.1:2",
            "--out",
            "o",
            "--client-cert",
            &not_pem,
            "--client-key",
            &not_pem,
        ],
    ];
    for args in runs {
        let out = tandem(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("not-a-cert.pem"), "{stderr}");
        assert!(!out_capture.exists(), "{args:?}: a capture was started");
    }
}

/// A live capture that cannot start (an interface that does not exist)
/// says why and leaves an earlier capture at --out as it was.
#[tokio::test]
async fn a_live_capture_that_cannot_start_keeps_the_capture_at_its_out() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = dir.path().join("earlier.jsonl");
    std::fs::copy("captures/sample.jsonl", &earlier).unwrap();
    let before = std::fs::read(&earlier).unwrap();
    let out = tandem(&[
        "record",
        "--interface",
        "nosuch0",
        "--port",
        "8080",
        "--out",
        earlier.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\"nosuch0\" not found"), "{stderr}");
    assert_eq!(std::fs::read(&earlier).unwrap(), before);
}

/// The demo's recorded stack is stopped once recorded, and the fresh stacks
/// a replay starts may be given its port: its capture must not name it as
/// a live upstream, or the guard below refuses the demo's own replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_captures_name_their_upstream_as_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let capture = capture(dir.path()).await;
    let reader = CaptureReader::open(&capture).unwrap();
    let source = &reader.header().source;
    assert!(!source.starts_with("proxy upstream="), "{source}");
    assert!(source.contains("stopped after recording"), "{source}");
}

/// Writes are not replayed at the upstream a capture was recorded from
/// unless asked: the run is refused before anything is sent, naming the
/// flag; reads alone, or the flag, go ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_replayed_at_the_recorded_upstream_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let production = common::Echo::start().await;
    let source = format!("proxy upstream={}", production.url());
    let write = |name: &str, methods: &[&str]| {
        let path = dir.path().join(name);
        let mut writer = tandem::capture::CaptureWriter::create(
            &path,
            &tandem::capture::CaptureHeader::new(&source),
        )
        .unwrap();
        for (i, method) in methods.iter().enumerate() {
            let i = i as u64 + 1;
            writer
                .write(&common::exchange(
                    i,
                    i * 1_000,
                    "s",
                    method,
                    "/api/orders",
                    &[],
                ))
                .unwrap();
        }
        writer.finish().unwrap();
        path.display().to_string()
    };
    let writes = write("writes.jsonl", &["GET", "POST"]);
    let reads = write("reads.jsonl", &["GET", "HEAD"]);
    let staging = common::Echo::start().await;
    let run = |capture: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "replay".to_string(),
            capture.to_string(),
            "--legacy".into(),
            production.url(),
            "--new".into(),
            staging.url(),
            "--out".into(),
            dir.path().join(out).display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let args = run(&writes, "refused", &[]);
    let out = tandem(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--allow-recorded-host") && stderr.contains("POST /api/orders"),
        "{stderr}"
    );
    assert!(!dir.path().join("refused").exists(), "nothing was written");

    for (capture, out, extra) in [
        (&reads, "reads", vec![]),
        (&writes, "allowed", vec!["--allow-recorded-host"]),
    ] {
        let args = run(capture, out, &extra);
        let out = tandem(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}
