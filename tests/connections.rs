//! Connections to the targets: opened ahead of the first request, capped per
//! target, and the send lag measured to the moment a request goes out on its
//! connection, so that a wait for one shows.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::replay::ReplayPlan;
use tokio::net::TcpListener;

/// What a server saw of its connections.
#[derive(Default)]
struct Connections {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
    /// Connections accepted when the first request arrived.
    before_first_request: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTP/1 server answering every request after `delay`, counting its
/// connections.
async fn slow_server(delay: Duration) -> (SocketAddr, Arc<Connections>) {
    server(delay, 0, true).await
}

/// As [`slow_server`], closing its first `drop_first` connections at once,
/// and every connection after its first answer unless `keep_alive`.
async fn server(
    delay: Duration,
    drop_first: usize,
    keep_alive: bool,
) -> (SocketAddr, Arc<Connections>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Connections::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            if counts.accepted.fetch_add(1, Ordering::SeqCst) < drop_first {
                drop(stream);
                continue;
            }
            let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
            counts.most_open.fetch_max(open, Ordering::SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                let per_request = counts.clone();
                let service = service_fn(move |_req| {
                    let counts = per_request.clone();
                    async move {
                        if counts.requests.fetch_add(1, Ordering::SeqCst) == 0 {
                            let accepted = counts.accepted.load(Ordering::SeqCst);
                            counts
                                .before_first_request
                                .store(accepted, Ordering::SeqCst);
                        }
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                counts.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// A replay of `capture` from `legacy` and `new`, answers awaited 5 s.
fn plan_for(capture: PathBuf, legacy: SocketAddr, new: SocketAddr, out: PathBuf) -> ReplayJob {
    ReplayJob::new(
        ReplayPlan {
            timeout: Duration::from_secs(5),
            ..ReplayPlan::new(
                capture,
                format!("http://{legacy}").parse().unwrap(),
                format!("http://{new}").parse().unwrap(),
            )
        },
        out,
    )
}

fn assert_no_errors(report: &tandem::report::Report) {
    assert_eq!(report.summary.errors, 0, "{:?}", report.errors);
}

/// Six requests of six sessions, all due at once.
fn burst(dir: &Path) -> PathBuf {
    let exchanges = (1..=6).map(|i| common::exchange(i, 0, &format!("s{i}"), "GET", "/slow", &[]));
    common::write_capture(&dir.join("burst.jsonl"), exchanges)
}

async fn run(
    dir: &Path,
    name: &str,
    max_connections: Option<usize>,
) -> (Vec<Duration>, Arc<Connections>) {
    let delay = Duration::from_millis(150);
    let (legacy, seen) = slow_server(delay).await;
    let (new, _) = slow_server(delay).await;
    let out = dir.join(name);
    let mut plan = plan_for(burst(dir), legacy, new, out.clone()).map_plan(|p| ReplayPlan {
        warm_connections: Some(2),
        // One engine: the limits are the whole replay's, not split.
        threads: 1,
        ..p
    });
    // None: no limit, as `--max-connections 0` says.
    plan.plan.max_connections = Some(max_connections.unwrap_or(0));
    let outcome = replay(&plan, std::future::pending()).await.unwrap();
    assert_eq!(outcome.report.summary.total, 6);
    assert_eq!(outcome.report.summary.errors, 0);
    let mut lags: Vec<Duration> = common::read_results(&out)
        .iter()
        .map(|r| Duration::from_micros(r.legacy.lag_us))
        .collect();
    lags.sort();
    (lags, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_opened_ahead_and_capped_and_the_wait_shows_as_lag() {
    let dir = tempfile::tempdir().unwrap();

    // Two connections allowed: the six requests go out two by two, each pair
    // once the previous one is answered (150 ms), and their lag says so.
    let (lags, seen) = run(dir.path(), "capped", Some(2)).await;
    assert_eq!(
        seen.before_first_request.load(Ordering::SeqCst),
        2,
        "opened ahead"
    );
    assert_eq!(seen.most_open.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        2,
        "the warm ones, reused"
    );
    assert!(lags[1] < Duration::from_millis(100), "{lags:?}");
    assert!(lags[2] >= Duration::from_millis(140), "{lags:?}");
    assert!(lags[4] >= Duration::from_millis(290), "{lags:?}");

    // No limit: every request gets a connection at once, and goes out on time.
    let (lags, seen) = run(dir.path(), "unlimited", None).await;
    assert_eq!(seen.most_open.load(Ordering::SeqCst), 6);
    assert!(lags[5] < Duration::from_millis(100), "{lags:?}");
}

/// Past its connections, a stack's jobs wait for a running send to take them
/// on; a stop leaves the waiting ones unsent, and every job another stack
/// answered still has its result, this stack's side marked as not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_for_a_connection_at_a_stop_are_reported_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, legacy_seen) = slow_server(Duration::from_millis(5)).await;
    let (new, new_seen) = slow_server(Duration::from_millis(1_000)).await;
    let out = dir.path().join("stopped");
    let mut plan = plan_for(burst(dir.path()), legacy, new, out.clone()).map_plan(|p| ReplayPlan {
        warm_connections: Some(1),
        threads: 1,
        ..p
    });
    plan.plan.max_connections = Some(1);
    // Stopped once legacy has had all six, one after the other on its one
    // connection, while new (1 s a request) holds its first: the other
    // five wait in new's lane.
    let stop = {
        let (legacy_seen, new_seen) = (legacy_seen.clone(), new_seen.clone());
        async move {
            while legacy_seen.requests.load(Ordering::SeqCst) < 6
                || new_seen.requests.load(Ordering::SeqCst) < 1
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), replay(&plan, stop))
        .await
        .expect("the replay ends")
        .unwrap();

    assert_eq!(legacy_seen.requests.load(Ordering::SeqCst), 6);
    assert_eq!(legacy_seen.most_open.load(Ordering::SeqCst), 1);
    let sent_to_new = new_seen.requests.load(Ordering::SeqCst);
    assert_eq!(sent_to_new, 1, "the one in flight at the stop");
    assert_eq!(outcome.report.summary.total, 6);
    let results = common::read_results(&out);
    assert_eq!(results.len(), 6);
    assert!(results.iter().all(|r| r.legacy.response.is_some()));
    let unsent = results
        .iter()
        .filter(|r| {
            r.new.error.as_ref().is_some_and(|e| {
                e.kind == tandem::results::ErrorKind::Dropped
                    && e.message.contains("the replay stopped")
            })
        })
        .count();
    let answered = results.iter().filter(|r| r.new.response.is_some()).count();
    assert_eq!(answered, sent_to_new);
    assert_eq!(unsent, 6 - sent_to_new, "{results:?}");
}

/// Connections opened ahead that the server closed meanwhile are not used:
/// the requests go out on new ones and get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_closed_by_the_server_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, seen) = server(Duration::from_millis(1), 3, true).await;
    let (new, _) = slow_server(Duration::from_millis(1)).await;
    let plan =
        plan_for(burst(dir.path()), legacy, new, dir.path().join("run")).map_plan(|p| ReplayPlan {
            warm_connections: Some(3),
            ..p
        });
    let outcome = replay(&plan, std::future::pending()).await.unwrap();
    assert_no_errors(&outcome.report);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 6);
    assert!(
        seen.accepted.load(Ordering::SeqCst) > 3,
        "new connections were opened"
    );
}

/// A server that closes each connection after its answer (`Connection:
/// close`): every request of a session goes out on a new connection and is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_after_an_answer_are_not_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, seen) = server(Duration::from_millis(1), 0, false).await;
    let (new, _) = server(Duration::from_millis(1), 0, false).await;
    // One session: each request waits for the previous answer, so each
    // finds the connection it could reuse closed.
    let exchanges = (1..=4).map(|i| common::exchange(i, i * 1_000, "s", "GET", "/", &[]));
    let capture = common::write_capture(&dir.path().join("session.jsonl"), exchanges);
    let plan = plan_for(capture, legacy, new, dir.path().join("run")).map_plan(|p| ReplayPlan {
        warm_connections: Some(0),
        threads: 1,
        ..p
    });
    let outcome = replay(&plan, std::future::pending()).await.unwrap();
    assert_no_errors(&outcome.report);
    assert_eq!(outcome.report.summary.matched, 4);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        4,
        "one connection each"
    );
}

/// A server whose keep-alive timeout meets the next request on the way: it
/// answers the first request of each connection and closes the connection
/// when the second arrives, without a byte of answer. Counts connections
/// and requests.
async fn closes_on_second_request() -> (SocketAddr, Arc<Connections>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Connections::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                let (mut buf, mut heads) = (Vec::new(), 0);
                let mut chunk = [0u8; 4096];
                // Requests without bodies: each ends at its blank line.
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counts.requests.fetch_add(1, Ordering::SeqCst);
                        heads += 1;
                        if heads > 1 {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A GET whose reused connection closes before any byte of its answer goes
/// out once more on a new connection and is answered, counted as retried;
/// a POST in the same plight is not sent twice (it may have taken effect):
/// its error stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_on_a_connection_closed_unanswered_is_sent_once_more() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, seen) = closes_on_second_request().await;
    let (new, _) = closes_on_second_request().await;
    let exchanges = [
        common::exchange(1, 0, "s", "GET", "/a", &[]),
        common::exchange(2, 20_000, "s", "GET", "/b", &[]),
        common::exchange(3, 40_000, "s", "POST", "/c", &[]),
    ];
    let capture = common::write_capture(&dir.path().join("session.jsonl"), exchanges);
    let out = dir.path().join("run");
    let plan = plan_for(capture, legacy, new, out.clone()).map_plan(|p| ReplayPlan {
        warm_connections: Some(0),
        threads: 1,
        ..p
    });
    let outcome = replay(&plan, std::future::pending()).await.unwrap();
    let report = &outcome.report;
    assert_eq!(report.summary.matched, 2, "{:?}", report.errors);
    assert_eq!(report.summary.errors, 1);
    let load = report.load.as_ref().expect("load");
    assert_eq!((load.legacy.retried, load.new.retried), (1, 1));

    let results = common::read_results(&out);
    let by_id = |id| results.iter().find(|r| r.id == id).unwrap();
    let get = &by_id(2).legacy;
    assert!(get.retried && get.response.as_ref().unwrap().status == 200);
    let post = &by_id(3).legacy;
    assert!(!post.retried, "a POST is never sent twice");
    assert_eq!(
        post.error.as_ref().map(|e| e.kind),
        Some(tandem::results::ErrorKind::Reset)
    );
    // a, b twice (the second time on a new connection), c.
    assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}
