//! `tandem shadow` on loopback: clients get legacy's answers byte for byte
//! while each read is mirrored to the new stack and judged; writes are not
//! mirrored unless asked; mirrored requests carry the shadow header; a new
//! stack that is down or slow does not touch the clients.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem::demo::{self, Flavor};
use tandem::judge::JudgeOptions;
use tandem::record::{ProxyConfig, Sink};
use tandem::shadow::{shadow, Following, KillSwitch, ShadowConfig, ShadowSummary, Warmup};
use tandem::target::Target;
use tokio::net::TcpListener;

/// A new stack that notes what it was sent: method, path, shadow header.
async fn witness(delay: Duration) -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let addr = common::serve_loopback(move |req: hyper::Request<hyper::body::Incoming>, _peer| {
        let log = log.clone();
        async move {
            let header = req
                .headers()
                .get("x-tandem-shadow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            log.lock().unwrap().push((
                req.method().to_string(),
                req.uri().path().to_string(),
                header,
            ));
            tokio::time::sleep(delay).await;
            hyper::Response::new(http_body_util::Full::new(Bytes::from_static(b"{}")))
        }
    })
    .await;
    (format!("http://{addr}"), seen)
}

/// Shadows `legacy` to `new` while `clients` runs against the proxy.
async fn shadowing<F, Fut>(
    dir: &std::path::Path,
    legacy: &str,
    new: &str,
    mirror_writes: bool,
    kill_switch: Option<KillSwitch>,
    results_max_bytes: u64,
    clients: F,
) -> ShadowSummary
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    shadowing_with(
        dir,
        legacy,
        new,
        mirror_writes,
        kill_switch,
        results_max_bytes,
        (Following::Off, None),
        clients,
    )
    .await
}

/// [`shadowing`], following the new stack's ids and tokens by `follow`, and
/// mirroring to a second legacy instance if one is named.
#[allow(clippy::too_many_arguments)]
async fn shadowing_with<F, Fut>(
    dir: &std::path::Path,
    legacy: &str,
    new: &str,
    mirror_writes: bool,
    kill_switch: Option<KillSwitch>,
    results_max_bytes: u64,
    (follow, legacy2): (Following, Option<&str>),
    clients: F,
) -> ShadowSummary
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let legacy: Target = legacy.parse().unwrap();
    // Sessions by the flows' user header where they send one: a pooled
    // client may open a second connection mid-flow.
    let proxy = ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        session_header: Some("x-demo-user".into()),
        ..ProxyConfig::new(listener, legacy.clone())
    };
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let sink = Sink::create(
        &out.join("served.jsonl"),
        &proxy.source(),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(shadow(
        ShadowConfig {
            proxy,
            sink,
            new: new.parse().unwrap(),
            legacy2: legacy2.map(|l| l.parse().unwrap()),
            judge: JudgeOptions {
                rules: Some("scenarios/demo.rules.toml".into()),
                legacy2: legacy2.map(str::to_string),
                ..Default::default()
            },
            mirror_writes,
            header: ("x-tandem-shadow".into(), "1".into()),
            sample_percent: 100.0,
            queue: 1_000,
            max_in_flight: 64,
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            out_dir: out,
            kill_switch,
            report_every: Some(Duration::from_millis(200)),
            results_max_bytes,
            follow,
            gates: vec![tandem::gate::Gate::parse("p", "parity >= 0%", None).unwrap()],
        },
        async {
            let _ = stopped.await;
        },
    ));
    clients(proxy_url).await;
    stop.send(()).unwrap();
    run.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_legacy_and_the_report_names_new_s_differences() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let direct = legacy.url();
    let report = dir.path().join("run/report.json");
    let summary = shadowing(
        dir.path(),
        &legacy.url(),
        &new.url(),
        false,
        None,
        u64::MAX,
        |proxy| async move {
            let client = tandem::http::client(Duration::from_secs(5));
            for id in 1..=20 {
                let through = common::send(
                    &client,
                    &format!("{proxy}/api/products/{id}"),
                    "GET",
                    &[],
                    Bytes::new(),
                )
                .await;
                let straight = common::send(
                    &client,
                    &format!("{direct}/api/products/{id}"),
                    "GET",
                    &[],
                    Bytes::new(),
                )
                .await;
                assert_eq!(through.status, 200);
                assert_eq!(
                    through.body, straight.body,
                    "legacy's answer, byte for byte"
                );
                let server = through.headers.iter().find(|(n, _)| n == "server").unwrap();
                assert_eq!(server.1, "legacy-monolith/4.2.1");
            }
            // While it runs, the report of what was judged so far (written
            // every 200 ms): all 20 once new has answered and the judge has
            // them, however long a loaded machine takes.
            let deadline = Instant::now() + Duration::from_secs(10);
            let so_far = loop {
                let seen = tandem::report::Report::load(&report).ok();
                let total = seen.as_ref().map(|r| r.summary.total);
                if total == Some(20) {
                    break seen.unwrap();
                }
                assert!(
                    Instant::now() < deadline,
                    "judged so far: {total:?} after 10 s, not 20"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(so_far.gates.len(), 1, "gates held on every report");
            assert!(so_far.gates[0].passed);
            // A write is served, and not mirrored.
            let login = common::send(
                &client,
                &format!("{proxy}/api/login"),
                "POST",
                &[("content-type", "application/json")],
                Bytes::from_static(b"{\"user\":\"u1\"}"),
            )
            .await;
            assert_eq!(login.status, 200);
        },
    )
    .await;
    assert_eq!(summary.recorded.exchanges, 21);
    assert_eq!(summary.mirrored, 20);
    assert_eq!(summary.writes_skipped, 1);
    assert_eq!(summary.dropped, 0);
    let groups: Vec<String> = summary
        .report
        .mismatch_groups
        .iter()
        .map(|g| {
            format!(
                "{} {} {} {}",
                g.method,
                g.route,
                g.kind.as_str(),
                g.path.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(groups, ["GET /api/products/{id} missing_field $.currency"]);
    assert_eq!(summary.report.summary.mismatched, 20);
    // Every mismatch is kept for `tandem diff`.
    let results = common::read_results(&dir.path().join("run"));
    assert_eq!(results.len(), 20);
    legacy.stop().await;
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_are_marked_and_writes_need_asking() {
    let legacy = common::Echo::start().await;
    for mirror_writes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (new, seen) = witness(Duration::ZERO).await;
        let summary = shadowing(
            dir.path(),
            &legacy.url(),
            &new,
            mirror_writes,
            None,
            u64::MAX,
            |proxy| async move {
                let client = tandem::http::client(Duration::from_secs(5));
                for method in ["GET", "POST", "DELETE", "HEAD"] {
                    let seen = common::send(
                        &client,
                        &format!("{proxy}/item/1"),
                        method,
                        &[],
                        Bytes::new(),
                    )
                    .await;
                    assert_eq!(seen.status, 200);
                }
                // A body over --max-body (16 MiB): served whole, recorded
                // cut, so never mirrored (a copy would carry the cut body).
                let big = Bytes::from(vec![b'x'; (16 << 20) + 1]);
                let served =
                    common::send(&client, &format!("{proxy}/item/2"), "PUT", &[], big).await;
                assert_eq!((served.status, served.body.len()), (200, (16 << 20) + 1));
            },
        )
        .await;
        assert_eq!(summary.uncopyable, u64::from(mirror_writes));
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        let methods: Vec<&str> = seen.iter().map(|(m, _, _)| m.as_str()).collect();
        match mirror_writes {
            false => assert_eq!(methods, ["GET", "HEAD"]),
            true => assert_eq!(methods, ["DELETE", "GET", "HEAD", "POST"]),
        }
        assert!(seen.iter().all(|(_, _, h)| h == "1"), "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stack_down_slow_or_resetting_does_not_touch_the_clients() {
    let legacy = common::Echo::start().await;
    let down: SocketAddr = common::dead_port().await;
    let (slow, _) = witness(Duration::from_secs(5)).await;
    let resetting = common::resetting_server().await;
    for new in [
        format!("http://{down}"),
        slow,
        format!("http://{resetting}"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let summary = shadowing(
            dir.path(),
            &legacy.url(),
            &new,
            false,
            None,
            u64::MAX,
            |proxy| async move {
                let client = tandem::http::client(Duration::from_secs(5));
                let mut worst = Duration::ZERO;
                for i in 0..50 {
                    let sent = Instant::now();
                    let seen = common::send(
                        &client,
                        &format!("{proxy}/item/{i}"),
                        "GET",
                        &[],
                        Bytes::new(),
                    )
                    .await;
                    worst = worst.max(sent.elapsed());
                    assert_eq!(seen.status, 200);
                }
                assert!(
                    worst < Duration::from_millis(500),
                    "a client waited {worst:?}"
                );
            },
        )
        .await;
        assert_eq!(summary.recorded.exchanges, 50);
        // Down: every mirror failed, counted. Slow: still waiting at stop,
        // answered within the timeout or counted as errors.
        assert_eq!(summary.mirrored + summary.dropped, 50, "{new}");
        assert_eq!(
            summary.report.summary.errors
                + summary.report.summary.matched
                + summary.report.summary.mismatched,
            summary.mirrored
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }
}

/// The command, from its flags and from a scenario's `[shadow]`: SIGTERM
/// stops it, what was mirrored is judged and written, and gates (the
/// flag's, the scenario's `[gates]`) apply to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_stops_on_sigterm_and_writes_its_report() {
    for scenario in [false, true] {
        stops_on_sigterm(scenario).await;
    }
}

async fn stops_on_sigterm(scenario: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let port = common::dead_port().await.port();
    let out = dir.path().join("shadow");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    if scenario {
        let file = dir.path().join("shadow.toml");
        let body = format!(
            "rules = \"scenarios/demo.rules.toml\"\nout = {out:?}\n\
             [targets.legacy]\nurl = \"{}\"\n[targets.new]\nurl = \"{}\"\n\
             [shadow]\nlisten = \"127.0.0.1:{port}\"\n[gates]\nparity = \"parity >= 99%\"\n",
            legacy.url(),
            new.url()
        );
        std::fs::write(&file, body).unwrap();
        command.args(["run", file.to_str().unwrap()]);
    } else {
        command
            .args(["shadow", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--legacy", &legacy.url(), "--new", &new.url()])
            .args(["--rules", "scenarios/demo.rules.toml"])
            .args(["--gate", "parity >= 99%", "--out"])
            .arg(&out);
    }
    let child = command
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "shadow did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = tandem::http::client(Duration::from_secs(5));
    for id in [3, 5, 8] {
        let url = format!("http://127.0.0.1:{port}/api/products/{id}");
        assert_eq!(
            common::send(&client, &url, "GET", &[], Bytes::new())
                .await
                .status,
            200
        );
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the parity gate fails: {stdout}"
    );
    assert!(stdout.contains("served 3 exchanges"), "{stdout}");
    assert!(stdout.contains("mirrored 3, 0 dropped"), "{stdout}");
    let report = tandem::report::Report::load(&out.join("report.json")).unwrap();
    assert_eq!(report.summary.mismatched, 3);
    assert!(out.join("served.jsonl.gz").exists() && out.join("report.html").exists());
    legacy.stop().await;
    new.stop().await;
}

/// A new stack that fails trips the kill switch: mirroring pauses, probes
/// still go, and once the stack answers again mirroring resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_trips_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = common::Echo::start().await;
    let down = common::dead_port().await;
    let kill = KillSwitch {
        max_error_rate: 0.5,
        window: Duration::from_millis(200),
    };
    let summary = shadowing(
        dir.path(),
        &legacy.url(),
        &format!("http://{down}"),
        false,
        Some(kill),
        u64::MAX,
        |proxy| async move {
            let client = tandem::http::client(Duration::from_secs(5));
            let mut revived = None;
            for i in 0..200 {
                if i == 80 {
                    // The new stack comes back on its address.
                    revived = Some(common::Echo::start_on(down).await);
                }
                let seen = common::send(
                    &client,
                    &format!("{proxy}/item/{i}"),
                    "GET",
                    &[],
                    Bytes::new(),
                )
                .await;
                assert_eq!(seen.status, 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(revived);
        },
    )
    .await;
    assert_eq!(summary.trips.0, 1, "opened once: {summary:?}");
    assert_eq!(summary.trips.1, 1, "closed once: {summary:?}");
    assert!(summary.killed > 20, "{summary:?}");
    assert_eq!(summary.mirrored + summary.killed + summary.dropped, 200);
}

/// A long session sets its results file aside by size and begins a new one,
/// keeping the last few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_rotated_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = common::Echo::start().await;
    let (new, _) = witness(Duration::ZERO).await;
    let summary = shadowing(
        dir.path(),
        &legacy.url(),
        &new,
        false,
        None,
        60_000,
        |proxy| async move {
            let client = tandem::http::client(Duration::from_secs(5));
            for i in 0..600 {
                let url = format!("{proxy}/item/{i}");
                assert_eq!(
                    common::send(&client, &url, "GET", &[], Bytes::new())
                        .await
                        .status,
                    200
                );
            }
        },
    )
    .await;
    assert_eq!(summary.report.summary.mismatched, 600);
    let run = dir.path().join("run");
    let lines = |name: &str| {
        std::fs::read_to_string(run.join(name))
            .map(|t| t.lines().count() - 1)
            .unwrap_or(0)
    };
    // Past 60 kB a file is set aside (600 results take about 230 kB);
    // together they hold every result.
    let aside: Vec<usize> = (1..=8)
        .map(|n| lines(&format!("results.{n}.jsonl")))
        .take_while(|&n| n > 0)
        .collect();
    assert!(aside.len() >= 2, "{aside:?}");
    assert_eq!(aside.iter().sum::<usize>() + lines("results.jsonl"), 600);
    for n in 1..=aside.len() {
        let size = std::fs::metadata(run.join(format!("results.{n}.jsonl")))
            .unwrap()
            .len();
        assert!(size >= 60_000, "results.{n}.jsonl: {size}");
        // Each file reads alone: none repeats a body or header of another.
        let path = run.join(format!("results.{n}.jsonl"));
        let mut reader = tandem::results::ResultsReader::open(&path).unwrap();
        let read: Vec<tandem::results::ExchangeResult> =
            std::iter::from_fn(|| reader.next_result())
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(read.len(), aside[n - 1]);
    }
}

/// With links learned from an earlier capture, the mirror follows the new
/// stack's own token and order ids: a read of the order the client created
/// reaches new's copy of it. Without them, new refuses legacy's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_stack_s_own_ids_and_tokens_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let learn_from = dir.path().join("earlier.jsonl");
    tandem::demo::record(&tandem::demo::DemoOptions {
        requests: 400,
        capture: learn_from.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let links = tandem::correlate::learn(&learn_from, &Default::default()).unwrap();
    let links = std::sync::Arc::new(links);
    for follow in [Following::Links(links), Following::Off] {
        let (legacy, new) = (
            demo::start(Flavor::Legacy).await.unwrap(),
            demo::start(Flavor::New).await.unwrap(),
        );
        let following = matches!(follow, Following::Links(_));
        let run = dir.path().join(if following { "followed" } else { "not" });
        std::fs::create_dir_all(&run).unwrap();
        let summary = shadowing_with(
            &run,
            &legacy.url(),
            &new.url(),
            true,
            None,
            u64::MAX,
            (follow, None),
            |proxy| async move { order_flow(&proxy).await },
        )
        .await;
        let groups: Vec<String> = summary
            .report
            .mismatch_groups
            .iter()
            .map(|g| {
                format!(
                    "{} {} {}",
                    g.route,
                    g.kind.as_str(),
                    g.path.as_deref().unwrap_or("")
                )
            })
            .collect();
        match following {
            true => {
                // New's own token and order: the read reached new's copy,
                // and the ids, standing for legacy's, are equal for the diff.
                assert!(groups.is_empty(), "{groups:?}");
                assert_eq!(summary.report.summary.matched, 3);
                assert!(summary.report.fidelity.is_none());
            }
            false => {
                let results = common::read_results(&run.join("run"));
                let read = results
                    .iter()
                    .find(|r| {
                        r.request.method == "GET" && r.request.target.starts_with("/api/orders/")
                    })
                    .expect("the read differs from legacy's, so it is kept");
                let status = read.new.response.as_ref().unwrap().status;
                assert_eq!(status, 401, "legacy's token means nothing to new");
            }
        }
        legacy.stop().await;
        new.stop().await;
    }
}

/// One client's order flow through the proxy, on a connection of its own
/// (the proxy's session key): log in, create an order, read it back.
async fn order_flow(proxy: &str) {
    static USERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let who = format!(
        "u{}",
        USERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let client = tandem::http::client(Duration::from_secs(5));
    let json = [
        ("content-type", "application/json"),
        ("x-demo-user", who.as_str()),
    ];
    let login = common::send(
        &client,
        &format!("{proxy}/api/login"),
        "POST",
        &json,
        Bytes::from_static(b"{\"user\":\"u1\"}"),
    )
    .await;
    let token: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    order_and_read(proxy, &client, &bearer, &who).await;
}

/// Creates an order with `bearer` as user `who` and reads it back.
async fn order_and_read(proxy: &str, client: &tandem::http::Client, bearer: &str, who: &str) {
    let auth = [
        ("content-type", "application/json"),
        ("authorization", bearer),
        ("x-demo-user", who),
    ];
    let order = br#"{"customer":"guest7","items":[{"product_id":3,"qty":2}]}"#;
    let created = common::send(
        client,
        &format!("{proxy}/api/orders"),
        "POST",
        &auth,
        Bytes::from_static(order),
    )
    .await;
    assert_eq!(created.status, 201);
    let id: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let read = common::send(
        client,
        &format!("{proxy}/api/orders/{}", id["id"]),
        "GET",
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        read.status, 200,
        "the client reads legacy's order either way"
    );
}

/// With `--follow`, links are learned from the warm-up's served traffic;
/// sessions that begin after it are mirrored with new's and legacy-2's own
/// tokens and order ids (each instance issues its own), and a session that
/// began in the warm-up is not mirrored at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_learned_from_the_live_traffic_are_followed_on_new_and_legacy_2() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, legacy2, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    // One straddling login, then four whole flows: 13 exchanges.
    let warmup = Warmup {
        exchanges: 13,
        longest: Duration::from_secs(60),
        written: Default::default(),
    };
    let summary = shadowing_with(
        dir.path(),
        &legacy.url(),
        &new.url(),
        true,
        None,
        u64::MAX,
        (Following::Learn(warmup), Some(&legacy2.url())),
        |proxy| async move {
            let straddler = tandem::http::client(Duration::from_secs(5));
            let login = common::send(
                &straddler,
                &format!("{proxy}/api/login"),
                "POST",
                &[
                    ("content-type", "application/json"),
                    ("x-demo-user", "straddler"),
                ],
                Bytes::from_static(b"{\"user\":\"u9\"}"),
            )
            .await;
            let token: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
            for _ in 0..4 {
                order_flow(&proxy).await;
            }
            // Links are learned off the async threads; mirroring begins then.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..3 {
                order_flow(&proxy).await;
            }
            let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
            order_and_read(&proxy, &straddler, &bearer, "straddler").await;
        },
    )
    .await;
    assert_eq!(summary.warmup, 15, "13 kept, then the straddler's 2");
    assert_eq!(summary.mirrored, 9, "three flows after the warm-up");
    let report = &summary.report;
    let links = &report.correlation.as_ref().expect("links followed").links;
    assert!(
        links
            .iter()
            .any(|l| l.to == tandem::correlate::places::Place::Bearer),
        "the token's link: {links:?}"
    );
    assert!(
        report.mismatch_groups.is_empty(),
        "{:?}",
        report.mismatch_groups
    );
    assert_eq!(report.summary.matched, 9);
    let noise = report.learned_noise.as_ref().expect("legacy-2 mirrored");
    let evidence = noise.evidence.as_ref().expect("counts kept");
    let compared: u64 = evidence.compared.iter().map(|c| c.count).sum();
    assert_eq!(compared, 9);
    assert!(
        evidence.legacy_differences.is_empty(),
        "legacy-2 got its own token and order ids: {:?}",
        evidence.legacy_differences
    );
    legacy.stop().await;
    legacy2.stop().await;
    new.stop().await;
}
