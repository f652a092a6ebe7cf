//! Structural comparison of two JSON documents.
//!
//! Rules select nodes with JSONPath queries; the nodes they select are
//! remembered by identity (their address in the parsed document), so that the
//! walk asks "is this node ignored?" with a binary search instead of hashing
//! its path at every node.

use serde_json::Value;
use serde_json_path::JsonPath;

use super::rules::RouteRules;
use super::{Mismatch, MismatchKind};

/// One step into a JSON document, borrowing the key from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Nodes a rule selected, by address, each with the rule's index.
#[derive(Default)]
struct Marks(Vec<(usize, usize)>);

impl Marks {
    fn add(&mut self, node: &Value, rule: usize) {
        self.0.push((node as *const Value as usize, rule));
    }

    fn seal(&mut self) {
        self.0.sort_unstable();
    }

    fn get(&self, node: &Value) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        let at = node as *const Value as usize;
        self.0
            .binary_search_by_key(&at, |&(a, _)| a)
            .ok()
            .map(|i| self.0[i].1)
    }

    fn has(&self, node: &Value) -> bool {
        self.get(node).is_some()
    }
}

/// Compares `legacy` with `new` under `rules`: nodes an ignore query selects
/// in either document are skipped; arrays named unordered are compared as
/// multisets (matched by key when one is given); numbers under a tolerance
/// and values of a named kind compare equal. Key order never matters, and
/// numbers compare by value (`1` equals `1.0`).
pub fn compare(legacy: &Value, new: &Value, rules: &RouteRules) -> Vec<Mismatch> {
    let mut walk = Walk {
        ignored: Marks::default(),
        unordered: Marks::default(),
        tolerance: Marks::default(),
        same_kind: Marks::default(),
        rules,
        path: Vec::new(),
        out: Vec::new(),
    };
    for (i, item) in rules.ignore_paths.iter().enumerate() {
        mark(&item.rule, i, legacy, new, &mut walk.ignored, || item.hit());
    }
    for (i, item) in rules.unordered.iter().enumerate() {
        mark(&item.rule.path, i, legacy, new, &mut walk.unordered, || {
            item.hit()
        });
    }
    for (i, item) in rules.tolerance.iter().enumerate() {
        mark(&item.rule.path, i, legacy, new, &mut walk.tolerance, || {});
    }
    for (i, item) in rules.same_kind.iter().enumerate() {
        mark(&item.rule.path, i, legacy, new, &mut walk.same_kind, || {});
    }
    for marks in [
        &mut walk.ignored,
        &mut walk.unordered,
        &mut walk.tolerance,
        &mut walk.same_kind,
    ] {
        marks.seal();
    }
    walk.value(legacy, new);
    walk.out
}

/// Marks the nodes `query` selects in either document with `rule`; `hit`
/// runs once if anything is selected.
fn mark(
    query: &JsonPath,
    rule: usize,
    legacy: &Value,
    new: &Value,
    marks: &mut Marks,
    hit: impl Fn(),
) {
    let before = marks.0.len();
    for doc in [legacy, new] {
        for node in query.query(doc).all() {
            marks.add(node, rule);
        }
    }
    if marks.0.len() > before {
        hit();
    }
}

struct Walk<'r, 'a> {
    ignored: Marks,
    unordered: Marks,
    tolerance: Marks,
    same_kind: Marks,
    rules: &'r RouteRules,
    path: Vec<Step<'a>>,
    out: Vec<Mismatch>,
}

impl<'a> Walk<'_, 'a> {
    fn value(&mut self, legacy: &'a Value, new: &'a Value) {
        if self.ignored.has(legacy) || self.ignored.has(new) {
            return;
        }
        match (legacy, new) {
            (Value::Object(l), Value::Object(n)) => {
                for (key, lv) in l {
                    self.path.push(Step::Key(key));
                    match n.get(key) {
                        Some(nv) => self.value(lv, nv),
                        None => self.report(MismatchKind::MissingField, Some(lv), None),
                    }
                    self.path.pop();
                }
                for (key, nv) in n.iter().filter(|(k, _)| !l.contains_key(*k)) {
                    self.path.push(Step::Key(key));
                    self.report(MismatchKind::ExtraField, None, Some(nv));
                    self.path.pop();
                }
            }
            (Value::Array(l), Value::Array(n)) => {
                match self.unordered.get(legacy).or(self.unordered.get(new)) {
                    Some(rule) => self.unordered_arrays(l, n, rule),
                    None => self.ordered_arrays(l, n),
                }
            }
            (Value::Number(l), Value::Number(n)) => {
                if !numbers_equal(l, n)
                    && !self.within_tolerance(legacy, new)
                    && !self.same_kind(legacy, new)
                {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
            _ if kind(legacy) != kind(new) => {
                if !self.same_kind(legacy, new) {
                    self.report(MismatchKind::Type, Some(legacy), Some(new));
                }
            }
            _ => {
                if legacy != new && !self.same_kind(legacy, new) {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
        }
    }

    fn ordered_arrays(&mut self, l: &'a [Value], n: &'a [Value]) {
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

    /// Arrays as multisets: each legacy element is matched with a new one
    /// (by key, or by comparing equal under the rules); what is left over
    /// on either side is missing or extra.
    fn unordered_arrays(&mut self, l: &'a [Value], n: &'a [Value], rule: usize) {
        let key = self.rules.unordered[rule].rule.key.clone();
        let mut used = vec![false; n.len()];
        for (i, lv) in l.iter().enumerate() {
            self.path.push(Step::Index(i));
            let partner = match &key {
                Some(key) => {
                    let id = lv.get(key);
                    (0..n.len()).find(|&j| !used[j] && id.is_some() && n[j].get(key) == id)
                }
                None => (0..n.len()).find(|&j| !used[j] && self.equal_here(lv, &n[j])),
            };
            match partner {
                Some(j) => {
                    used[j] = true;
                    if key.is_some() {
                        self.value(lv, &n[j]);
                    }
                }
                None => self.report(MismatchKind::MissingField, Some(lv), None),
            }
            self.path.pop();
        }
        for (j, nv) in n.iter().enumerate().filter(|(j, _)| !used[*j]) {
            self.path.push(Step::Index(j));
            self.report(MismatchKind::ExtraField, None, Some(nv));
            self.path.pop();
        }
    }

    /// True when the two values compare equal at the current path.
    fn equal_here(&mut self, l: &'a Value, n: &'a Value) -> bool {
        let before = self.out.len();
        self.value(l, n);
        let equal = self.out.len() == before;
        self.out.truncate(before);
        equal
    }

    fn within_tolerance(&self, l: &Value, n: &Value) -> bool {
        let Some(rule) = self.tolerance.get(l).or(self.tolerance.get(n)) else {
            return false;
        };
        let item = &self.rules.tolerance[rule];
        let ok = match (l.as_f64(), n.as_f64()) {
            (Some(a), Some(b)) => item.rule.accepts(a, b),
            _ => false,
        };
        if ok {
            item.hit();
        }
        ok
    }

    fn same_kind(&self, l: &Value, n: &Value) -> bool {
        let Some(rule) = self.same_kind.get(l).or(self.same_kind.get(n)) else {
            return false;
        };
        let item = &self.rules.same_kind[rule];
        let ok = item.rule.kind.holds(l) && item.rule.kind.holds(n);
        if ok {
            item.hit();
        }
        ok
    }

    fn report(&mut self, kind: MismatchKind, legacy: Option<&Value>, new: Option<&Value>) {
        if legacy.is_some_and(|v| self.ignored.has(v)) || new.is_some_and(|v| self.ignored.has(v)) {
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

    fn rules(text: &str) -> std::sync::Arc<RouteRules> {
        crate::diff::RuleSet::parse(text)
            .unwrap()
            .for_route(&crate::route::Route::of("GET", "/x"))
    }

    fn plain(legacy: &Value, new: &Value) -> Vec<Mismatch> {
        compare(legacy, new, &RouteRules::default())
    }

    fn paths(ms: &[Mismatch]) -> Vec<(MismatchKind, String)> {
        ms.iter()
            .map(|m| (m.kind, m.path.clone().unwrap()))
            .collect()
    }

    #[test]
    fn finds_each_kind_at_its_path() {
        let legacy = json!({"a": 1, "b": {"c": "x", "gone": true}, "n": [1, 2, 3], "t": 5});
        let new = json!({"b": {"c": "y", "more": 1}, "a": 1.0, "n": [1, 2], "t": "5"});
        let found = paths(&plain(&legacy, &new));
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
        let legacy = json!({"id": 1, "items": [{"id": "a", "q": 1}], "meta": {"created_at": "t1"}});
        let new = json!({"items": [{"id": "b", "q": 1}], "meta": {"created_at": "t2"}, "id": 2});
        assert_eq!(plain(&legacy, &new).len(), 3);
        let r = rules(
            r#"[defaults]
            ignore_paths = ["$.id", "$.items[*].id", "$..created_at"]"#,
        );
        assert!(compare(&legacy, &new, &r).is_empty());
        // A field ignored by rule may be missing on one side.
        let without = json!({"items": [{"id": "b", "q": 1}], "meta": {"created_at": "t"}});
        assert!(compare(&legacy, &without, &r).is_empty());
    }

    #[test]
    fn unordered_arrays_by_key_and_by_value() {
        let legacy =
            json!({"items": [{"sku": "a", "q": 1}, {"sku": "b", "q": 2}], "tags": ["x", "y", "z"]});
        let new =
            json!({"items": [{"sku": "b", "q": 3}, {"sku": "a", "q": 1}], "tags": ["z", "x", "w"]});
        let r = rules(
            r#"[defaults]
            unordered_arrays = [{ path = "$.items", key = "sku" }, { path = "$.tags" }]"#,
        );
        let found = paths(&compare(&legacy, &new, &r));
        assert_eq!(
            found,
            vec![
                (MismatchKind::Value, "$.items[1].q".into()),
                (MismatchKind::MissingField, "$.tags[1]".into()),
                (MismatchKind::ExtraField, "$.tags[2]".into()),
            ]
        );
        assert_eq!(
            paths(&plain(&legacy, &new)).len(),
            7,
            "in order, every element differs"
        );
    }

    #[test]
    fn tolerance_and_same_kind() {
        let legacy = json!({"total": 10.00, "rate": 1000.0, "id": "3f2a9c1e-9b7d-4c2a-8e1f-0123456789ab", "at": "2026-01-01T00:00:00Z"});
        let new = json!({"total": 10.004, "rate": 1000.9, "id": "0b1c2d3e-9b7d-4c2a-8e1f-0123456789ab", "at": "2026-11-22T03:40:00.5+01:00"});
        assert_eq!(plain(&legacy, &new).len(), 4);
        let r = rules(
            r#"[defaults]
            tolerance = [{ path = "$.total", absolute = 0.005 }, { path = "$.rate", relative = 0.001 }]
            same_kind = [{ path = "$.id", kind = "uuid" }, { path = "$.at", kind = "timestamp" }]"#,
        );
        assert!(compare(&legacy, &new, &r).is_empty());
        let far = json!({"total": 10.02, "rate": 1002.0, "id": 7, "at": "soon"});
        assert_eq!(
            compare(&legacy, &far, &r).len(),
            4,
            "outside the margins, other kinds"
        );
    }

    #[test]
    fn odd_keys_are_bracketed() {
        let found = plain(&json!({"a b": 1}), &json!({"a b": 2}));
        assert_eq!(found[0].path.as_deref(), Some("$['a b']"));
    }
}
