//! Formats people have: a HAR written by a real producer (mitmproxy's
//! `hardump`) and `.gor` files built by their documented layout import into
//! captures that replay and diff like the same traffic recorded by tandem's
//! proxy; `tandem export` writes both back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tandem::capture::{CaptureReader, Exchange};
use tandem::cli::replay::ReplayJob;
use tandem::demo::{self, Flavor};
use tandem::record::{record_proxy, ProxyConfig, Sink};
use tandem::replay::ReplayPlan;

fn tandem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .unwrap()
}

fn exchanges(path: &Path) -> Vec<Exchange> {
    CaptureReader::open(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// mitmdump, as `.ci/setup` installs it (a venv beside the checkout's CI
/// files), or on the PATH.
fn mitmdump() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/.venv/bin/mitmdump");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v mitmdump"])
        .output()
        .unwrap();
    assert!(found.status.success(), "mitmdump is missing: run .ci/setup");
    PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}

/// The same order flows, each on a connection of its own: log in, create,
/// read back, pay, list products.
async fn flows(base: &str) {
    for user in 0..4 {
        let client = tandem::http::client(Duration::from_secs(5));
        // Sessions by user: a pooled client may open a second connection
        // mid-flow, and a session by connection would split there.
        let who = format!("u{user}");
        let json = [
            ("content-type", "application/json"),
            ("x-demo-user", who.as_str()),
        ];
        let login = common::send(
            &client,
            &format!("{base}/api/login"),
            "POST",
            &json,
            Bytes::from(format!("{{\"user\":\"u{user}\"}}")),
        )
        .await;
        let token: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
        let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
        let auth = [
            ("content-type", "application/json"),
            ("authorization", bearer.as_str()),
            ("x-demo-user", who.as_str()),
        ];
        let order = format!(r#"{{"customer":"guest{user}","items":[{{"product_id":3,"qty":2}}]}}"#);
        let created = common::send(
            &client,
            &format!("{base}/api/orders"),
            "POST",
            &auth,
            Bytes::from(order),
        )
        .await;
        assert_eq!(created.status, 201);
        let id: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
        let id = &id["id"];
        for (method, path) in [
            ("GET", format!("/api/orders/{id}")),
            ("POST", format!("/api/orders/{id}/pay")),
            ("GET", "/api/products?page=1".to_string()),
        ] {
            let body = if method == "POST" {
                Bytes::from_static(b"{}")
            } else {
                Bytes::new()
            };
            common::send(&client, &format!("{base}{path}"), method, &auth, body).await;
        }
    }
}

/// The flows recorded by tandem's proxy in front of a fresh legacy stack.
async fn recorded_by_tandem(out: &Path) {
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let config = ProxyConfig {
        session_header: Some("x-demo-user".into()),
        ..ProxyConfig::new(listener, legacy.url().parse().unwrap())
    };
    let sink = Sink::create(
        out,
        &config.source(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recording = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    flows(&proxy).await;
    stop.send(()).unwrap();
    recording.await.unwrap().unwrap();
    legacy.stop().await;
}

/// The flows through mitmproxy's reverse proxy in front of a fresh legacy
/// stack, saved by its `hardump` option.
async fn recorded_by_mitmproxy(har: &Path) {
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let [port] = common::free_ports::<1>();
    let mut mitm = Command::new(mitmdump())
        .args(["--mode", &format!("reverse:{}", legacy.url())])
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--set", &format!("hardump={}", har.display()), "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "mitmdump did not listen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flows(&format!("http://127.0.0.1:{port}")).await;
    // SIGINT: mitmdump writes the HAR as it ends.
    unsafe { libc::kill(mitm.id() as i32, libc::SIGINT) };
    let ended = std::time::Instant::now();
    while mitm.try_wait().unwrap().is_none() {
        if ended.elapsed() > Duration::from_secs(20) {
            let _ = mitm.kill();
            panic!("mitmdump did not end");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    legacy.stop().await;
}

/// The demo's job on `capture` against fresh stacks.
async fn replayed(capture: &Path, out: PathBuf) -> tandem::report::Report {
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let job = ReplayJob {
        rules: Some("scenarios/demo.rules.toml".into()),
        ..ReplayJob::new(
            ReplayPlan {
                timeout: Duration::from_secs(5),
                // The recorded stack is stopped: a fresh one may be given
                // its port back.
                allow_recorded_host: true,
                ..ReplayPlan::new(
                    capture.to_path_buf(),
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

/// What must be alike in two captures of the same flows: each request
/// (method, target, body) and each answer's status, in order.
fn shape(xs: &[Exchange]) -> Vec<(String, String, Vec<u8>, u16)> {
    let mut out: Vec<_> = xs
        .iter()
        .map(|x| {
            (
                x.request.method.clone(),
                x.request.target.clone(),
                x.request.body.bytes().to_vec(),
                x.response.as_ref().map_or(0, |r| r.status),
            )
        })
        .collect();
    // Tokens differ between the two legacy instances: compare bodies that
    // carry none, and the rest by what they are.
    out.sort();
    out
}

fn findings(r: &tandem::report::Report) -> (u64, u64, u64, Vec<String>, usize) {
    let mut groups: Vec<String> = r
        .mismatch_groups
        .iter()
        .map(|g| format!("{} {} {:?} {}", g.route, g.kind.as_str(), g.path, g.count))
        .collect();
    groups.sort();
    (
        r.summary.total,
        r.summary.matched,
        r.summary.mismatched,
        groups,
        r.correlation.as_ref().map_or(0, |c| c.links.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_from_mitmproxy_replays_and_diffs_like_tandem_s_own_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, har, imported) = (
        dir.path().join("tandem.jsonl"),
        dir.path().join("mitm.har"),
        dir.path().join("from-har.jsonl"),
    );
    recorded_by_tandem(&ours).await;
    recorded_by_mitmproxy(&har).await;
    let out = tandem(&[
        "import",
        har.to_str().unwrap(),
        "--out",
        imported.to_str().unwrap(),
        "--session-header",
        "x-demo-user",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (exchanges(&ours), exchanges(&imported));
    assert_eq!(a.len(), 20);
    assert_eq!(shape(&a), shape(&b));
    assert!(
        b.iter().all(|x| x.incomplete.is_none()),
        "mitmproxy saves bodies"
    );
    let (ra, rb) = (
        replayed(&ours, dir.path().join("run-ours")).await,
        replayed(&imported, dir.path().join("run-har")).await,
    );
    assert_eq!(findings(&ra), findings(&rb));
    assert!(
        findings(&ra).4 > 0,
        "the flows are linked by tokens and ids"
    );
}

/// `.gor` records written by hand after GoReplay's documented layout, out
/// of timestamp order and with a replayed answer among them.
fn handmade_gor(xs: &[Exchange], started_ns: u64) -> Vec<u8> {
    let raw_request = |x: &Exchange| {
        let mut out = format!("{} {} HTTP/1.1\r\n", x.request.method, x.request.target);
        for h in &x.request.headers {
            out.push_str(&format!("{}: {}\r\n", h.0, h.1));
        }
        let mut bytes = (out + "\r\n").into_bytes();
        bytes.extend_from_slice(x.request.body.bytes());
        bytes
    };
    let raw_answer = |status: u16, headers: &[tandem::capture::Header], body: &[u8]| {
        let mut out = format!("HTTP/1.1 {status} OK\r\n");
        for h in headers {
            out.push_str(&format!("{}: {}\r\n", h.0, h.1));
        }
        let mut bytes = (out + "\r\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    for x in xs {
        let id = format!("{:040x}", 0xabc000 + x.id);
        let at = started_ns + x.offset_us * 1000;
        let mut request = format!("1 {id} {at} 0\n").into_bytes();
        request.extend(raw_request(x));
        records.push((at, request));
        let r = x.response.as_ref().unwrap();
        let mut answer = format!("2 {id} {} {}\n", at + 1, r.latency_us * 1000).into_bytes();
        answer.extend(raw_answer(r.status, &r.headers, r.body.bytes()));
        records.push((at + 1, answer));
        if x.id == 3 {
            let mut replayed = format!("3 {id} {} 1000\n", at + 2).into_bytes();
            replayed.extend(raw_answer(500, &[], b""));
            records.push((at + 2, replayed));
        }
    }
    // GoReplay writes as connections finish, not in timestamp order.
    records.reverse();
    records.swap(0, 5);
    let mut out = Vec::new();
    for (_, record) in records {
        out.extend(record);
        out.extend_from_slice("\n\u{1F435}\u{1F648}\u{1F649}\n".as_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gor_files_import_in_order_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("tandem.jsonl");
    recorded_by_tandem(&ours).await;
    let original = exchanges(&ours);
    let started_ns = CaptureReader::open(&ours)
        .unwrap()
        .header()
        .started_at_unix_us
        * 1000;
    let gor = dir.path().join("handmade.gor");
    std::fs::write(&gor, handmade_gor(&original, started_ns)).unwrap();
    let imported = dir.path().join("from-gor.jsonl");
    let out = tandem(&[
        "import",
        gor.to_str().unwrap(),
        "--out",
        imported.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 replayed answers"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let back = exchanges(&imported);
    // Offsets count from the first request of the file.
    let in_order = |xs: &[Exchange]| -> Vec<(String, String, u16, u64)> {
        xs.iter()
            .map(|x| {
                (
                    x.request.method.clone(),
                    x.request.target.clone(),
                    x.response.as_ref().map_or(0, |r| r.status),
                    x.offset_us - xs[0].offset_us,
                )
            })
            .collect()
    };
    assert_eq!(in_order(&back), in_order(&original), "sorted by timestamp");
    assert!(back
        .iter()
        .zip(&original)
        .all(|(a, b)| a.request.body == b.request.body
            && a.response.as_ref().unwrap().body == b.response.as_ref().unwrap().body));

    // Export and import again: .gor and HAR.
    for name in ["again.gor", "again.har"] {
        let file = dir.path().join(name);
        let out = tandem(&[
            "export",
            ours.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let capture = dir.path().join(format!("{name}.jsonl"));
        let out = tandem(&[
            "import",
            file.to_str().unwrap(),
            "--out",
            capture.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(shape(&exchanges(&capture)), shape(&original), "{name}");
    }

    // Exchanges of a run (e.g. a mismatch group's examples) as HAR: both
    // stacks' answers to each.
    let report = replayed(&ours, dir.path().join("run")).await;
    assert_eq!(report.summary.total, 20);
    let example = 3;
    let har = dir.path().join("example.har");
    let run = dir.path().join("run");
    let out = tandem(&[
        "export",
        run.to_str().unwrap(),
        "--out",
        har.to_str().unwrap(),
        "--id",
        &example.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let entries = doc["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1]["comment"],
        format!("exchange {example} answered by new")
    );
}
