//! HTTPS and HTTP/2 against real servers, nginx and apache2: the sample
//! capture replayed over HTTP/1.1 on TLS, HTTP/2 on TLS (ALPN) and HTTP/2
//! by prior knowledge must be answered as over HTTP/1.1, by the servers'
//! own logs (no 400, the same statuses, the protocol asked for); and the
//! recording proxy in front of a TLS upstream signed by a test CA, with
//! HTTP/2 clients (curl) in cleartext and over TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::servers::{self, Logged, Pki, Server};
use tandem::capture::{CaptureReader, Exchange};
use tandem::cli::replay::{job_from_args, run};
use tandem::http::{Trust, TrustFiles};
use tandem::record::{record_proxy, ProxyConfig, Rotation, Selection, Sink};
use tandem::report::Report;
use tokio::net::TcpListener;

const SAMPLE: &str = "captures/sample.jsonl";
/// Exchanges in the sample capture.
const EXCHANGES: u64 = 48;
/// Requests it makes: each exchange to both stacks.
const REQUESTS: usize = 2 * EXCHANGES as usize;

/// Replays the sample capture at `url` as both stacks, with `flags`.
async fn replay(dir: &Path, name: &str, url: &str, flags: &[&str]) -> Report {
    let out = dir.join(name);
    let mut args = vec![
        SAMPLE.to_string(),
        "--legacy".into(),
        url.into(),
        "--new".into(),
        url.into(),
        "--out".into(),
        out.display().to_string(),
        "--speed".into(),
        "20".into(),
        "--timeout".into(),
        "5s".into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let job = job_from_args(args).unwrap();
    run(&job, std::future::pending()).await.unwrap().report
}

fn statuses(logged: &[Logged]) -> Vec<(String, String, u16)> {
    let mut s: Vec<_> = logged
        .iter()
        .map(|l| (l.method.clone(), l.target.clone(), l.status))
        .collect();
    s.sort();
    s
}

/// The three protocols at `server`, checked against its own log: every
/// request arrived over the protocol asked for, none was refused, and each
/// got the status it gets over HTTP/1.1.
async fn three_protocols(dir: &Path, pki: &Pki, server: &Server) {
    let ca = pki.ca.display().to_string();
    let h1 = format!("https://127.0.0.1:{}", server.tls_h1);
    let h2 = format!("https://127.0.0.1:{}", server.tls_h2);
    let h2c = format!("http://127.0.0.1:{}", server.h2c);
    let runs = [
        (
            "tls-h1",
            &h1,
            server.tls_h1,
            vec!["--ca-cert", &ca],
            "HTTP/1.1",
        ),
        (
            "tls-h2",
            &h2,
            server.tls_h2,
            vec!["--ca-cert", &ca],
            "HTTP/2.0",
        ),
        ("h2c", &h2c, server.h2c, vec!["--http2"], "HTTP/2.0"),
    ];
    let mut baseline = None;
    for (name, url, port, flags, protocol) in runs {
        let report = replay(dir, name, url, &flags).await;
        let logged = server.requests_on(port);
        assert_eq!(logged.len(), REQUESTS, "{name}: {logged:#?}");
        assert!(
            logged.iter().all(|l| l.protocol == protocol),
            "{name}: not all over {protocol}: {logged:#?}"
        );
        assert!(
            logged.iter().all(|l| l.status != 400),
            "{name}: the server refused requests: {logged:#?}\n{}",
            server.error_log()
        );
        assert_eq!(report.summary.errors, 0, "{name}: {:?}", report.errors);
        assert_eq!(report.summary.matched, EXCHANGES, "{name}");
        let seen = statuses(&logged);
        match &baseline {
            None => baseline = Some(seen),
            Some(h1) => assert_eq!(&seen, h1, "{name}: statuses differ from HTTP/1.1's"),
        }
    }
    assert!(
        !server.error_log().contains("duplicate host"),
        "{}",
        server.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_tls_http2_and_h2c_as_it_answers_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let nginx = servers::nginx(dir.path(), &pki);
    three_protocols(dir.path(), &pki, &nginx).await;

    // Without the test CA the certificate is not trusted: every attempt is
    // an error of the target, and nothing reaches nginx.
    let url = format!("https://127.0.0.1:{}", nginx.tls_h1);
    let before = nginx.requests_on(nginx.tls_h1).len();
    let untrusted = replay(dir.path(), "untrusted", &url, &[]).await;
    assert_eq!(untrusted.summary.errors, EXCHANGES);
    assert_eq!(nginx.requests_on(nginx.tls_h1).len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_answers_tls_http2_and_h2c_as_it_answers_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let apache = servers::apache(dir.path(), &pki);
    three_protocols(dir.path(), &pki, &apache).await;
}

/// A stack behind a mesh that asks for a client certificate: answered with
/// it, refused (by nginx's own log) without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_stacks_that_ask_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let nginx = servers::nginx(dir.path(), &pki);
    let url = format!("https://127.0.0.1:{}", nginx.mtls);
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let flags = [
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];
    let with = replay(dir.path(), "with", &url, &flags).await;
    assert_eq!(with.summary.matched, EXCHANGES, "{:?}", with.errors);
    let logged = nginx.requests_on(nginx.mtls);
    assert_eq!(logged.len(), REQUESTS);
    assert!(logged.iter().all(|l| l.status == 200), "{logged:#?}");

    replay(dir.path(), "without", &url, &["--ca-cert", &ca]).await;
    let refused: Vec<_> = nginx.requests_on(nginx.mtls)[REQUESTS..].to_vec();
    assert_eq!(refused.len(), REQUESTS);
    assert!(refused.iter().all(|l| l.status == 400), "{refused:#?}");
}

/// A recording proxy in front of `upstream`, trusting `ca` if given, and
/// terminating TLS with the test server certificate if `tls`.
async fn proxy(
    upstream: &str,
    ca: Option<&Path>,
    tls: Option<&Pki>,
    out: &Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<tandem::record::RecordSummary>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        tls: tls.map(|p| tandem::http::tls::server_config(&p.server_cert, &p.server_key).unwrap()),
        ..ProxyConfig::new(listener, upstream.parse().unwrap())
    };
    config.client.trust = Trust::load(&TrustFiles {
        ca_certs: ca.map(Path::to_path_buf).into_iter().collect(),
        ..TrustFiles::default()
    })
    .unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let sink = Sink::create(
        out,
        &config.source(),
        Selection::default(),
        Rotation::default(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));
    (format!("{scheme}://127.0.0.1:{}", addr.port()), stop, task)
}

/// curl's status and HTTP version for `url` with `flags`.
async fn curl(url: String, flags: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(["--max-time", "5"])
            .args(&flags)
            .arg(&url)
            .output()
            .expect("curl (.ci/setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

fn recorded(path: &PathBuf) -> Vec<Exchange> {
    CaptureReader::open(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_before_a_tls_upstream_signed_by_a_test_ca_with_http2_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let nginx = servers::nginx(dir.path(), &pki);
    let upstream = format!("https://127.0.0.1:{}", nginx.tls_h2);
    let ca = pki.ca.display().to_string();

    // Cleartext proxy, HTTP/2 client by prior knowledge.
    let cleartext_out = dir.path().join("h2c.jsonl");
    let (url, stop, task) = proxy(&upstream, Some(&pki.ca), None, &cleartext_out).await;
    let seen = curl(
        format!("{url}/api/h2c?x=1"),
        vec!["--http2-prior-knowledge".into()],
    )
    .await;
    assert_eq!(
        seen, "200 2",
        "curl --http2-prior-knowledge through the proxy"
    );
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap().exchanges, 1);

    // TLS proxy, HTTP/2 by ALPN and HTTP/1.1.
    let tls_out = dir.path().join("tls.jsonl");
    let (url, stop, task) = proxy(&upstream, Some(&pki.ca), Some(&pki), &tls_out).await;
    let h2 = curl(
        format!("{url}/api/alpn"),
        vec!["--cacert".into(), ca.clone(), "--http2".into()],
    );
    assert_eq!(h2.await, "200 2", "curl --http2 over TLS to the proxy");
    let h1 = curl(
        format!("{url}/api/h1"),
        vec!["--cacert".into(), ca.clone(), "--http1.1".into()],
    );
    assert_eq!(h1.await, "200 1.1", "curl --http1.1 over TLS to the proxy");
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap().exchanges, 2);

    // Both legs reached nginx over HTTP/2 and were answered, and the
    // captures hold the answers.
    let logged = nginx.requests_on(nginx.tls_h2);
    let targets: Vec<&str> = logged.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/api/h2c?x=1", "/api/alpn", "/api/h1"],
        "{logged:#?}"
    );
    assert!(
        logged
            .iter()
            .all(|l| l.status == 200 && l.protocol == "HTTP/2.0"),
        "{logged:#?}\n{}",
        nginx.error_log()
    );
    for exchange in recorded(&cleartext_out).iter().chain(&recorded(&tls_out)) {
        let response = exchange.response.as_ref().expect("an answer");
        assert_eq!(response.status, 200, "{exchange:?}");
    }

    // Without the CA, the upstream's certificate is not trusted: 502, and
    // the exchange is recorded as an upstream error, not lost.
    let untrusted_out = dir.path().join("untrusted.jsonl");
    let (url, stop, task) = proxy(&upstream, None, None, &untrusted_out).await;
    assert_eq!(curl(format!("{url}/api/x"), Vec::new()).await, "502 1.1");
    stop.send(()).unwrap();
    let summary = task.await.unwrap().unwrap();
    assert_eq!((summary.exchanges, summary.upstream_errors), (1, 1));
}

/// `--keep-host` sends the recorded host as HTTP/1.1's Host and as
/// HTTP/2's `:authority`, never beside a second one, and no recorded
/// connection-specific header goes out: nginx sees the host on every
/// protocol and refuses nothing; without the flag it sees the target's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_host_is_kept_on_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let nginx = servers::nginx(dir.path(), &pki);
    let host = "shop.example.com".to_string();
    // Recorded over HTTP/1.1 with connection-specific headers, which
    // HTTP/2 forbids (RFC 9113 §8.2.2): they must not go out.
    let recorded = [
        ("host", host.clone()),
        ("connection", "keep-alive, x-hop".to_string()),
        ("keep-alive", "timeout=5".to_string()),
        ("proxy-connection", "keep-alive".to_string()),
        ("upgrade", "websocket".to_string()),
        ("te", "gzip".to_string()),
    ];
    let exchanges = (1..=3).map(|i| {
        let target = format!("/api/orders/{i}");
        common::exchange(i, i * 1_000, "s", "GET", &target, &recorded)
    });
    let capture = common::write_capture(&dir.path().join("hosts.jsonl"), exchanges);
    let replay_at = |name: &str, url: String, flags: &[&str]| {
        let mut args = vec![
            capture.display().to_string(),
            "--legacy".into(),
            url.clone(),
            "--new".into(),
            url,
            "--out".into(),
            dir.path().join(name).display().to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        job_from_args(args).unwrap()
    };
    let runs = [
        (
            "h1",
            format!("https://127.0.0.1:{}", nginx.tls_h1),
            nginx.tls_h1,
            vec!["--insecure"],
        ),
        (
            "h2",
            format!("https://127.0.0.1:{}", nginx.tls_h2),
            nginx.tls_h2,
            vec!["--insecure"],
        ),
        (
            "h2c",
            format!("http://127.0.0.1:{}", nginx.h2c),
            nginx.h2c,
            vec!["--http2"],
        ),
    ];
    for (name, url, port, flags) in runs {
        let mut kept = flags.clone();
        kept.push("--keep-host");
        let report = run(&replay_at(name, url.clone(), &kept), std::future::pending())
            .await
            .unwrap()
            .report;
        assert_eq!(report.summary.matched, 3, "{name}: {:?}", report.errors);
        let logged = nginx.requests_on(port);
        assert_eq!(logged.len(), 6, "{name}: {logged:#?}");
        assert!(
            logged.iter().all(|l| l.status == 200 && l.host == host),
            "{name}: {logged:#?}\n{}",
            nginx.error_log()
        );
        run(
            &replay_at(&format!("{name}-target"), url, &flags),
            std::future::pending(),
        )
        .await
        .unwrap();
        let logged = &nginx.requests_on(port)[6..];
        assert!(
            logged
                .iter()
                .all(|l| l.status == 200 && l.host == "127.0.0.1"),
            "{name}: {logged:#?}"
        );
    }
}

/// Each stack may have its own certificates: the new stack behind a mesh
/// that asks for a client certificate, legacy not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stack_may_present_its_own_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::pki(&dir.path().join("pki"));
    let nginx = servers::nginx(dir.path(), &pki);
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let job = job_from_args([
        SAMPLE,
        "--legacy",
        &format!("https://127.0.0.1:{}", nginx.tls_h2),
        "--new",
        &format!("https://127.0.0.1:{}", nginx.mtls),
        "--out",
        dir.path().join("run").to_str().unwrap(),
        "--ca-cert",
        &ca,
        "--new-client-cert",
        &cert,
        "--new-client-key",
        &key,
        "--speed",
        "20",
    ])
    .unwrap();
    let report = run(&job, std::future::pending()).await.unwrap().report;
    assert_eq!(report.summary.errors, 0, "{:?}", report.errors);
    for port in [nginx.tls_h2, nginx.mtls] {
        let logged = nginx.requests_on(port);
        assert_eq!(logged.len(), EXCHANGES as usize, "{port}");
        assert!(logged.iter().all(|l| l.status == 200), "{logged:#?}");
    }
}
