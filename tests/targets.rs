//! Targets: TLS with a self-signed certificate, HTTP/2 by ALPN and by prior
//! knowledge, the Host header kept or rewritten, extra headers per target.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tandem::capture::header_value;
use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::http::ClientOptions;
use tandem::replay::ReplayPlan;
use tandem::results::{ErrorKind, ExchangeResult};
use tokio::net::TcpListener;

/// A capture of three GETs recorded against `shop.example`.
fn capture(dir: &Path) -> PathBuf {
    let headers = [
        ("host", "shop.example".to_string()),
        ("x-env", "recorded".to_string()),
    ];
    let exchanges = (0..3u64).map(|i| {
        common::exchange(
            i + 1,
            i * 1_000,
            &format!("s{i}"),
            "GET",
            &format!("/item/{i}"),
            &headers,
        )
    });
    common::write_capture(&dir.join("cap.jsonl"), exchanges)
}

fn results(out: &Path) -> Vec<ExchangeResult> {
    common::read_results(out)
}

/// An HTTPS server with a self-signed certificate for 127.0.0.1, offering
/// h2 and http/1.1 by ALPN; it answers with the protocol version it spoke.
async fn tls_server() -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let mut response = Response::new(Full::new(Bytes::from_static(b"secure")));
                        let version = format!("{:?}", req.version());
                        response
                            .headers_mut()
                            .insert("x-echo-version", version.parse().unwrap());
                        Ok::<_, std::convert::Infallible>(response)
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_and_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let secure = tls_server().await;
    let echo = common::Echo::start().await;

    // Refused without --insecure: recorded as errors of that target, no crash.
    let strict = ReplayJob::new(
        ReplayPlan::new(
            cap.clone(),
            secure.parse().unwrap(),
            echo.url().parse().unwrap(),
        ),
        dir.path().join("strict"),
    );
    let report = replay(&strict, std::future::pending())
        .await
        .unwrap()
        .report;
    assert_eq!(report.summary.errors, 3);
    assert_eq!(
        report.errors.legacy.get(&ErrorKind::Other),
        Some(&3),
        "{:?}",
        report.errors
    );

    let insecure = ReplayJob::new(
        ReplayPlan {
            client: ClientOptions {
                insecure_tls: true,
                ..ClientOptions::default()
            },
            ..ReplayPlan::new(cap, secure.parse().unwrap(), echo.url().parse().unwrap())
        },
        dir.path().join("insecure"),
    );
    replay(&insecure, std::future::pending()).await.unwrap();
    let all = results(&dir.path().join("insecure"));
    assert_eq!(all.len(), 3);
    for r in &all {
        let answer = r.legacy.response.as_ref().expect("answered over TLS");
        assert_eq!(answer.body.bytes().as_ref(), b"secure");
        assert_eq!(
            header_value(&answer.headers, "x-echo-version"),
            Some("HTTP/2.0"),
            "h2 by ALPN"
        );
        let plain = r.new.response.as_ref().unwrap();
        assert_eq!(
            header_value(&plain.headers, "x-echo-version"),
            Some("HTTP/1.1")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_host_and_headers_per_target() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let (legacy, new) = (common::Echo::start().await, common::Echo::start().await);
    let out = dir.path().join("run");
    let plan = ReplayJob::new(
        ReplayPlan {
            keep_host: true,
            legacy_headers: vec![("x-env".into(), "legacy".into())],
            new_headers: vec![("x-env".into(), "new".into())],
            client: ClientOptions {
                http2_prior_knowledge: true,
                connect_timeout: Duration::from_secs(2),
                ..ClientOptions::default()
            },
            ..ReplayPlan::new(
                cap.clone(),
                legacy.url().parse().unwrap(),
                new.url().parse().unwrap(),
            )
        },
        out.clone(),
    );
    replay(&plan, std::future::pending()).await.unwrap();
    for r in results(&out) {
        let (l, n) = (r.legacy.response.unwrap(), r.new.response.unwrap());
        assert_eq!(header_value(&l.headers, "x-echo-version"), Some("HTTP/2.0"));
        assert_eq!(
            header_value(&l.headers, "x-echo-host"),
            Some("shop.example"),
            "recorded Host kept, as :authority"
        );
        assert_eq!(
            header_value(&l.headers, "x-echo-host-headers"),
            Some("0"),
            "no host header beside :authority"
        );
        assert_eq!(
            header_value(&l.headers, "x-echo-env"),
            Some("legacy"),
            "the legacy header replaced the recorded one"
        );
        assert_eq!(header_value(&n.headers, "x-echo-env"), Some("new"));
    }

    // By default the Host header names the target, over HTTP/1.1.
    let out = dir.path().join("default");
    let plan = ReplayJob::new(
        ReplayPlan::new(
            cap,
            legacy.url().parse().unwrap(),
            new.url().parse().unwrap(),
        ),
        out.clone(),
    );
    replay(&plan, std::future::pending()).await.unwrap();
    let r = &results(&out)[0];
    let l = r.legacy.response.as_ref().unwrap();
    assert_eq!(
        header_value(&l.headers, "x-echo-host"),
        Some(legacy.addr.to_string().as_str())
    );
    assert_eq!(header_value(&l.headers, "x-echo-version"), Some("HTTP/1.1"));
    assert_eq!(header_value(&l.headers, "x-echo-env"), Some("recorded"));
}
