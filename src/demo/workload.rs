//! The demo's generated workload: a few thousand order-API requests from
//! many users, sent at a steady rate through the recording proxy.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::stack::{FIRST_ORDER, LAST_ORDER, LAST_READ_ORDER, PRODUCTS, READ_CUSTOMERS};
use crate::http;

/// One request of the workload.
#[derive(Debug, Clone)]
pub struct Call {
    /// Which simulated user sends it.
    pub user: usize,
    /// Method.
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// JSON body, empty for reads.
    pub body: String,
}

/// The calls of a workload, deterministic for a seed. Reads touch only the
/// read-only orders, pays each payable order at most once, and new orders
/// belong to customers nobody lists, so the answers do not depend on the
/// order in which requests are served.
pub fn generate(requests: usize, users: usize, seed: u64) -> Vec<Call> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut payable: Vec<u64> = (LAST_READ_ORDER + 1..=LAST_ORDER).collect();
    payable.shuffle(&mut rng);
    (0..requests)
        .map(|_| {
            let user = rng.gen_range(0..users.max(1));
            let (method, target, body) = pick(&mut rng, &mut payable);
            Call {
                user,
                method,
                target,
                body,
            }
        })
        .collect()
}

fn pick(rng: &mut StdRng, payable: &mut Vec<u64>) -> (&'static str, String, String) {
    let product = rng.gen_range(1..=PRODUCTS);
    let order = rng.gen_range(FIRST_ORDER..=LAST_READ_ORDER);
    match rng.gen_range(0..100) {
        0..=24 => ("GET", format!("/api/products/{product}"), String::new()),
        25..=34 => ("GET", "/api/products".to_string(), String::new()),
        35..=59 => ("GET", format!("/api/orders/{order}"), String::new()),
        60..=69 => {
            let customer = rng.gen_range(1..=READ_CUSTOMERS);
            (
                "GET",
                format!("/api/orders?customer=c{customer}"),
                String::new(),
            )
        }
        70..=84 => ("POST", "/api/orders".to_string(), new_order(rng)),
        85..=89 => ("POST", "/api/orders".to_string(), bad_order(rng)),
        _ => match payable.pop() {
            Some(order) => ("POST", format!("/api/orders/{order}/pay"), String::new()),
            None => ("GET", format!("/api/products/{product}"), String::new()),
        },
    }
}

fn new_order(rng: &mut StdRng) -> String {
    let lines = rng.gen_range(1..=3);
    let items: Vec<serde_json::Value> = (0..lines)
        .map(|_| serde_json::json!({"product_id": rng.gen_range(1..=PRODUCTS), "qty": rng.gen_range(1..=5)}))
        .collect();
    let customer = format!("guest{}", rng.gen_range(1..10_000));
    serde_json::json!({"customer": customer, "items": items}).to_string()
}

fn bad_order(rng: &mut StdRng) -> String {
    let customer = format!("guest{}", rng.gen_range(1..10_000));
    match rng.gen_range(0..3) {
        // No items: the route where the new stack answers 422.
        0 | 1 => serde_json::json!({"customer": customer, "items": []}).to_string(),
        _ => serde_json::json!({"customer": customer, "items": [{"product_id": 1, "qty": 0}]})
            .to_string(),
    }
}

/// How a workload run went.
#[derive(Debug, Clone, Default)]
pub struct Driven {
    /// Requests answered (any status).
    pub answered: u64,
    /// Requests that got no answer.
    pub failed: u64,
}

/// Sends `calls` to `base_url` at `rate` requests per second, each user
/// sending its calls in order on its own keep-alive connection.
pub async fn drive(base_url: &str, calls: Vec<Call>, rate: f64) -> anyhow::Result<Driven> {
    let target: crate::target::Target = base_url.parse()?;
    let users = calls.iter().map(|c| c.user).max().map_or(0, |m| m + 1);
    let mut per_user: Vec<Vec<(Duration, Call)>> = vec![Vec::new(); users];
    for (i, call) in calls.into_iter().enumerate() {
        let at = Duration::from_secs_f64(i as f64 / rate);
        per_user[call.user].push((at, call));
    }
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for calls in per_user {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let client = http::client(Duration::from_secs(5));
            let mut driven = Driven::default();
            for (at, call) in calls {
                tokio::time::sleep_until(start + at).await;
                let ok = send(&client, &target, &call).await;
                if ok {
                    driven.answered += 1
                } else {
                    driven.failed += 1
                }
            }
            driven
        }));
    }
    let mut total = Driven::default();
    for task in tasks {
        let driven = task.await?;
        total.answered += driven.answered;
        total.failed += driven.failed;
    }
    Ok(total)
}

async fn send(client: &http::Client, target: &crate::target::Target, call: &Call) -> bool {
    let Ok(uri) = target.uri_for(&call.target) else {
        return false;
    };
    let mut builder = Request::builder()
        .method(call.method)
        .uri(uri)
        .header("x-demo-user", format!("u{}", call.user))
        .header("authorization", "Bearer demo-secret-token");
    if !call.body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    let Ok(req) = builder.body(Full::new(Bytes::from(call.body.clone()))) else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let response = client.request(req).await.ok()?;
        response.into_body().collect().await.ok()
    });
    matches!(answer.await, Ok(Some(_)))
}
