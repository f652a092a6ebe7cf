//! Live metrics against a real Prometheus (Debian's, installed by
//! `.ci/setup`): it scrapes a replay on loopback, and its HTTP API returns
//! tandem's series with the counts of the run's report; `promtool check
//! metrics` accepts what tandem serves.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem::demo::{self, Flavor};

/// Prometheus on loopback scraping `target` every 250 ms, stopped by PID.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: u16, port: u16) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
                 scrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (.ci/setup installs it)");
        // Ready, not merely listening: its web port opens while the
        // database still loads, and scraping starts after that (on this
        // machine seconds later, past the end of a short replay).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_ready(port) {
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Prometheus { child, port }
    }

    /// The status of an instant query (`success` when Prometheus took it).
    async fn status(&self, client: &tandem::http::Client, promql: &str) -> String {
        let value = self.raw(client, promql, "").await;
        value["status"].as_str().unwrap_or_default().to_string()
    }

    /// The value of an instant query that returns one sample, evaluated
    /// at `at` (Unix seconds): once tandem has exited, Prometheus's next
    /// scrape of it fails and marks its series stale, so that "now" may
    /// hold none of them.
    async fn query(&self, client: &tandem::http::Client, promql: &str, at: f64) -> Option<f64> {
        let value = self.raw(client, promql, &format!("&time={at:.3}")).await;
        value["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// Waits until Prometheus has tried to scrape tandem's port once
    /// (`up` exists, 0 while nothing listens): it learns its targets up to
    /// 5 s after it is ready, later than a short replay ends.
    async fn wait_scraping(&self, client: &tandem::http::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.raw(client, "up{job=\"tandem\"}", "").await["data"]["result"][0].is_null() {
            assert!(Instant::now() < deadline, "prometheus scraped nothing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query; `more` is added to the URL as it is.
    async fn raw(
        &self,
        client: &tandem::http::Client,
        promql: &str,
        more: &str,
    ) -> serde_json::Value {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}{more}",
            self.port,
            promql
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' =>
                        (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let seen = common::send(client, &url, "GET", &[], Bytes::new()).await;
        serde_json::from_slice(&seen.body).unwrap()
    }
}

/// True when Prometheus on `port` answers 200 to `/-/ready`.
fn is_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.ends_with(b" 200")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (legacy, new) = (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    );
    let [metrics_port, prometheus_port] = common::free_ports();
    let prometheus = Prometheus::start(dir.path(), metrics_port, prometheus_port);
    let client = tandem::http::client(Duration::from_secs(5));
    prometheus.wait_scraping(&client).await;
    let out = dir.path().join("run");
    // 96 exchanges at 40/s: about 2.4 s, then 2 s more for a last scrape.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["replay", "captures/sample.jsonl", "--legacy", &legacy.url()])
        .args(["--new", &new.url(), "--rate", "40", "--loop", "2"])
        .args(["--rules", "scenarios/demo.rules.toml"])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--metrics-linger", "2s", "--out"])
        .arg(&out)
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // The series the shipped dashboard asks for.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/tandem.json").unwrap())
            .unwrap();
    let mut wanted: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            wanted.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("tandem_"))
                    .map(String::from),
            );
        }
    }
    // While it runs, once exchanges are judged and every series the
    // dashboard asks for is out: what it serves passes promtool.
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let mut missing = vec!["tandem_exchanges_total{result=\"matched\"}".to_string()];
        if std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok() {
            let body = common::send(&client, &url, "GET", &[], Bytes::new())
                .await
                .body;
            let text = String::from_utf8(body.to_vec()).unwrap();
            missing = missing.into_iter().chain(wanted.iter().cloned()).collect();
            missing.retain(|series| !text.contains(series.as_str()));
            if missing.is_empty() {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not served within 10 s of the start: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        !text.contains("/api/products/1\""),
        "routes are templates, not URLs"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (with prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let report = tandem::report::Report::load(&out.join("report.json")).unwrap();
    // Half a second before tandem exited: inside its --metrics-linger of 2 s,
    // when Prometheus holds the run's final figures.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 0.5;
    let q = |promql: &'static str| prometheus.query(&client, promql, at);
    assert_eq!(
        q("sum(tandem_exchanges_total)").await,
        Some(report.summary.total as f64)
    );
    assert_eq!(
        q("tandem_exchanges_total{result=\"mismatched\"}").await,
        Some(report.summary.mismatched as f64)
    );
    let answered_new: u64 = report.routes.iter().map(|r| r.latency.new.count).sum();
    assert_eq!(
        q("sum(tandem_requests_total{stack=\"new\",outcome=\"answered\"})").await,
        Some(answered_new as f64)
    );
    assert_eq!(
        q("sum(tandem_corrected_latency_seconds_count{stack=\"legacy\"})").await,
        Some(report.latency_corrected.legacy.count as f64)
    );
    assert_eq!(
        q("tandem_offered_requests_total").await,
        Some(report.summary.total as f64)
    );
    assert_eq!(q("tandem_offered_rate").await, Some(40.0));
    // Each engine's CPU time, as the report counts them.
    let engines = report
        .generator
        .as_ref()
        .expect("engines measured")
        .engines
        .len();
    assert_eq!(
        q("count(tandem_engine_cpu_seconds_total)").await,
        Some(engines as f64)
    );
    let cpu = q("sum(tandem_engine_cpu_seconds_total)").await.unwrap();
    assert!(cpu > 0.0, "engine CPU time {cpu}");
    assert_eq!(
        q("sum(tandem_mismatches_total{route=\"GET /api/products/{id}\",kind=\"missing_field\"})")
            .await,
        report
            .mismatch_groups
            .iter()
            .find(|g| g.route == "/api/products/{id}")
            .map(|g| g.count as f64)
    );
    assert_eq!(
        q("count(tandem_run_info{capture=\"captures/sample.jsonl\"})").await,
        Some(1.0)
    );

    // The shipped dashboard asks for series tandem exports, in queries
    // Prometheus accepts.
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$job", ".*");
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tandem_"))
            {
                assert!(text.contains(name), "{name} (in {expr}) is not exported");
            }
            assert_eq!(prometheus.status(&client, &expr).await, "success", "{expr}");
            queries += 1;
        }
    }
    assert!(queries >= 10);
    legacy.stop().await;
    new.stop().await;
}

/// `tandem record --metrics-addr`: what the upstream answered, per route
/// template, while the proxy records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_serves_metrics_of_what_it_records() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = common::Echo::start().await;
    let [listen, metrics] = common::free_ports();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["record", "--listen", &format!("127.0.0.1:{listen}")])
        .args(["--upstream", &upstream.url()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}"), "--out"])
        .arg(dir.path().join("rec.jsonl"))
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "record did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = tandem::http::client(Duration::from_secs(5));
    for i in 1..=3 {
        let url = format!("http://127.0.0.1:{listen}/item/{i}");
        assert_eq!(
            common::send(&client, &url, "GET", &[], Bytes::new())
                .await
                .status,
            200
        );
    }
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    let text = common::send(&client, &url, "GET", &[], Bytes::new())
        .await
        .body;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains(
            "tandem_requests_total{stack=\"upstream\",route=\"GET /item/{id}\",outcome=\"answered\"} 3"
        ),
        "{text}"
    );
    assert!(text
        .contains("tandem_latency_seconds_count{stack=\"upstream\",route=\"GET /item/{id}\"} 3"));
    let pid = child.id().unwrap().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait_with_output().await;
}

/// `--metrics-addr 127.0.0.1:0` serves on a free port and the log names
/// it: shards sharing a node need not be given a port each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_with_port_0_is_named_in_the_log() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let legacy = demo::start(Flavor::Legacy).await.unwrap();
    // 96 exchanges at 20/s: about 5 s, long enough to be scraped.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["replay", "captures/sample.jsonl", "--legacy", &legacy.url()])
        .args(["--new", &legacy.url(), "--rate", "20", "--loop", "2"])
        .args(["--metrics-addr", "127.0.0.1:0", "--no-progress", "--out"])
        .arg(dir.path().join("run"))
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.split("metrics at http://").nth(1) {
                return at.trim_end_matches("/metrics").to_string();
            }
        }
        panic!("tandem ended without naming its metrics address");
    })
    .await
    .expect("the metrics address is logged");
    let addr: std::net::SocketAddr = said.parse().unwrap();
    assert_ne!(addr.port(), 0, "the port bound, not the one asked");
    let client = tandem::http::client(Duration::from_secs(5));
    let url = format!("http://{addr}/metrics");
    let text = common::send(&client, &url, "GET", &[], Bytes::new())
        .await
        .body;
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("tandem_run_info"), "{text}");
    let pid = child.id().unwrap().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    legacy.stop().await;
}
