//! Structural comparison of two JSON documents.

use std::collections::HashSet;

use serde_json::Value;
use serde_json_path::JsonPath;

use super::{Mismatch, MismatchKind};

/// One step into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// Compares `legacy` with `new`, skipping every node that an `ignore` query
/// selects in either document. Key order does not matter, and numbers compare
/// by value (`1` equals `1.0`).
pub fn compare(legacy: &Value, new: &Value, ignore: &[(String, JsonPath)]) -> Vec<Mismatch> {
    let mut walk = Walk {
        ignored: ignored_locations(legacy, new, ignore),
        path: Vec::new(),
        out: Vec::new(),
    };
    walk.value(legacy, new);
    walk.out
}

fn ignored_locations(
    legacy: &Value,
    new: &Value,
    ignore: &[(String, JsonPath)],
) -> HashSet<Vec<Step>> {
    let mut set = HashSet::new();
    for (_, query) in ignore {
        for doc in [legacy, new] {
            for location in query.query_located(doc).locations() {
                let steps = location
                    .iter()
                    .map(|e| match e {
                        serde_json_path::PathElement::Name(n) => Step::Key(n.to_string()),
                        serde_json_path::PathElement::Index(i) => Step::Index(*i),
                    })
                    .collect();
                set.insert(steps);
            }
        }
    }
    set
}

struct Walk {
    ignored: HashSet<Vec<Step>>,
    path: Vec<Step>,
    out: Vec<Mismatch>,
}

impl Walk {
    fn value(&mut self, legacy: &Value, new: &Value) {
        if !self.ignored.is_empty() && self.ignored.contains(&self.path) {
            return;
        }
        match (legacy, new) {
            (Value::Object(l), Value::Object(n)) => {
                for (key, lv) in l {
                    self.path.push(Step::Key(key.clone()));
                    match n.get(key) {
                        Some(nv) => self.value(lv, nv),
                        None => self.report(MismatchKind::MissingField, Some(lv), None),
                    }
                    self.path.pop();
                }
                for (key, nv) in n.iter().filter(|(k, _)| !l.contains_key(*k)) {
                    self.path.push(Step::Key(key.clone()));
                    self.report(MismatchKind::ExtraField, None, Some(nv));
                    self.path.pop();
                }
            }
            (Value::Array(l), Value::Array(n)) => {
                for i in 0..l.len().max(n.len()) {
                    self.path.push(Step::Index(i));
                    match (l.get(i), n.get(i)) {
                        (Some(lv), Some(nv)) => self.value(lv, nv),
                        (Some(lv), None) => self.report(MismatchKind::MissingField, Some(lv), None),
                        (None, nv) => self.report(MismatchKind::ExtraField, None, nv),
                    }
                    self.path.pop();
                }
            }
            (Value::Number(l), Value::Number(n)) => {
                if !numbers_equal(l, n) {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
            _ if kind(legacy) != kind(new) => {
                self.report(MismatchKind::Type, Some(legacy), Some(new));
            }
            _ => {
                if legacy != new {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
        }
    }

    fn report(&mut self, kind: MismatchKind, legacy: Option<&Value>, new: Option<&Value>) {
        if !self.ignored.is_empty() && self.ignored.contains(&self.path) {
            return;
        }
        self.out.push(Mismatch {
            kind,
            path: Some(render_path(&self.path)),
            legacy: legacy.map(super::short_json),
            new: new.map(super::short_json),
            diff: None,
        });
    }
}

fn numbers_equal(l: &serde_json::Number, n: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (l.as_i64(), n.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (l.as_u64(), n.as_u64()) {
        return a == b;
    }
    l.as_f64() == n.as_f64()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `$.items[0].price`, with bracket notation for keys that are not plain names.
fn render_path(path: &[Step]) -> String {
    let mut out = String::from("$");
    for step in path {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k) if is_plain_name(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Key(k) => {
                let quoted = k.replace('\\', "\\\\").replace('\'', "\\'");
                out.push_str(&format!("['{quoted}']"));
            }
        }
    }
    out
}

fn is_plain_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(ms: &[Mismatch]) -> Vec<(MismatchKind, String)> {
        ms.iter()
            .map(|m| (m.kind, m.path.clone().unwrap()))
            .collect()
    }

    #[test]
    fn finds_each_kind_at_its_path() {
        let legacy = json!({"a": 1, "b": {"c": "x", "gone": true}, "n": [1, 2, 3], "t": 5});
        let new = json!({"b": {"c": "y", "more": 1}, "a": 1.0, "n": [1, 2], "t": "5"});
        let found = paths(&compare(&legacy, &new, &[]));
        assert_eq!(
            found,
            vec![
                (MismatchKind::Value, "$.b.c".into()),
                (MismatchKind::MissingField, "$.b.gone".into()),
                (MismatchKind::ExtraField, "$.b.more".into()),
                (MismatchKind::MissingField, "$.n[2]".into()),
                (MismatchKind::Type, "$.t".into()),
            ]
        );
    }

    #[test]
    fn ignore_queries_apply_to_both_sides() {
        let ignore = |q: &str| vec![(q.to_string(), JsonPath::parse(q).unwrap())];
        let legacy = json!({"id": 1, "items": [{"id": "a", "q": 1}], "meta": {"created_at": "t1"}});
        let new = json!({"items": [{"id": "b", "q": 1}], "meta": {"created_at": "t2"}, "id": 2});
        assert_eq!(compare(&legacy, &new, &[]).len(), 3);
        let mut rules = ignore("$.id");
        rules.extend(ignore("$.items[*].id"));
        rules.extend(ignore("$..created_at"));
        assert!(compare(&legacy, &new, &rules).is_empty());
        // A field ignored by rule may be missing on one side.
        let without = json!({"items": [{"id": "b", "q": 1}], "meta": {"created_at": "t"}});
        assert!(compare(&legacy, &without, &rules).is_empty());
    }

    #[test]
    fn odd_keys_are_bracketed() {
        let found = compare(&json!({"a b": 1}), &json!({"a b": 2}), &[]);
        assert_eq!(found[0].path.as_deref(), Some("$['a b']"));
    }
}
