//! Properties of the JSON differ (proptest).

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use tandem::capture::{Body, Header, Response};
use tandem::diff::{Differ, MismatchKind};
use tandem::route::Route;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(|n| Value::Number(n.into())),
        (-1e6f64..1e6).prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9 é\"\\\\]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The same document spelled differently: keys in reverse order, integers
/// written as floats where exact.
fn respelled(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m.iter().rev() {
                out.insert(k.clone(), respelled(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(respelled).collect()),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.abs() < (1 << 52) => Value::Number(Number::from_f64(i as f64).unwrap()),
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

fn response(body: String) -> Response {
    Response {
        status: 200,
        headers: vec![Header("content-type".into(), "application/json".into())],
        body: Body::from(body.as_str()),
        latency_us: 0,
        truncated: None,
    }
}

/// Every leaf of `v` with its JSON path.
fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                leaves(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push((path, v.clone())),
    }
}

fn replace_at(v: &mut Value, path: &str, new: Value) {
    let mut node = v;
    let mut rest = path.strip_prefix('$').unwrap();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            node = node.get_mut(&r[..end]).unwrap();
            rest = &r[end..];
        } else {
            let end = rest.find(']').unwrap();
            let i: usize = rest[1..end].parse().unwrap();
            node = node.get_mut(i).unwrap();
            rest = &rest[end + 1..];
        }
    }
    *node = new;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_document_equals_itself_however_spelled(v in json()) {
        let compact = serde_json::to_string(&v).unwrap();
        let pretty = serde_json::to_string_pretty(&respelled(&v)).unwrap();
        let route = Route::of("GET", "/x");
        let found = Differ::default().compare(&route, &response(compact), &response(pretty));
        prop_assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn an_injected_difference_is_found_at_its_path(v in json(), pick in any::<prop::sample::Index>()) {
        let mut all = Vec::new();
        leaves(&v, "$".into(), &mut all);
        let (path, old) = pick.get(&all).clone();
        let (changed, kind) = match &old {
            Value::Bool(b) => (Value::Bool(!b), MismatchKind::Value),
            Value::Number(n) => (Value::from(n.as_f64().unwrap() + 1.5), MismatchKind::Value),
            Value::String(s) => (Value::String(format!("{s}!")), MismatchKind::Value),
            _ => (Value::from(7), MismatchKind::Type),
        };
        let mut other = v.clone();
        replace_at(&mut other, &path, changed);
        let route = Route::of("GET", "/x");
        let found = Differ::default().compare(
            &route,
            &response(serde_json::to_string(&v).unwrap()),
            &response(serde_json::to_string(&other).unwrap()),
        );
        prop_assert_eq!(found.len(), 1, "{:?}", found);
        prop_assert_eq!(found[0].kind, kind);
        prop_assert_eq!(found[0].path.as_deref(), Some(path.as_str()));
    }
}
