//! What the recording proxy adds to each request on loopback.
//!
//! Sends the same sequence of requests to a demo stack directly and through
//! `tandem record`'s proxy, interleaved so that both see the same machine
//! noise, and prints the latency percentiles side by side with the
//! difference. Run: `cargo bench --bench proxy_overhead [-- REQUESTS]`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tandem::demo::{self, Flavor};
use tandem::latency::{human, Latency};
use tandem::record::{record_proxy, ProxyConfig, Sink};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let stack = demo::start(Flavor::Legacy).await?;
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_url = format!("http://{}", listener.local_addr()?);
    let config = ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        ..ProxyConfig::new(listener, stack.url().parse()?)
    };
    let sink = Sink::create(
        &dir.path().join("bench.jsonl"),
        &config.source(),
        Default::default(),
        Default::default(),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(record_proxy(config, sink, async {
        let _ = stopped.await;
    }));

    let client = tandem::http::client(Duration::from_secs(5));
    let (mut direct, mut proxied) = (Latency::default(), Latency::default());
    let paths = ["/api/products/7", "/api/orders/1042", "/api/products"];
    // Warm both paths' connections first.
    for base in [&stack.url(), &proxy_url] {
        timed(&client, base, paths[0]).await?;
    }
    for i in 0..requests {
        let path = paths[i % paths.len()];
        direct.record(timed(&client, &stack.url(), path).await?);
        proxied.record(timed(&client, &proxy_url, path).await?);
    }
    let _ = stop.send(());
    let recorded = proxy.await??;

    let (d, p) = (direct.summary(), proxied.summary());
    println!("proxy overhead, {requests} sequential requests each way, keep-alive, loopback");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p90", "p99", "p99.9"
    );
    for (name, s) in [("direct", &d), ("proxied", &p)] {
        println!(
            "{name:<10} {:>10} {:>10} {:>10} {:>10}",
            human(s.p50),
            human(s.p90),
            human(s.p99),
            human(s.p999)
        );
    }
    let added = |a: u64, b: u64| human(a.saturating_sub(b));
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "added",
        added(p.p50, d.p50),
        added(p.p90, d.p90),
        added(p.p99, d.p99),
        added(p.p999, d.p999)
    );
    println!("recorded {} exchanges", recorded.exchanges);
    stack.stop().await;
    Ok(())
}

async fn timed(client: &tandem::http::Client, base: &str, path: &str) -> anyhow::Result<u64> {
    let req = Request::get(format!("{base}{path}")).body(Full::new(Bytes::new()))?;
    let start = Instant::now();
    let response = client.request(req).await?;
    response.into_body().collect().await?;
    Ok(start.elapsed().as_micros() as u64)
}
