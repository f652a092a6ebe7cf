//! Differ throughput: answer pairs compared per second on one core, for
//! 1 KB and 64 KB JSON bodies, with a rules file in force and real
//! differences in every pair. Beside it, in the same run, the cost of only
//! parsing both bodies with serde_json (the floor any JSON differ pays), and
//! the process's peak memory.
//!
//! Run: `cargo bench --bench differ`.

use std::time::{Duration, Instant};

// The allocator of the tandem binary, so that figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::{json, Value};
use tandem::capture::{Body, Header, Response};
use tandem::diff::{Differ, RuleSet};
use tandem::route::Route;

const RULES: &str = r#"
[[route]]
match = "GET /api/orders"
ignore_paths = ["$.generated_at", "$.orders[*].created_at"]
tolerance = [{ path = "$.orders[*].total", absolute = 0.005 }]
"#;

fn order(i: usize, variant: bool) -> Value {
    json!({
        "id": 1000 + i,
        "customer": format!("c{}", i % 30),
        "status": if variant && i % 7 == 3 { "paid" } else { "created" },
        "created_at": format!("2026-03-{:02}T10:00:00Z", 1 + (i + variant as usize) % 28),
        "total": 19.99 * (i % 5 + 1) as f64 + if variant { 0.001 } else { 0.0 },
        "items": [{"product_id": i % 40, "qty": 1 + i % 3, "unit_price": 19.99}],
    })
}

/// A list of `n` orders; the variant differs in noise (ignored), within
/// tolerance, and really (status of one order in seven, a missing field).
fn document(n: usize, variant: bool) -> Vec<u8> {
    let orders: Vec<Value> = (0..n).map(|i| order(i, variant)).collect();
    let mut doc =
        json!({"orders": orders, "count": n, "generated_at": if variant { "t2" } else { "t1" }});
    if variant {
        doc.as_object_mut().unwrap().remove("count");
    }
    serde_json::to_vec(&doc).unwrap()
}

fn response(body: Vec<u8>) -> Response {
    Response {
        status: 200,
        headers: vec![Header("content-type".into(), "application/json".into())],
        body: Body(body.into()),
        latency_us: 0,
        truncated: None,
    }
}

/// Runs `f` for about two seconds; returns calls per second.
fn rate(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let (start, mut calls, mut found) = (Instant::now(), 0u64, 0);
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..64 {
            found = f();
        }
        calls += 64;
    }
    (calls as f64 / start.elapsed().as_secs_f64(), found)
}

fn main() {
    let route = Route::of("GET", "/api/orders");
    println!("differ throughput, one core, rules in force, differences in every pair");
    println!(
        "{:<8} {:>14} {:>14} {:>10} {:>12}",
        "body", "pairs/s", "parse only/s", "ratio", "mismatches"
    );
    for orders in [5usize, 420] {
        let (a, b) = (document(orders, false), document(orders, true));
        let size = (a.len() + 512) / 1024;
        let (legacy, new) = (response(a.clone()), response(b.clone()));
        let mut differ = Differ::new(RuleSet::parse(RULES).unwrap());
        let (pairs, found) = rate(|| differ.compare(&route, &legacy, &new).len());
        let (parses, _) = rate(|| {
            let l: Value = serde_json::from_slice(&a).unwrap();
            let n: Value = serde_json::from_slice(&b).unwrap();
            l.is_object() as usize + n.is_object() as usize
        });
        println!(
            "{:<8} {pairs:>14.0} {parses:>14.0} {:>10.2} {found:>12}",
            format!("{size} KB"),
            pairs / parses
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?");
    println!("peak memory: {}", peak.trim_start_matches("VmHWM:").trim());
}
