//! Stateful replay on loopback stacks: tokens and ids each stack issues
//! itself are followed per stack; a replay that does not follow them is
//! caught by fidelity; a producer that fails leaves its dependents
//! unresolved, counted, without hanging; correlate rules are checked.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tandem::capture::{Body, Exchange, Header, Response as Recorded};
use tandem::cli::replay::{job_from_args, run, ReplayJob};
use tandem::demo::{self, DemoOptions, Flavor};
use tandem::diff::MismatchKind;
use tokio::net::TcpListener;

/// The demo's capture, recorded through the proxy.
async fn demo_capture(dir: &Path, requests: usize) -> std::path::PathBuf {
    let options = DemoOptions {
        requests,
        capture: dir.join("demo.jsonl.gz"),
        out_dir: dir.join("demo-run"),
        ..DemoOptions::default()
    };
    tandem::cli::demo::run(&options).await.unwrap();
    options.capture
}

fn job(capture: &Path, legacy: &str, new: &str, out: &Path, flags: &[&str]) -> ReplayJob {
    let mut args = vec![
        capture.display().to_string(),
        "--legacy".into(),
        legacy.into(),
        "--new".into(),
        new.into(),
        "--out".into(),
        out.display().to_string(),
        "--speed".into(),
        "4".into(),
        "--rules".into(),
        "scenarios/demo.rules.toml".into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    job_from_args(args).unwrap()
}

/// A legacy stack whose auto-increment has moved on since the recording
/// (staging is never production): every order it creates gets another id
/// than recorded, and the new stack's are snowflakes.
async fn moved_on_legacy() -> demo::DemoServer {
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    let client = tandem::http::client(Duration::from_secs(5));
    let send = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", legacy.url()))
            .header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    };
    let login = client
        .request(send("POST", "/api/login", None, r#"{"user":"staging"}"#))
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(login.into_body())
        .await
        .unwrap();
    let token: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let order = r#"{"customer":"staging","items":[{"product_id":1,"qty":1}]}"#;
    let created = client
        .request(send("POST", "/api/orders", Some(&token), order))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    legacy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_tokens_are_followed_per_stack_and_an_unfollowed_replay_fails_its_gate() {
    let dir = tempfile::tempdir().unwrap();
    let capture = demo_capture(dir.path(), 1200).await;

    // Followed: exactly the planted bugs, the replay faithful.
    let (legacy, new) = (
        moved_on_legacy().await,
        demo::start(Flavor::New).await.unwrap(),
    );
    let out = dir.path().join("followed");
    let followed = run(
        &job(
            &capture,
            &legacy.url(),
            &new.url(),
            &out,
            &["--min-fidelity", "0.98"],
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    legacy.stop().await;
    new.stop().await;
    let report = &followed.report;
    let groups: std::collections::BTreeSet<(String, MismatchKind, Option<String>)> = report
        .mismatch_groups
        .iter()
        .map(|g| (format!("{} {}", g.method, g.route), g.kind, g.path.clone()))
        .collect();
    let bug =
        |route: &str, kind, path: Option<&str>| (route.to_string(), kind, path.map(str::to_string));
    let planted = [
        bug(
            "GET /api/products/{id}",
            MismatchKind::MissingField,
            Some("$.currency"),
        ),
        bug("GET /api/orders/{id}", MismatchKind::Value, Some("$.total")),
        bug("POST /api/orders", MismatchKind::Status, None),
        bug(
            "GET /api/orders/{id}",
            MismatchKind::Value,
            Some("$.status"),
        ),
    ];
    assert_eq!(
        groups,
        planted.into_iter().collect(),
        "{:#?}",
        report.mismatch_groups
    );
    assert!(followed.passed(), "{:?}", report.gates);
    assert_eq!(report.correlation.as_ref().unwrap().unresolved, 0);
    // Legacy's ids really moved: its created orders differ from the recording.
    let results = common::read_results(&out);
    let moved = results.iter().filter(|r| {
        r.request.method == "POST" && r.request.target == "/api/orders" && {
            let recorded: Recorded =
                serde_json::from_str(r.recorded.as_ref().unwrap().get()).unwrap();
            let replayed = r.legacy.response.as_ref().unwrap();
            recorded.status == 201 && recorded.body != replayed.body
        }
    });
    assert!(moved.count() > 0, "legacy issued other ids than recorded");
    // And new's are snowflakes, kept exact above 2^53, and read back by the
    // requests that followed them.
    let answer_of = |a: &tandem::results::Attempt| -> serde_json::Value {
        let body = a
            .response
            .as_ref()
            .map(|r| r.body.bytes().clone())
            .unwrap_or_default();
        serde_json::from_slice(&body).unwrap_or_default()
    };
    let created: Vec<u64> = results
        .iter()
        .filter(|r| r.request.method == "POST" && r.request.target == "/api/orders")
        .filter_map(|r| answer_of(&r.new)["id"].as_u64())
        .collect();
    assert!(!created.is_empty() && created.iter().all(|&id| id > 1 << 53));
    let read_back = results
        .iter()
        .filter(|r| r.request.method == "GET")
        .filter_map(|r| answer_of(&r.new)["id"].as_u64())
        .filter(|id| created.contains(id))
        .count();
    assert!(read_back > 0, "snowflake ids were read back exactly");

    // Not followed: the stale token and ids get 401 and 404; fidelity says
    // so and its gate fails the run, whatever parity reads.
    let (legacy, new) = (
        moved_on_legacy().await,
        demo::start(Flavor::New).await.unwrap(),
    );
    let unfollowed = run(
        &job(
            &capture,
            &legacy.url(),
            &new.url(),
            &dir.path().join("unfollowed"),
            &["--min-fidelity", "0.98", "--no-correlate"],
        ),
        std::future::pending(),
    )
    .await
    .unwrap();
    legacy.stop().await;
    new.stop().await;
    let fidelity = unfollowed.report.fidelity.as_ref().unwrap();
    assert!(fidelity.rate < 0.9, "{fidelity:?}");
    assert!(
        fidelity
            .divergences
            .iter()
            .any(|d| d.recorded.as_deref() == Some("200") && d.replayed.as_deref() == Some("401")),
        "{:#?}",
        fidelity.divergences
    );
    assert!(unfollowed.report.summary.failed_alike > 0);
    assert!(!unfollowed.passed());
    assert!(unfollowed.report.correlation.is_none());
}

/// A stack that issues a token at `/login` and wants it at `/use`; with
/// `fail`, its login answers 500 without one; with `hang`, never.
async fn token_stack(fail: bool, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issued = Arc::new(AtomicU64::new(0));
    tokio::spawn(tandem::server::serve(
        listener,
        None,
        move |req: Request<hyper::body::Incoming>, _peer| {
            let issued = issued.clone();
            async move {
                let (status, body) = match req.uri().path() {
                    "/slow" => {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        (StatusCode::OK, r#"{"ok":true}"#.into())
                    }
                    "/login" if hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (StatusCode::OK, String::new())
                    }
                    "/login" if fail => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"error":"down"}"#.into(),
                    ),
                    "/login" => {
                        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                        (
                            StatusCode::OK,
                            format!(r#"{{"token":"tok-{addr}-{n:020}"}}"#),
                        )
                    }
                    _ => {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        match auth.starts_with(&format!("Bearer tok-{addr}-")) {
                            true => (StatusCode::OK, r#"{"ok":true}"#.into()),
                            false => (StatusCode::UNAUTHORIZED, r#"{"error":"who"}"#.into()),
                        }
                    }
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}

/// One session: a login whose token three later requests carry.
fn login_capture(path: &Path) -> std::path::PathBuf {
    login_capture_after(path, None)
}

/// [`login_capture`]; with `slow_first`, a `GET /slow` of another session
/// goes first, and the requests that carry the token come that many µs
/// after the login.
fn login_capture_after(path: &Path, slow_first: Option<u64>) -> std::path::PathBuf {
    let answer = |body: &str| {
        Some(Recorded {
            status: 200,
            headers: vec![Header("content-type".into(), "application/json".into())],
            body: Body::from(body),
            latency_us: 100,
            truncated: None,
        })
    };
    let token = "tok-recorded-00000000000000000001";
    let mut exchanges: Vec<Exchange> = vec![{
        let mut login = common::exchange(1, 1_000, "s", "POST", "/login", &[]);
        login.response = answer(&format!(r#"{{"token":"{token}"}}"#));
        login
    }];
    if slow_first.is_some() {
        let mut slow = common::exchange(5, 0, "b", "GET", "/slow", &[]);
        slow.response = answer(r#"{"ok":true}"#);
        exchanges.insert(0, slow);
    }
    for i in 2..=4 {
        let mut use_ = common::exchange(
            i,
            i * 1_000 + slow_first.unwrap_or(0),
            "s",
            "GET",
            &format!("/use/{i}"),
            &[("authorization", format!("Bearer {token}"))],
        );
        use_.response = answer(r#"{"ok":true}"#);
        exchanges.push(use_);
    }
    common::write_capture(path, exchanges)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_producer_leaves_its_dependents_unresolved_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let capture = login_capture(&dir.path().join("login.jsonl"));
    let (legacy, new) = (
        token_stack(false, false).await,
        token_stack(true, false).await,
    );
    let outcome = run(
        &job_from_args([
            capture.to_str().unwrap(),
            "--legacy",
            &format!("http://{legacy}"),
            "--new",
            &format!("http://{new}"),
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ])
        .unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let results = common::read_results(&dir.path().join("run"));
    for r in results.iter().filter(|r| r.id > 1) {
        assert_eq!(
            r.legacy.response.as_ref().unwrap().status,
            200,
            "legacy's own token"
        );
        assert!(r.legacy.unresolved.is_empty());
        assert_eq!(
            r.new.response.as_ref().unwrap().status,
            401,
            "sent as recorded"
        );
        assert_eq!(r.new.unresolved.len(), 1, "{:?}", r.new.unresolved);
        assert!(
            r.new.unresolved[0].contains("answered 500 without $.token"),
            "{:?}",
            r.new.unresolved
        );
    }
    let correlation = outcome.report.correlation.as_ref().unwrap();
    assert_eq!(correlation.unresolved, 3);
    assert_eq!(
        outcome.report.summary.errors, 0,
        "unresolved is not a target error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_never_answers_holds_nothing_past_max_lag() {
    let dir = tempfile::tempdir().unwrap();
    let capture = login_capture(&dir.path().join("login.jsonl"));
    let (legacy, new) = (
        token_stack(false, false).await,
        token_stack(false, true).await,
    );
    let started = Instant::now();
    let outcome = run(
        &job_from_args([
            capture.to_str().unwrap(),
            "--legacy",
            &format!("http://{legacy}"),
            "--new",
            &format!("http://{new}"),
            "--out",
            dir.path().join("run").to_str().unwrap(),
            "--unordered-sessions",
            "--max-lag",
            "300ms",
            "--timeout",
            "1s",
        ])
        .unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let results = common::read_results(&dir.path().join("run"));
    assert_eq!(results.len(), 4);
    for r in results.iter().filter(|r| r.id > 1) {
        assert!(
            r.new
                .unresolved
                .iter()
                .any(|u| u.contains("had not answered in time")),
            "{:?}",
            r.new
        );
    }
    assert_eq!(outcome.report.correlation.as_ref().unwrap().unresolved, 3);
}

/// A login the harness itself drops (no free slot within --max-lag, behind
/// a slow request) tells its dependents at once that no token will come:
/// they go out as recorded, unresolved, instead of holding their session
/// until their deadline and being dropped for lag themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_the_harness_drops_releases_its_dependents_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let capture = login_capture_after(&dir.path().join("login.jsonl"), Some(500_000));
    let (legacy, new) = (
        token_stack(false, false).await,
        token_stack(false, false).await,
    );
    run(
        &job_from_args([
            capture.to_str().unwrap(),
            "--legacy",
            &format!("http://{legacy}"),
            "--new",
            &format!("http://{new}"),
            "--out",
            dir.path().join("run").to_str().unwrap(),
            "--max-in-flight",
            "1",
            "--max-lag",
            "300ms",
        ])
        .unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let results = common::read_results(&dir.path().join("run"));
    let login = results.iter().find(|r| r.id == 1).unwrap();
    assert!(login.new.was_dropped(), "{:?}", login.new);
    let uses: Vec<_> = results.iter().filter(|r| (2..=4).contains(&r.id)).collect();
    assert_eq!(uses.len(), 3);
    for r in uses {
        // Legacy may send its login late (--max-lag is eased between
        // stacks); new dropped it, and that is the side under test.
        let attempt = &r.new;
        assert!(!attempt.was_dropped(), "#{}: {:?}", r.id, attempt);
        assert_eq!(attempt.response.as_ref().unwrap().status, 401);
        assert!(
            attempt
                .unresolved
                .iter()
                .any(|u| u.contains("got no answer")),
            "#{}: {:?}",
            r.id,
            attempt.unresolved
        );
    }
}

/// A correlate rule naming a route no exchange has is reported unused; a
/// malformed one is an error naming the file and line, before anything is
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlate_rules_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let capture = login_capture(&dir.path().join("login.jsonl"));
    let (legacy, new) = (
        token_stack(false, false).await,
        token_stack(false, false).await,
    );
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[correlate]]\nproducer = \"POST /nope\"\nfrom = \"$.token\"\nconsumer = \"* /**\"\nto = \"bearer\"\n",
    )
    .unwrap();
    let args = |rules: &Path, out: &str| {
        job_from_args([
            capture.to_str().unwrap(),
            "--legacy",
            &format!("http://{legacy}"),
            "--new",
            &format!("http://{new}"),
            "--out",
            dir.path().join(out).to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .unwrap()
    };
    let outcome = run(&args(&rules, "run"), std::future::pending())
        .await
        .unwrap();
    assert!(
        outcome
            .report
            .unused_rules
            .iter()
            .any(|u| u.contains("POST /nope") && u.contains("matched no exchange")),
        "{:?}",
        outcome.report.unused_rules
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[defaults]\n\n[[correlate]]\nproducer = \"POST /login\"\nfrom = \"the token\"\nconsumer = \"* /**\"\nto = \"bearer\"\n",
    )
    .unwrap();
    let error = run(&args(&bad, "bad-run"), std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("bad.toml") && message.contains("line 5"),
        "{message}"
    );
    assert!(message.contains("is not a place"), "{message}");
    assert!(
        !dir.path().join("bad-run").exists(),
        "nothing was written or sent"
    );
}

/// `[[time_shift]]`: a request recorded a day ago for "10:00 that day" is
/// replayed for 10:00 the day after, in the form it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_times_in_requests_move_with_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("booking.jsonl");
    let mut header = tandem::capture::CaptureHeader::new("test");
    header.started_at_unix_us -= 86_400_000_000;
    let mut writer = tandem::capture::CaptureWriter::create(&path, &header).unwrap();
    let mut booking = common::exchange(
        1,
        1_000,
        "s",
        "POST",
        "/book",
        &[("content-type", "application/json".to_string())],
    );
    booking.request.body = Body::from(r#"{"at":"2026-11-01T10:00:00Z","seats":2}"#);
    writer.write(&booking).unwrap();
    writer.finish().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[time_shift]]\nroute = \"POST /book\"\nplace = \"$.at\"\n",
    )
    .unwrap();
    let echo = common::Echo::start().await;
    let out = dir.path().join("run");
    run(
        &job_from_args([
            path.to_str().unwrap(),
            "--legacy",
            &echo.url(),
            "--new",
            &echo.url(),
            "--out",
            out.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ])
        .unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let result = &common::read_results(&out)[0];
    let echoed: serde_json::Value =
        serde_json::from_slice(result.new.response.as_ref().unwrap().body.bytes()).unwrap();
    let at = echoed["at"].as_str().unwrap();
    assert!(at.starts_with("2026-11-02T10:00:0"), "{at}");
    assert_eq!(echoed["seats"], 2, "the rest of the body is as recorded");
}
