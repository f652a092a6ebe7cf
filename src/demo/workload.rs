//! The demo's generated workload: a few thousand order-API requests from
//! many users, sent at a steady rate through the recording proxy. Each user
//! logs in first and sends every later request with its token; users create
//! orders and then read, pay or cancel what they created, so the capture
//! holds the chains that make replay stateful.

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
    /// Path and query; `{order:K}` stands for the id of the K-th order this
    /// user created, known only once the stack has answered.
    pub target: String,
    /// JSON body, empty for reads.
    pub body: String,
}

/// What the generator knows of a user's own orders.
#[derive(Clone, Copy, PartialEq)]
enum Mine {
    Created,
    Done,
}

/// The calls of a workload, deterministic for a seed. Each user logs in
/// first. Reads of seeded orders touch only the read-only ones, each
/// payable seeded order is paid at most once, users pay or cancel only
/// their own open orders, and new orders belong to customers nobody lists,
/// so the answers do not depend on the order in which users are served.
pub fn generate(requests: usize, users: usize, seed: u64) -> Vec<Call> {
    let users = users.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut payable: Vec<u64> = (LAST_READ_ORDER + 1..=LAST_ORDER).collect();
    payable.shuffle(&mut rng);
    let mut mine: Vec<Vec<Mine>> = vec![Vec::new(); users];
    let mut calls: Vec<Call> = (0..users.min(requests))
        .map(|user| Call {
            user,
            method: "POST",
            target: "/api/login".into(),
            body: serde_json::json!({"user": format!("u{user}")}).to_string(),
        })
        .collect();
    while calls.len() < requests {
        let user = rng.gen_range(0..users);
        let (method, target, body) = pick(&mut rng, &mut payable, &mut mine[user]);
        calls.push(Call {
            user,
            method,
            target,
            body,
        });
    }
    calls
}

fn pick(
    rng: &mut StdRng,
    payable: &mut Vec<u64>,
    mine: &mut Vec<Mine>,
) -> (&'static str, String, String) {
    let product = rng.gen_range(1..=PRODUCTS);
    let order = rng.gen_range(FIRST_ORDER..=LAST_READ_ORDER);
    let open = mine.iter().rposition(|m| *m == Mine::Created);
    let latest = mine.len().checked_sub(1);
    match rng.gen_range(0..100) {
        0..=21 => ("GET", format!("/api/products/{product}"), String::new()),
        22..=29 => ("GET", "/api/products".to_string(), String::new()),
        30..=49 => ("GET", format!("/api/orders/{order}"), String::new()),
        50..=56 => {
            let customer = rng.gen_range(1..=READ_CUSTOMERS);
            (
                "GET",
                format!("/api/orders?customer=c{customer}"),
                String::new(),
            )
        }
        57..=68 => {
            mine.push(Mine::Created);
            ("POST", "/api/orders".to_string(), new_order(rng))
        }
        69..=72 => ("POST", "/api/orders".to_string(), bad_order(rng)),
        73..=82 if latest.is_some() => {
            let k = latest.expect("guarded");
            ("GET", format!("/api/orders/{{order:{k}}}"), String::new())
        }
        83..=90 if open.is_some() => {
            let k = open.expect("guarded");
            mine[k] = Mine::Done;
            (
                "POST",
                format!("/api/orders/{{order:{k}}}/pay"),
                String::new(),
            )
        }
        91..=94 if open.is_some() => {
            let k = open.expect("guarded");
            mine[k] = Mine::Done;
            (
                "POST",
                format!("/api/orders/{{order:{k}}}/cancel"),
                String::new(),
            )
        }
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

/// What a user has been given by the stack: its token, and the ids of the
/// orders it created.
#[derive(Default)]
struct Session {
    token: Option<String>,
    orders: Vec<Option<String>>,
}

/// Sends `calls` to `base_url` at `rate` requests per second, each user
/// sending its calls in order on its own keep-alive connection, with the
/// token and order ids the stack gave it.
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
            let mut session = Session::default();
            for (at, call) in calls {
                tokio::time::sleep_until(start + at).await;
                match send(&client, &target, &call, &mut session).await {
                    true => driven.answered += 1,
                    false => driven.failed += 1,
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

/// `target` with `{order:K}` replaced by the K-th created order's id.
fn resolved(target: &str, session: &Session) -> String {
    let Some(start) = target.find("{order:") else {
        return target.to_string();
    };
    let end = start + target[start..].find('}').unwrap_or(0);
    let k: usize = target[start + 7..end].parse().unwrap_or(usize::MAX);
    let id = session
        .orders
        .get(k)
        .cloned()
        .flatten()
        .unwrap_or_else(|| "0".into());
    format!("{}{id}{}", &target[..start], &target[end + 1..])
}

async fn send(
    client: &http::Client,
    target: &crate::target::Target,
    call: &Call,
    session: &mut Session,
) -> bool {
    let Ok(uri) = target.uri_for(&resolved(&call.target, session)) else {
        return false;
    };
    let mut builder = Request::builder()
        .method(call.method)
        .uri(uri)
        .header("x-demo-user", format!("u{}", call.user));
    if let Some(token) = &session.token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if !call.body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    let Ok(req) = builder.body(Full::new(Bytes::from(call.body.clone()))) else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let response = client.request(req).await.ok()?;
        let ok = response.status().is_success();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((ok, body))
    });
    let Ok(Some((ok, body))) = answer.await else {
        return false;
    };
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match (call.method, call.target.as_str()) {
        ("POST", "/api/login") => session.token = value["token"].as_str().map(str::to_string),
        ("POST", "/api/orders") if call.body.contains("\"qty\":") && !is_bad(&call.body) => {
            // The id as the stack wrote it: digits, whatever their size.
            session.orders.push(
                ok.then(|| value["id"].to_string())
                    .filter(|id| id != "null"),
            );
        }
        _ => {}
    }
    true
}

/// An order the generator meant to be refused.
fn is_bad(body: &str) -> bool {
    body.contains("\"items\":[]") || body.contains("\"qty\":0")
}
