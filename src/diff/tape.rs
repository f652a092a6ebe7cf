//! A JSON document as a flat tape: one `Vec` of nodes in document order,
//! strings borrowed from the body.
//!
//! simd-json parses the body onto its tape (SIMD structural scan and UTF-8
//! check, strings unescaped in place). Nothing is allocated per key or
//! string, both answers of a pair share one vector, and a node's index is
//! its identity, which is how rules mark the nodes they select. Building a
//! `serde_json::Value` instead costs more than the whole comparison.
//!
//! On the tape, a container is followed by its subtree (`count` nodes); an
//! object's subtree alternates a key (a string node) and the value's
//! subtree.

use serde_json::Value;
pub use simd_json::{Node, StaticNode};

/// Parsed JSON documents, one after another.
#[derive(Debug, Default)]
pub struct Tape<'a> {
    nodes: Vec<Node<'a>>,
}

impl<'a> Tape<'a> {
    /// An empty tape with room for documents of `bytes` bytes in all.
    pub fn with_capacity(bytes: usize) -> Tape<'a> {
        // Compact JSON has a node per 5 to 10 bytes; growing would copy.
        Tape {
            nodes: Vec::with_capacity(bytes / 4 + 8),
        }
    }

    /// Appends the document `json` (exactly one JSON value; parsing
    /// unescapes its strings in place) and returns the index of its root.
    pub fn push(
        &mut self,
        json: &'a mut [u8],
        parser: &mut Parser,
    ) -> Result<usize, simd_json::Error> {
        let root = self.nodes.len();
        let parsed = simd_json::to_tape_with_buffers(json, &mut parser.0)?;
        // Counts are relative, so a second document's nodes move as they are.
        self.nodes.extend(parsed.0);
        Ok(root)
    }

    /// The node at `at`.
    pub fn node(&self, at: usize) -> &Node<'a> {
        &self.nodes[at]
    }

    /// The index just past the subtree rooted at `at`.
    pub fn end(&self, at: usize) -> usize {
        match self.nodes[at] {
            Node::Array { count, .. } | Node::Object { count, .. } => at + count + 1,
            _ => at + 1,
        }
    }

    /// True for arrays and objects. (Keys are strings: never containers.)
    pub fn is_container(&self, at: usize) -> bool {
        matches!(self.nodes[at], Node::Array { .. } | Node::Object { .. })
    }

    /// True for objects.
    pub fn is_object(&self, at: usize) -> bool {
        matches!(self.nodes[at], Node::Object { .. })
    }

    /// The elements of the array at `at` (nothing for other nodes).
    pub fn elements(&self, at: usize) -> Elements<'_, 'a> {
        let end = match self.nodes[at] {
            Node::Array { .. } => self.end(at),
            _ => at + 1,
        };
        Elements {
            tape: self,
            next: at + 1,
            end,
        }
    }

    /// The entries of the object at `at` as (key, value index), in document
    /// order (nothing for other nodes).
    pub fn entries(&self, at: usize) -> Entries<'_, 'a> {
        let end = if self.is_object(at) {
            self.end(at)
        } else {
            at + 1
        };
        Entries {
            tape: self,
            next: at + 1,
            end,
        }
    }

    /// The value of `key` in the object at `at`; the last one when the key
    /// is repeated, as `serde_json::Value` keeps it.
    pub fn field(&self, at: usize, key: &str) -> Option<usize> {
        self.entries(at)
            .filter(|(k, _)| *k == key)
            .last()
            .map(|e| e.1)
    }

    /// The number as f64, for numbers.
    pub fn as_f64(&self, at: usize) -> Option<f64> {
        match self.nodes[at] {
            Node::Static(StaticNode::U64(n)) => Some(n as f64),
            Node::Static(StaticNode::I64(n)) => Some(n as f64),
            Node::Static(StaticNode::F64(n)) => Some(n),
            _ => None,
        }
    }

    /// The text, for strings.
    pub fn as_text(&self, at: usize) -> Option<&str> {
        match self.nodes[at] {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, for numbers without fraction or exponent.
    pub fn as_integer(&self, at: usize) -> Option<i128> {
        match self.nodes[at] {
            Node::Static(StaticNode::U64(n)) => Some(n.into()),
            Node::Static(StaticNode::I64(n)) => Some(n.into()),
            _ => None,
        }
    }

    /// The JSON type of the node, as reports name it.
    pub fn kind(&self, at: usize) -> &'static str {
        match self.nodes[at] {
            Node::Static(StaticNode::Null) => "null",
            Node::Static(StaticNode::Bool(_)) => "boolean",
            Node::Static(_) => "number",
            Node::String(_) => "string",
            Node::Array { .. } => "array",
            Node::Object { .. } => "object",
        }
    }

    /// The subtree at `at` as a `serde_json::Value`, for display and for
    /// the queries only serde_json_path evaluates.
    pub fn to_value(&self, at: usize) -> Value {
        match self.nodes[at] {
            Node::Static(StaticNode::Null) => Value::Null,
            Node::Static(StaticNode::Bool(b)) => Value::Bool(b),
            Node::Static(StaticNode::U64(n)) => Value::from(n),
            Node::Static(StaticNode::I64(n)) => Value::from(n),
            Node::Static(StaticNode::F64(n)) => {
                serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
            Node::String(s) => Value::String(s.to_string()),
            Node::Array { .. } => {
                Value::Array(self.elements(at).map(|e| self.to_value(e)).collect())
            }
            Node::Object { .. } => Value::Object(
                self.entries(at)
                    .map(|(k, v)| (k.to_string(), self.to_value(v)))
                    .collect(),
            ),
        }
    }

    /// True when the subtrees at `a` and `b` are equal as `serde_json::Value`s
    /// are: integers equal integers, floats floats, objects regardless of
    /// order.
    pub fn same(&self, a: usize, b: usize) -> bool {
        match (self.nodes[a], self.nodes[b]) {
            (Node::Array { .. } | Node::Object { .. }, _) => self.to_value(a) == self.to_value(b),
            (Node::Static(StaticNode::F64(x)), Node::Static(StaticNode::F64(y))) => x == y,
            (Node::Static(StaticNode::F64(_)), _) | (_, Node::Static(StaticNode::F64(_))) => false,
            _ => match (self.as_integer(a), self.as_integer(b)) {
                (Some(x), Some(y)) => x == y,
                _ => self.nodes[a] == self.nodes[b],
            },
        }
    }
}

/// The elements of an array, as indices.
#[derive(Clone)]
pub struct Elements<'t, 'a> {
    tape: &'t Tape<'a>,
    next: usize,
    end: usize,
}

impl Iterator for Elements<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        (self.next < self.end).then(|| {
            let at = self.next;
            self.next = self.tape.end(at);
            at
        })
    }
}

/// The entries of an object, as (key, value index).
#[derive(Clone)]
pub struct Entries<'t, 'a> {
    tape: &'t Tape<'a>,
    next: usize,
    end: usize,
}

impl<'t> Iterator for Entries<'t, '_> {
    type Item = (&'t str, usize);

    fn next(&mut self) -> Option<(&'t str, usize)> {
        if self.next >= self.end {
            return None;
        }
        let (key, value) = (self.next, self.next + 1);
        self.next = self.tape.end(value);
        match self.tape.nodes[key] {
            Node::String(k) => Some((k, value)),
            _ => unreachable!("an object's entries start with a string key"),
        }
    }
}

/// Buffers the parser reuses from one document to the next.
#[derive(Default)]
pub struct Parser(simd_json::Buffers);

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parser")
    }
}

/// Tests parse documents they keep in a `Vec<Vec<u8>>`.
#[cfg(test)]
impl<'a> Tape<'a> {
    /// Each document parsed onto one new tape, with its root (`None` for
    /// a document that does not parse).
    pub(crate) fn of(docs: &'a mut [Vec<u8>]) -> (Tape<'a>, Vec<Option<usize>>) {
        let (mut tape, mut parser) = (Tape::default(), Parser::default());
        let roots = docs
            .iter_mut()
            .map(|doc| tape.push(doc, &mut parser).ok())
            .collect();
        (tape, roots)
    }
}

/// The texts as owned byte buffers, for [`Tape::of`].
#[cfg(test)]
pub(crate) fn buffers(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_serde_json() {
        let text = r#"{"a": [1, -2, 3.5, "x\"y", null, true, 18446744073709551615, -0.5e-3],
            "b": {"c": {}, "é\n": "ü"}, "d": [], "a": 7}"#;
        let mut docs = buffers(&[text]);
        let (tape, roots) = Tape::of(&mut docs);
        let root = roots[0].unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tape.to_value(root), expected);
        assert_eq!(
            tape.field(root, "a").map(|a| tape.to_value(a)),
            Some(json!(7))
        );
        assert_eq!(tape.end(root), tape.nodes.len());
        let b = tape.field(root, "b").unwrap();
        assert_eq!(
            tape.entries(b).map(|e| e.0).collect::<Vec<_>>(),
            ["c", "é\n"]
        );
    }

    #[test]
    fn documents_share_the_tape_and_errors_leave_it_alone() {
        let mut docs = buffers(&[
            "[1, 2]",
            "[1, 2",
            "{} x",
            r#"{"k": "v"}"#,
            "[1,2]",
            "[1.0,2]",
        ]);
        let (tape, roots) = Tape::of(&mut docs);
        assert_eq!(roots[1..3], [None, None], "unclosed, trailing characters");
        let (first, second) = (roots[0].unwrap(), roots[3].unwrap());
        assert_eq!((first, second), (0, 3));
        assert_eq!(tape.elements(first).count(), 2);
        assert_eq!(
            tape.entries(second).collect::<Vec<_>>(),
            [("k", second + 2)]
        );
        assert_eq!(tape.node(second + 2), &Node::String("v"));
        let (same, other) = (roots[4].unwrap(), roots[5].unwrap());
        assert!(tape.same(first, same) && !tape.same(first, other));
    }
}
