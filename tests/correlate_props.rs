//! Correlation learning as a property: for random id schemes (small
//! integers that collide with quantities and product ids, uuids, prefixed
//! strings, integers above 2^53) and random interleavings of sessions that
//! log in, create a cart and use it, learning recovers every link the
//! generator made and invents none.

mod common;

use std::collections::BTreeSet;

use proptest::prelude::*;
use tandem::capture::{Body, Exchange, Header, Response};
use tandem::correlate::learn;

#[derive(Debug, Clone, Copy)]
enum Scheme {
    /// 1, 2, 3…: the values quantities and product ids also take.
    Counter,
    Uuid,
    Prefixed,
    /// Above 2^53.
    Big,
}

/// The cart id of session `s` in `scheme`, as its JSON value.
fn cart_id(scheme: Scheme, s: usize, salt: u64) -> serde_json::Value {
    match scheme {
        Scheme::Counter => serde_json::json!(s + 1),
        Scheme::Uuid => serde_json::json!(format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            salt as u32,
            s,
            s,
            s,
            salt ^ s as u64
        )),
        Scheme::Prefixed => serde_json::json!(format!("cart_{}", 1000 + s * 7 + salt as usize % 7)),
        Scheme::Big => serde_json::json!((1u64 << 60) + salt * 100 + s as u64),
    }
}

fn plain(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string())
}

fn answer(body: serde_json::Value) -> Option<Response> {
    Some(Response {
        status: 200,
        headers: vec![Header("content-type".into(), "application/json".into())],
        body: Body::from(body.to_string().as_str()),
        latency_us: 50,
        truncated: None,
    })
}

/// Sessions of `uses` requests each after their login and cart, in the
/// interleaving `order` picks (an index into the sessions still going).
fn capture(
    scheme: Scheme,
    sessions: usize,
    uses: usize,
    order: &[usize],
    salt: u64,
) -> Vec<Exchange> {
    let mut next: Vec<usize> = vec![0; sessions];
    let steps = uses + 2;
    let mut out = Vec::new();
    let mut picks = order.iter().cycle();
    while next.iter().any(|&n| n < steps) {
        let open: Vec<usize> = (0..sessions).filter(|&s| next[s] < steps).collect();
        let s = open[picks.next().copied().unwrap_or(0) % open.len()];
        let step = next[s];
        next[s] += 1;
        let id = out.len() as u64 + 1;
        let session = format!("s{s}");
        let token = format!("tok-{salt:016x}-{s:04}-abcdef");
        let cart = cart_id(scheme, s, salt);
        let bearer = ("authorization", format!("Bearer {token}"));
        let mut e = match step {
            0 => {
                let mut e = common::exchange(id, id * 100, &session, "POST", "/login", &[]);
                e.response = answer(serde_json::json!({"token": token}));
                e
            }
            1 => {
                let mut e = common::exchange(id, id * 100, &session, "POST", "/carts", &[bearer]);
                e.response = answer(serde_json::json!({"id": cart, "items": []}));
                e
            }
            k if k % 2 == 0 => {
                let target = format!("/carts/{}", plain(&cart));
                let mut e = common::exchange(id, id * 100, &session, "GET", &target, &[bearer]);
                e.response = answer(serde_json::json!({"id": cart, "items": [{"sku": "x"}]}));
                e
            }
            _ => {
                let target = format!("/carts/{}/items", plain(&cart));
                let mut e = common::exchange(
                    id,
                    id * 100,
                    &session,
                    "POST",
                    &target,
                    &[bearer, ("content-type", "application/json".into())],
                );
                // Independent of everything else: a small generator of its own.
                let noise = (salt ^ id)
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let product = 1 + (noise >> 33) as usize % 40;
                let qty = 1 + (noise >> 17) as usize % 5;
                e.request.body = Body::from(
                    serde_json::json!({"cart_id": cart, "product_id": product, "qty": qty})
                        .to_string()
                        .as_str(),
                );
                e.response = answer(serde_json::json!({"cart": cart, "added": true}));
                e
            }
        };
        e.offset_us = id * 100;
        out.push(e);
    }
    out
}

fn expected() -> BTreeSet<(String, String, String, String)> {
    let link = |p: &str, f: &str, c: &str, t: &str| {
        (p.to_string(), f.to_string(), c.to_string(), t.to_string())
    };
    [
        link("POST /login", "$.token", "POST /carts", "bearer"),
        link("POST /login", "$.token", "GET /carts/{id}", "bearer"),
        link("POST /login", "$.token", "POST /carts/{id}/items", "bearer"),
        link("POST /carts", "$.id", "GET /carts/{id}", "path[1]"),
        link("POST /carts", "$.id", "POST /carts/{id}/items", "path[1]"),
        link("POST /carts", "$.id", "POST /carts/{id}/items", "$.cart_id"),
    ]
    .into_iter()
    .collect()
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![
        Just(Scheme::Counter),
        Just(Scheme::Uuid),
        Just(Scheme::Prefixed),
        Just(Scheme::Big),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn learning_recovers_every_link_and_invents_none(
        scheme in scheme(),
        sessions in 2usize..7,
        uses in 8usize..14,
        order in proptest::collection::vec(0usize..64, 1..40),
        salt in 1u64..1_000_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        common::write_capture(&path, capture(scheme, sessions, uses, &order, salt));
        let correlation = learn(&path, &Default::default()).unwrap();
        let found: BTreeSet<(String, String, String, String)> = correlation
            .links
            .iter()
            .map(|l| (l.producer.clone(), l.from.to_string(), l.consumer.clone(), l.to.to_string()))
            .collect();
        prop_assert_eq!(found, expected());
        // Every use of a cart id points at the exchange that created it.
        for use_ in (1..=(sessions * (uses + 2)) as u64).flat_map(|id| correlation.used_by(id).to_vec()) {
            prop_assert!(correlation.produced_by(use_.producer).iter().any(|(_, v)| *v == use_.recorded));
        }
    }
}
