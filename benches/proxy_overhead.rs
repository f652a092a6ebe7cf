//! What the recording proxy adds to each request on loopback, and what
//! shadowing adds beside it.
//!
//! Sends the same sequence of requests to a demo stack directly, through
//! `tandem record`'s proxy, and through `tandem shadow` mirroring to a new
//! stack that takes 5 s to answer (its queue fills, copies are dropped),
//! interleaved so that all three see the same machine noise, and prints the
//! latency percentiles side by side with the differences. The target for
//! shadow: p99 within 50 µs of record's. Run: `cargo bench --bench
//! proxy_overhead [-- REQUESTS]`.

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

    let (shadow_url, stop_shadow, shadowing) = shadow_proxy(&stack.url(), dir.path()).await?;

    let client = tandem::http::client(Duration::from_secs(5));
    let (mut direct, mut proxied, mut shadowed) =
        (Latency::default(), Latency::default(), Latency::default());
    let paths = ["/api/products/7", "/api/orders/1042", "/api/products"];
    // Warm every path's connections first.
    for base in [&stack.url(), &proxy_url, &shadow_url] {
        timed(&client, base, paths[0]).await?;
    }
    for i in 0..requests {
        let path = paths[i % paths.len()];
        direct.record(timed(&client, &stack.url(), path).await?);
        proxied.record(timed(&client, &proxy_url, path).await?);
        shadowed.record(timed(&client, &shadow_url, path).await?);
    }
    let _ = stop.send(());
    let recorded = proxy.await??;
    let _ = stop_shadow.send(());
    let shadow_summary = shadowing.await??;

    let (d, p, s) = (direct.summary(), proxied.summary(), shadowed.summary());
    println!("proxy overhead, {requests} sequential requests each way, keep-alive, loopback");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p90", "p99", "p99.9"
    );
    for (name, s) in [("direct", &d), ("proxied", &p), ("shadowed", &s)] {
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
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "shadow-rec",
        added(s.p50, p.p50),
        added(s.p90, p.p90),
        added(s.p99, p.p99),
        added(s.p999, p.p999)
    );
    println!(
        "recorded {} exchanges; shadow mirrored {} and dropped {} (the new stack takes 5 s); \
         shadow p99 {} record's: target within 50µs: {}",
        recorded.exchanges,
        shadow_summary.mirrored,
        shadow_summary.dropped,
        if s.p99 >= p.p99 {
            format!("{} above", human(s.p99 - p.p99))
        } else {
            format!("{} below", human(p.p99 - s.p99))
        },
        if s.p99 <= p.p99 + 50 {
            "met"
        } else {
            "NOT met"
        }
    );
    stack.stop().await;
    Ok(())
}

type Shadowing = tokio::task::JoinHandle<anyhow::Result<tandem::shadow::ShadowSummary>>;

/// `tandem shadow` in front of `legacy`, mirroring to a new stack that
/// takes 5 s to answer.
async fn shadow_proxy(
    legacy: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>, Shadowing)> {
    let slow = TcpListener::bind("127.0.0.1:0").await?;
    let new = format!("http://{}", slow.local_addr()?);
    tokio::spawn(tandem::server::serve(
        slow,
        None,
        |_req: hyper::Request<hyper::body::Incoming>, _peer| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            hyper::Response::new(Full::new(Bytes::from_static(b"{}")))
        },
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let proxy = ProxyConfig {
        timeout: Duration::from_secs(5),
        drain: Duration::from_secs(2),
        ..ProxyConfig::new(listener, legacy.parse()?)
    };
    let out = dir.join("shadow");
    std::fs::create_dir_all(&out)?;
    let sink = Sink::create(
        &out.join("served.jsonl"),
        &proxy.source(),
        Default::default(),
        Default::default(),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = tandem::shadow::ShadowConfig {
        proxy,
        sink,
        new: new.parse()?,
        legacy2: None,
        judge: Default::default(),
        mirror_writes: false,
        header: ("x-tandem-shadow".into(), "1".into()),
        sample_percent: 100.0,
        queue: 10_000,
        max_in_flight: 256,
        timeout: Duration::from_secs(10),
        drain: Duration::from_secs(1),
        out_dir: out,
        kill_switch: None,
        report_every: None,
        results_max_bytes: u64::MAX,
        follow: tandem::shadow::Following::Off,
        gates: Vec::new(),
    };
    let run = tokio::spawn(tandem::shadow::shadow(config, async {
        let _ = stopped.await;
    }));
    Ok((url, stop, run))
}

async fn timed(client: &tandem::http::Client, base: &str, path: &str) -> anyhow::Result<u64> {
    let req = Request::get(format!("{base}{path}")).body(Full::new(Bytes::new()))?;
    let start = Instant::now();
    let response = client.request(req).await?;
    response.into_body().collect().await?;
    Ok(start.elapsed().as_micros() as u64)
}
