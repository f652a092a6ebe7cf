//! JSONPath queries (RFC 9535) as rules use them, evaluated over a tape (`diff::tape`).
//!
//! serde_json_path checks every query and evaluates it over a
//! `serde_json::Value`. Building that value for every answer would cost more
//! than the whole comparison, so queries made only of names, wildcards,
//! indices and descendant segments (`$.items[*].id`, `$..created_at`) are
//! evaluated here directly over the tape. Others (filters, slices, escaped
//! names) go to serde_json_path, and the nodes it finds are located on the
//! tape by their normalized paths.

use serde_json_path::{JsonPath, ParseError, PathElement};

use super::tape::{Node, Tape};

/// A checked JSONPath query.
#[derive(Debug)]
pub struct Query {
    path: JsonPath,
    plan: Option<Vec<Segment>>,
}

/// One segment: selectors applied to the current nodes (child segment) or
/// to them and all their descendants (descendant segment).
#[derive(Debug, PartialEq)]
struct Segment {
    descendant: bool,
    selectors: Vec<Selector>,
}

#[derive(Debug, PartialEq)]
enum Selector {
    Name(String),
    Wildcard,
    Index(i64),
}

impl Query {
    /// Checks `text` as an RFC 9535 query.
    pub fn parse(text: &str) -> Result<Query, ParseError> {
        let path = JsonPath::parse(text)?;
        Ok(Query {
            path,
            plan: plan(text),
        })
    }

    /// Calls `found` with every node the query selects in the document
    /// rooted at `root`.
    pub fn select(&self, tape: &Tape, root: usize, found: &mut impl FnMut(usize)) {
        match &self.plan {
            Some(plan) => evaluate(plan, tape, root, found),
            None => {
                let value = tape.to_value(root);
                for node in self.path.query_located(&value) {
                    let path: Vec<PathElement> = node.location().iter().cloned().collect();
                    locate(tape, root, &path, found);
                }
            }
        }
    }
}

/// Depth first, without building the lists between segments: rules need
/// the set of selected nodes, not RFC 9535's order of them.
fn evaluate(plan: &[Segment], tape: &Tape, node: usize, found: &mut impl FnMut(usize)) {
    let Some((segment, rest)) = plan.split_first() else {
        found(node);
        return;
    };
    let mut next = |child: usize| evaluate(rest, tape, child, found);
    if segment.descendant {
        for at in (node..tape.end(node)).filter(|&at| tape.is_container(at)) {
            apply(&segment.selectors, tape, at, &mut next);
        }
    } else {
        apply(&segment.selectors, tape, node, &mut next);
    }
}

fn apply(selectors: &[Selector], tape: &Tape, at: usize, next: &mut impl FnMut(usize)) {
    for selector in selectors {
        match (selector, tape.node(at)) {
            // Every occurrence of a repeated key: the differ compares each.
            (Selector::Name(name), Node::Object { .. }) => tape
                .entries(at)
                .filter(|(key, _)| key == name)
                .for_each(|e| next(e.1)),
            (Selector::Wildcard, Node::Object { .. }) => tape.entries(at).for_each(|e| next(e.1)),
            (Selector::Wildcard, Node::Array { .. }) => tape.elements(at).for_each(&mut *next),
            (Selector::Index(i), Node::Array { len, .. }) => {
                let index = if *i < 0 { *len as i64 + i } else { *i };
                if let Some(element) = usize::try_from(index)
                    .ok()
                    .and_then(|i| tape.elements(at).nth(i))
                {
                    next(element);
                }
            }
            _ => {}
        }
    }
}

/// Calls `found` with the nodes at a normalized path below `at`: more than
/// one where a key is repeated.
fn locate(tape: &Tape, at: usize, path: &[PathElement], found: &mut impl FnMut(usize)) {
    let Some((step, rest)) = path.split_first() else {
        found(at);
        return;
    };
    match step {
        PathElement::Name(name) => {
            for (_, value) in tape.entries(at).filter(|(key, _)| key == name) {
                locate(tape, value, rest, found);
            }
        }
        PathElement::Index(i) => {
            if let Some(element) = tape.elements(at).nth(*i) {
                locate(tape, element, rest, found);
            }
        }
    }
}

/// The segments of `text` when it uses only what [`evaluate`] handles;
/// `None` otherwise. `text` has already passed serde_json_path's checks.
fn plan(text: &str) -> Option<Vec<Segment>> {
    let mut rest = text.strip_prefix('$')?;
    let mut plan = Vec::new();
    while !rest.is_empty() {
        let (descendant, after) = match rest.strip_prefix("..") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let (selectors, after) = if let Some(inside) = after.strip_prefix('[') {
            bracketed(inside)?
        } else if descendant {
            member(after)?
        } else {
            member(after.strip_prefix('.')?)?
        };
        plan.push(Segment {
            descendant,
            selectors,
        });
        rest = after;
    }
    Some(plan)
}

/// `*` or a plain ASCII member name, and what follows it.
fn member(text: &str) -> Option<(Vec<Selector>, &str)> {
    if let Some(after) = text.strip_prefix('*') {
        return Some((vec![Selector::Wildcard], after));
    }
    let len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((vec![Selector::Name(name.to_string())], &text[len..]))
}

/// The selectors of `[...]` (after its `[`), and what follows the `]`.
fn bracketed(mut text: &str) -> Option<(Vec<Selector>, &str)> {
    const BLANK: &[char] = &[' ', '\t', '\n', '\r'];
    let mut selectors = Vec::new();
    loop {
        text = text.trim_start_matches(BLANK);
        let (selector, after) = selector(text)?;
        selectors.push(selector);
        text = after.trim_start_matches(BLANK);
        if let Some(after) = text.strip_prefix(']') {
            return Some((selectors, after));
        }
        text = text.strip_prefix(',')?;
    }
}

fn selector(text: &str) -> Option<(Selector, &str)> {
    if let Some(after) = text.strip_prefix('*') {
        return Some((Selector::Wildcard, after));
    }
    if let Some(quote) = text.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let inside = &text[1..];
        let close = inside.find(quote)?;
        let name = &inside[..close];
        // Escapes are left to serde_json_path.
        if name.contains('\\') {
            return None;
        }
        return Some((Selector::Name(name.to_string()), &inside[close + 1..]));
    }
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(text.len());
    let index = text[..len].parse().ok()?;
    let after = &text[len..];
    // A slice (`1:3`) is left to serde_json_path.
    if after.trim_start().starts_with(':') {
        return None;
    }
    Some((Selector::Index(index), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &[&str] = &[
        r#"{"id": 1, "items": [{"id": "a", "tags": ["x", "y"], "at": {"created_at": 1}}, {"id": "b", "created_at": 2}, 3],
           "meta": {"created_at": "t", "a b": {"id": 9}, "it's": [1, [2, [3]]]}, "created_at": [1, {"created_at": 2}]}"#,
        r#"[{"id": 1}, [{"id": 2}], {"x": {"id": 3, "y": [{"id": 4}]}}, "id", null]"#,
        r#"{"id": {"id": {"id": 1}}, "k": {"k": 1, "k": 2}, "": 0, "ü": 5}"#,
        r#"7"#,
    ];

    const QUERIES: &[&str] = &[
        "$",
        "$.id",
        "$.items[*].id",
        "$..created_at",
        "$..id",
        "$..*",
        "$.*",
        "$[*]",
        "$[0]",
        "$[-1]",
        "$[-9]",
        "$.items[1].created_at",
        "$['meta']['a b'].id",
        "$[\"meta\"][ 'it\\'s' ]",
        "$.meta[\"it's\"][1][-1][0]",
        "$..[0]",
        "$..['id', 'created_at']",
        "$.items[0, 2, -1]",
        "$.items[0:2]",
        "$..[?@.id]",
        "$.items[?@.id == 'a'].tags",
        "$.k",
        "$['']",
        "$.ü",
    ];

    /// The normalized path of `node` below `root`, e.g. `$['a'][0]`.
    fn path_of(tape: &Tape, root: usize, node: usize) -> String {
        let mut path = String::from("$");
        let mut at = root;
        while at != node {
            let inside = |child: &usize| (*child..tape.end(*child)).contains(&node);
            if let Some((key, value)) = tape.entries(at).find(|(_, v)| inside(v)) {
                path.push_str(&format!("['{key}']"));
                at = value;
            } else {
                let (i, element) = tape
                    .elements(at)
                    .enumerate()
                    .find(|(_, e)| inside(e))
                    .unwrap();
                path.push_str(&format!("[{i}]"));
                at = element;
            }
        }
        path
    }

    /// Every query selects the nodes serde_json_path selects (of a repeated
    /// key, every occurrence).
    #[test]
    fn agrees_with_serde_json_path() {
        for doc in DOCS {
            let mut docs = super::super::tape::buffers(&[doc]);
            let (tape, roots) = Tape::of(&mut docs);
            let root = roots[0].unwrap();
            let value = tape.to_value(root);
            for text in QUERIES {
                let query = Query::parse(text).unwrap();
                let mut found = Vec::new();
                query.select(&tape, root, &mut |node| found.push(node));
                let mut ours: Vec<String> =
                    found.iter().map(|&n| path_of(&tape, root, n)).collect();
                let mut expected: Vec<String> = query
                    .path
                    .query_located(&value)
                    .into_iter()
                    .map(|found| {
                        let steps = found.location().iter().map(|step| match step {
                            PathElement::Name(key) => format!("['{key}']"),
                            PathElement::Index(i) => format!("[{i}]"),
                        });
                        format!("${}", steps.collect::<String>())
                    })
                    .collect();
                for paths in [&mut ours, &mut expected] {
                    paths.sort_unstable();
                    paths.dedup();
                }
                assert_eq!(ours, expected, "{text} on {doc}");
            }
        }
    }

    /// A repeated key is one member: queries select every occurrence, the
    /// ones serde_json_path evaluates too.
    #[test]
    fn repeated_keys_are_selected_at_every_occurrence() {
        let mut docs =
            super::super::tape::buffers(&[r#"{"t": 1, "x": [{"t": 2, "t": 3}], "t": 4}"#]);
        let (tape, roots) = Tape::of(&mut docs);
        for text in ["$.t", "$..t", "$.x[?@.t == 3].t"] {
            let mut found = Vec::new();
            Query::parse(text)
                .unwrap()
                .select(&tape, roots[0].unwrap(), &mut |node| found.push(node));
            let values: Vec<String> = found
                .iter()
                .map(|&n| tape.to_value(n).to_string())
                .collect();
            let expected: &[&str] = match text {
                "$.t" => &["1", "4"],
                "$..t" => &["1", "4", "2", "3"],
                _ => &["2", "3"],
            };
            assert_eq!(values, expected, "{text}");
        }
    }

    #[test]
    fn plans_only_what_it_evaluates() {
        let planned: Vec<&str> = QUERIES
            .iter()
            .copied()
            .filter(|q| plan(q).is_some())
            .collect();
        assert!(planned.contains(&"$..created_at") && planned.contains(&"$.items[*].id"));
        for left in [
            "$.items[0:2]",
            "$..[?@.id]",
            "$[\"meta\"][ 'it\\'s' ]",
            "$.ü",
        ] {
            assert!(plan(left).is_none(), "{left}");
        }
        assert_eq!(
            plan("$..['id', 'created_at']").unwrap(),
            vec![Segment {
                descendant: true,
                selectors: vec![
                    Selector::Name("id".into()),
                    Selector::Name("created_at".into())
                ]
            }]
        );
    }
}
