//! Structural comparison of two JSON documents held on one [`Tape`].
//!
//! Rules select nodes with JSONPath queries; the nodes they select are
//! remembered by identity (their index on the tape), so that the walk asks
//! "is this node ignored?" with a binary search instead of hashing its path
//! at every node.

use super::query::Query;
use super::rules::RouteRules;
use super::tape::{Node, StaticNode, Tape};
use super::{Mismatch, MismatchKind};

/// One step into a JSON document, borrowing the key from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A list of a route's rules that comparing documents applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleList {
    IgnorePaths,
    UnorderedArrays,
    Tolerance,
    SameKind,
}

/// The rules one comparison applied, and how often: what comparing the
/// same two documents under the same rules would count again.
#[derive(Debug, Default, Clone)]
pub struct Hits(Vec<(RuleList, usize, u64)>);

impl Hits {
    /// Counts a use of rule `index` of `list` in `rules`, and keeps it.
    fn count(&mut self, rules: &RouteRules, list: RuleList, index: usize) {
        Hits::item_hit(rules, list, index, 1);
        match self
            .0
            .iter_mut()
            .find(|(l, i, _)| (*l, *i) == (list, index))
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((list, index, 1)),
        }
    }

    /// Counts every use again on `rules`, those the documents were
    /// compared under.
    pub fn replay(&self, rules: &RouteRules) {
        for &(list, index, n) in &self.0 {
            Hits::item_hit(rules, list, index, n);
        }
    }

    fn item_hit(rules: &RouteRules, list: RuleList, index: usize, n: u64) {
        match list {
            RuleList::IgnorePaths => rules.ignore_paths[index].hit_n(n),
            RuleList::UnorderedArrays => rules.unordered_arrays[index].hit_n(n),
            RuleList::Tolerance => rules.tolerance[index].hit_n(n),
            RuleList::SameKind => rules.same_kind[index].hit_n(n),
        }
    }
}

/// Nodes a rule selected, by tape index, each with the rule's index.
#[derive(Default)]
struct Marks(Vec<(usize, usize)>);

impl Marks {
    fn seal(&mut self) {
        self.0.sort_unstable();
    }

    fn get(&self, node: usize) -> Option<usize> {
        if self.0.is_empty() {
            return None;
        }
        self.0
            .binary_search_by_key(&node, |&(a, _)| a)
            .ok()
            .map(|i| self.0[i].1)
    }

    fn has(&self, node: usize) -> bool {
        self.get(node).is_some()
    }
}

/// Compares the documents rooted at `legacy` and `new` under `rules`: nodes
/// an ignore query selects in either document are skipped; arrays named
/// unordered are compared as multisets (matched by key when one is given);
/// numbers under a tolerance and values of a named kind compare equal. Key
/// order never matters, and numbers compare by value (`1` equals `1.0`).
/// Mismatches come in document order, each object's extra fields after the
/// rest. With them, the rules that applied.
pub fn compare(
    tape: &Tape,
    legacy: usize,
    new: usize,
    rules: &RouteRules,
) -> (Vec<Mismatch>, Hits) {
    let mut walk = Walk {
        tape,
        ignored: Marks::default(),
        unordered: Marks::default(),
        tolerance: Marks::default(),
        same_kind: Marks::default(),
        rules,
        path: Vec::new(),
        out: Vec::new(),
        hits: Hits::default(),
    };
    let docs = [legacy, new];
    for (i, item) in rules.ignore_paths.iter().enumerate() {
        if mark(&item.rule, i, tape, docs, &mut walk.ignored) {
            walk.hits.count(rules, RuleList::IgnorePaths, i);
        }
    }
    for (i, item) in rules.unordered_arrays.iter().enumerate() {
        if mark(&item.rule.path, i, tape, docs, &mut walk.unordered) {
            walk.hits.count(rules, RuleList::UnorderedArrays, i);
        }
    }
    // These count their uses where they make values equal.
    for (i, item) in rules.tolerance.iter().enumerate() {
        mark(&item.rule.path, i, tape, docs, &mut walk.tolerance);
    }
    for (i, item) in rules.same_kind.iter().enumerate() {
        mark(&item.rule.path, i, tape, docs, &mut walk.same_kind);
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
    (walk.out, walk.hits)
}

/// Marks the nodes `query` selects in either document with `rule`; whether
/// it selected any.
fn mark(query: &Query, rule: usize, tape: &Tape, docs: [usize; 2], marks: &mut Marks) -> bool {
    let before = marks.0.len();
    for root in docs {
        query.select(tape, root, &mut |node| marks.0.push((node, rule)));
    }
    marks.0.len() > before
}

struct Walk<'r, 'a> {
    tape: &'a Tape<'a>,
    ignored: Marks,
    unordered: Marks,
    tolerance: Marks,
    same_kind: Marks,
    rules: &'r RouteRules,
    path: Vec<Step<'a>>,
    out: Vec<Mismatch>,
    hits: Hits,
}

impl<'a> Walk<'_, 'a> {
    fn value(&mut self, legacy: usize, new: usize) {
        if self.ignored.has(legacy) || self.ignored.has(new) {
            return;
        }
        let tape = self.tape;
        match (tape.node(legacy), tape.node(new)) {
            (Node::Object { .. }, Node::Object { .. }) => self.objects(legacy, new),
            (Node::Array { .. }, Node::Array { .. }) => {
                match self.unordered.get(legacy).or(self.unordered.get(new)) {
                    Some(rule) => self.unordered_arrays(legacy, new, rule),
                    None => self.ordered_arrays(legacy, new),
                }
            }
            (l, n) if is_number(l) && is_number(n) => {
                if !numbers_equal(tape, legacy, new)
                    && !self.within_tolerance(legacy, new)
                    && !self.same_kind(legacy, new)
                {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
            _ if tape.kind(legacy) != tape.kind(new) => {
                if !self.same_kind(legacy, new) {
                    self.report(MismatchKind::Type, Some(legacy), Some(new));
                }
            }
            (l, n) => {
                if l != n && !self.same_kind(legacy, new) && !self.within_tolerance(legacy, new) {
                    self.report(MismatchKind::Value, Some(legacy), Some(new));
                }
            }
        }
    }

    /// Fields in the legacy object's order (compared, or missing), then
    /// those only the new one has, in its order. A repeated key is compared
    /// occurrence by occurrence.
    fn objects(&mut self, legacy: usize, new: usize) {
        let tape = self.tape;
        // Answers of one serializer list the same keys in the same order:
        // pair them without sorting.
        let mut l = tape.entries(legacy);
        let mut n = tape.entries(new);
        if l.clone().map(|e| e.0).eq(n.clone().map(|e| e.0)) {
            for ((key, lv), (_, nv)) in l.by_ref().zip(n.by_ref()) {
                self.path.push(Step::Key(key));
                self.value(lv, nv);
                self.path.pop();
            }
            return;
        }
        if matches!(tape.node(new), Node::Object { len, .. } if *len <= 64) {
            return self.objects_by_scan(legacy, new);
        }
        let (l, n): (Vec<_>, Vec<_>) = (l.collect(), n.collect());
        let (partner, matched) = pair_keys(&l, &n);
        for (&(key, lv), partner) in l.iter().zip(partner) {
            self.path.push(Step::Key(key));
            match partner {
                Some(j) => self.value(lv, n[j].1),
                None => self.report(MismatchKind::MissingField, Some(lv), None),
            }
            self.path.pop();
        }
        for (&(key, nv), _) in n.iter().zip(matched).filter(|(_, m)| !m) {
            self.path.push(Step::Key(key));
            self.report(MismatchKind::ExtraField, None, Some(nv));
            self.path.pop();
        }
    }

    /// As [`Walk::objects`], pairing keys by scanning the new object for
    /// each legacy key: for up to 64 fields, cheaper than sorting both.
    fn objects_by_scan(&mut self, legacy: usize, new: usize) {
        let tape = self.tape;
        let mut matched = 0u64;
        for (key, lv) in tape.entries(legacy) {
            self.path.push(Step::Key(key));
            let partner = tape
                .entries(new)
                .enumerate()
                .find(|&(j, (k, _))| matched & (1 << j) == 0 && k == key);
            match partner {
                Some((j, (_, nv))) => {
                    matched |= 1 << j;
                    self.value(lv, nv);
                }
                None => self.report(MismatchKind::MissingField, Some(lv), None),
            }
            self.path.pop();
        }
        for (j, (key, nv)) in tape.entries(new).enumerate() {
            if matched & (1 << j) == 0 {
                self.path.push(Step::Key(key));
                self.report(MismatchKind::ExtraField, None, Some(nv));
                self.path.pop();
            }
        }
    }

    fn ordered_arrays(&mut self, legacy: usize, new: usize) {
        let tape = self.tape;
        let (mut l, mut n) = (tape.elements(legacy), tape.elements(new));
        for i in 0.. {
            self.path.push(Step::Index(i));
            match (l.next(), n.next()) {
                (Some(lv), Some(nv)) => self.value(lv, nv),
                (Some(lv), None) => self.report(MismatchKind::MissingField, Some(lv), None),
                (None, Some(nv)) => self.report(MismatchKind::ExtraField, None, Some(nv)),
                (None, None) => {
                    self.path.pop();
                    break;
                }
            }
            self.path.pop();
        }
    }

    /// Arrays as multisets: each legacy element is matched with a new one
    /// (by key, or by comparing equal under the rules); what is left over
    /// on either side is missing or extra.
    fn unordered_arrays(&mut self, legacy: usize, new: usize, rule: usize) {
        let tape = self.tape;
        let key = self.rules.unordered_arrays[rule].rule.key.as_deref();
        let n: Vec<usize> = tape.elements(new).collect();
        let mut used = vec![false; n.len()];
        for (i, lv) in tape.elements(legacy).enumerate() {
            self.path.push(Step::Index(i));
            let partner = match key {
                Some(key) => tape.field(lv, key).and_then(|id| {
                    (0..n.len()).find(|&j| {
                        !used[j]
                            && tape
                                .field(n[j], key)
                                .is_some_and(|other| tape.same(id, other))
                    })
                }),
                None => (0..n.len()).find(|&j| !used[j] && self.equal_here(lv, n[j])),
            };
            match partner {
                Some(j) => {
                    used[j] = true;
                    if key.is_some() {
                        self.value(lv, n[j]);
                    }
                }
                None => self.report(MismatchKind::MissingField, Some(lv), None),
            }
            self.path.pop();
        }
        for (j, &nv) in n.iter().enumerate().filter(|(j, _)| !used[*j]) {
            self.path.push(Step::Index(j));
            self.report(MismatchKind::ExtraField, None, Some(nv));
            self.path.pop();
        }
    }

    /// True when the two values compare equal at the current path.
    fn equal_here(&mut self, l: usize, n: usize) -> bool {
        let before = self.out.len();
        self.value(l, n);
        let equal = self.out.len() == before;
        self.out.truncate(before);
        equal
    }

    /// Whether two values are equal within a tolerance rule: numbers by
    /// its margins, RFC 3339 timestamps by `absolute` seconds.
    fn within_tolerance(&mut self, l: usize, n: usize) -> bool {
        let Some(rule) = self.tolerance.get(l).or(self.tolerance.get(n)) else {
            return false;
        };
        let item = &self.rules.tolerance[rule];
        let ok = match (self.tape.as_f64(l), self.tape.as_f64(n)) {
            (Some(a), Some(b)) => item.rule.accepts(a, b),
            // Timestamps: RFC 3339 texts compare as times, in seconds.
            _ => match (self.tape.as_text(l), self.tape.as_text(n)) {
                (Some(a), Some(b)) => match (seconds_of(a), seconds_of(b)) {
                    (Some(a), Some(b)) => (a - b).abs() <= item.rule.absolute,
                    _ => false,
                },
                _ => false,
            },
        };
        if ok {
            self.hits.count(self.rules, RuleList::Tolerance, rule);
        }
        ok
    }

    fn same_kind(&mut self, l: usize, n: usize) -> bool {
        let Some(rule) = self.same_kind.get(l).or(self.same_kind.get(n)) else {
            return false;
        };
        let item = &self.rules.same_kind[rule];
        let ok = item.rule.kind.holds(self.tape.node(l)) && item.rule.kind.holds(self.tape.node(n));
        if ok {
            self.hits.count(self.rules, RuleList::SameKind, rule);
        }
        ok
    }

    fn report(&mut self, kind: MismatchKind, legacy: Option<usize>, new: Option<usize>) {
        if legacy.is_some_and(|v| self.ignored.has(v)) || new.is_some_and(|v| self.ignored.has(v)) {
            return;
        }
        let shown = |at: usize| super::short_json(&self.tape.to_value(at));
        self.out.push(Mismatch {
            kind,
            path: Some(render_path(&self.path)),
            legacy: legacy.map(shown),
            new: new.map(shown),
            diff: None,
        });
    }
}

/// For each legacy entry, the new entry with the same key (the n-th
/// occurrence of a repeated key pairs with the n-th); and which new entries
/// found a partner.
fn pair_keys(l: &[(&str, usize)], n: &[(&str, usize)]) -> (Vec<Option<usize>>, Vec<bool>) {
    let sorted = |entries: &[(&str, usize)]| {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        // Stable: occurrences of a repeated key stay in document order.
        order.sort_by_key(|&i| entries[i].0);
        order
    };
    let (ls, ns) = (sorted(l), sorted(n));
    let (mut partner, mut matched) = (vec![None; l.len()], vec![false; n.len()]);
    let (mut i, mut j) = (0, 0);
    while i < ls.len() && j < ns.len() {
        match l[ls[i]].0.cmp(n[ns[j]].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                partner[ls[i]] = Some(ns[j]);
                matched[ns[j]] = true;
                i += 1;
                j += 1;
            }
        }
    }
    (partner, matched)
}

fn is_number(node: &Node) -> bool {
    matches!(
        node,
        Node::Static(StaticNode::U64(_) | StaticNode::I64(_) | StaticNode::F64(_))
    )
}

/// Numbers by value: integers exactly, anything with a fraction or exponent
/// as f64 (`1` equals `1.0`).
fn numbers_equal(tape: &Tape, l: usize, n: usize) -> bool {
    match (tape.as_integer(l), tape.as_integer(n)) {
        (Some(a), Some(b)) => a == b,
        _ => tape.as_f64(l) == tape.as_f64(n),
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

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`Z` or an
/// offset of `±HH:MM`), if it is one.
fn seconds_of(text: &str) -> Option<f64> {
    let (stamp, offset) = match text.len().checked_sub(6) {
        Some(at)
            if matches!(text.as_bytes()[at], b'+' | b'-') && text.as_bytes()[at + 3] == b':' =>
        {
            let sign = if text.as_bytes()[at] == b'-' {
                -1.0
            } else {
                1.0
            };
            let hours: f64 = text[at + 1..at + 3].parse().ok()?;
            let minutes: f64 = text[at + 4..].parse().ok()?;
            (&text[..at], sign * (hours * 3600.0 + minutes * 60.0))
        }
        _ => (text.strip_suffix('Z').unwrap_or(text), 0.0),
    };
    if !stamp.contains('T') && !stamp.contains(' ') {
        return None;
    }
    let time = humantime::parse_rfc3339_weak(stamp).ok()?;
    Some(
        time.duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64()
            - offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn rules(text: &str) -> std::sync::Arc<RouteRules> {
        crate::diff::RuleSet::parse(text)
            .unwrap()
            .for_route(&crate::route::Route::of("GET", "/x"))
    }

    /// The documents as bytes, parsed onto one tape and compared.
    fn compare(legacy: &Value, new: &Value, rules: &RouteRules) -> Vec<Mismatch> {
        let mut docs = vec![
            legacy.to_string().into_bytes(),
            new.to_string().into_bytes(),
        ];
        let (tape, roots) = Tape::of(&mut docs);
        super::compare(&tape, roots[0].unwrap(), roots[1].unwrap(), rules).0
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

    fn compare_text(legacy: &str, new: &str) -> Vec<(MismatchKind, String)> {
        let mut docs = crate::diff::tape::buffers(&[legacy, new]);
        let (tape, roots) = Tape::of(&mut docs);
        let found = super::compare(
            &tape,
            roots[0].unwrap(),
            roots[1].unwrap(),
            &RouteRules::default(),
        )
        .0;
        paths(&found)
    }

    #[test]
    fn document_order_and_repeated_keys() {
        let found = compare_text(
            r#"{"z": 1, "a": {"k": 1, "k": 2}, "m": 3}"#,
            r#"{"m": 3, "a": {"k": 1, "k": 5}, "y": 0}"#,
        );
        assert_eq!(
            found,
            vec![
                (MismatchKind::MissingField, "$.z".into()),
                (MismatchKind::Value, "$.a.k".into()),
                (MismatchKind::ExtraField, "$.y".into()),
            ]
        );
        // In another order, the n-th occurrence still pairs with the n-th.
        let found = compare_text(r#"{"k": 1, "b": 0, "k": 2}"#, r#"{"b": 0, "k": 1, "k": 3}"#);
        assert_eq!(found, vec![(MismatchKind::Value, "$.k".into())]);
        assert!(
            compare_text(r#"{"k": 1, "b": 0, "k": 2}"#, r#"{"b": 0, "k": 1, "k": 2}"#).is_empty()
        );
    }

    /// Past 64 fields keys are paired by sorting; the result is the same.
    #[test]
    fn large_objects_in_another_order() {
        let field = |i: usize| format!("\"k{i}\": {i}");
        let legacy: Vec<String> = (0..70).map(field).collect();
        let mut new: Vec<String> = (1..70).rev().map(field).collect();
        new[5] = "\"k64\": 0".into();
        new.push("\"extra\": 1".into());
        new.push(field(3));
        let found = compare_text(
            &format!("{{{}}}", legacy.join(",")),
            &format!("{{{}}}", new.join(",")),
        );
        assert_eq!(
            found,
            vec![
                (MismatchKind::MissingField, "$.k0".into()),
                (MismatchKind::Value, "$.k64".into()),
                (MismatchKind::ExtraField, "$.extra".into()),
                (MismatchKind::ExtraField, "$.k3".into()),
            ]
        );
    }

    #[test]
    fn odd_keys_are_bracketed() {
        let found = plain(&json!({"a b": 1}), &json!({"a b": 2}));
        assert_eq!(found[0].path.as_deref(), Some("$['a b']"));
    }
}
