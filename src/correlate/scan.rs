//! Every candidate value of a request or an answer, read in place.
//!
//! Learning looks at every value of every exchange of a capture, most of
//! which are never followed: copying each into a `serde_json::Value` and a
//! [`Place`] of its own was most of learning's cost. The [`Scanner`] hands
//! each value to a callback as borrowed text where it sits, with a borrowed
//! [`Spot`] for its place; JSON bodies are read from a simd-json tape, not
//! built into a tree. [`places::request_values`](super::places::request_values)
//! and [`places::answer_values`](super::places::answer_values) are this
//! scan, collected.

use std::fmt::Write as _;

use crate::capture::{header_value, Body, Header, Request};
use crate::diff::tape::{Node, Parser, StaticNode, Tape};

use super::places::{self, Place};

/// Strings longer than this are not ids or tokens worth following.
pub(crate) const MAX_VALUE: usize = 4096;

/// A [`Place`] whose names are borrowed from the exchange being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot<'a> {
    /// A JSON leaf, by its concrete path (`$.items[0].id`).
    Json(&'a str),
    /// A segment of the request path, from 0 after the leading `/`.
    Path(usize),
    /// A query parameter.
    Query(&'a str),
    /// The token of `Authorization: Bearer …`.
    Bearer,
    /// A header (name in lower case).
    Header(&'a str),
    /// A cookie.
    Cookie(&'a str),
    /// A form field.
    Form(&'a str),
    /// The last path segment of an answer's Location header.
    Location,
}

impl Spot<'_> {
    /// The place, owned.
    pub fn place(&self) -> Place {
        match *self {
            Spot::Json(path) => Place::Json(path.to_string()),
            Spot::Path(i) => Place::Path(i),
            Spot::Query(name) => Place::Query(name.to_string()),
            Spot::Bearer => Place::Bearer,
            Spot::Header(name) => Place::Header(name.to_string()),
            Spot::Cookie(name) => Place::Cookie(name.to_string()),
            Spot::Form(name) => Place::Form(name.to_string()),
            Spot::Location => Place::Location,
        }
    }

    /// True when this is `place`.
    pub fn is(&self, place: &Place) -> bool {
        *self == place.spot()
    }

    /// Writes the place as [`Place`] displays it: one text per place, to
    /// look places up by without making one.
    pub fn write_key(&self, out: &mut String) {
        out.clear();
        let _ = write!(out, "{self}");
    }
}

/// As rules write places: `$.cart_id`, `path[2]`, `query:cart`, `bearer`,
/// `header:x-token`, `cookie:sid`, `form:cart`, `location`.
impl std::fmt::Display for Spot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Spot::Json(path) => f.write_str(path),
            Spot::Path(i) => write!(f, "path[{i}]"),
            Spot::Query(name) => write!(f, "query:{name}"),
            Spot::Bearer => f.write_str("bearer"),
            Spot::Header(name) => write!(f, "header:{name}"),
            Spot::Cookie(name) => write!(f, "cookie:{name}"),
            Spot::Form(name) => write!(f, "form:{name}"),
            Spot::Location => f.write_str("location"),
        }
    }
}

/// A value as found: its text (an integer in decimal), and whether it was a
/// JSON integer rather than a string.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    /// The text values are matched by (see [`places::key_of`]).
    pub text: &'a str,
    /// A JSON integer.
    pub integer: bool,
}

impl Leaf<'_> {
    /// The value as JSON.
    pub fn value(&self) -> serde_json::Value {
        if self.integer {
            if let Ok(n) = self.text.parse::<u64>() {
                return n.into();
            }
            if let Ok(n) = self.text.parse::<i64>() {
                return n.into();
            }
        }
        serde_json::Value::String(self.text.to_string())
    }
}

/// Buffers reused from one exchange to the next.
#[derive(Default)]
pub struct Scanner {
    /// The JSON body, copied: simd-json unescapes strings in place.
    doc: Vec<u8>,
    parser: Parser,
    path: String,
    number: String,
    name: String,
}

impl Scanner {
    /// Hands every candidate value of `request` to `each`: path segments,
    /// query values, the bearer token and other headers, cookies, JSON
    /// leaves, form fields. Only values that can be ids or tokens (see
    /// [`places::key_of`]).
    pub fn request(&mut self, request: &Request, each: &mut dyn FnMut(Spot<'_>, Leaf<'_>)) {
        let (path, query) = places::split_target(&request.target);
        for (i, segment) in path.split('/').skip(1).enumerate() {
            text(each, Spot::Path(i), segment);
        }
        for (name, value) in places::pairs(query, '&') {
            text(each, Spot::Query(name), value);
        }
        for Header(name, value) in &request.headers {
            let name = lower(name, &mut self.name);
            match name {
                "authorization" => {
                    if let Some(token) = places::bearer(value) {
                        text(each, Spot::Bearer, token);
                    }
                }
                "cookie" => {
                    for (n, v) in places::pairs(value, ';') {
                        text(each, Spot::Cookie(n), v);
                    }
                }
                "host" | "content-length" | "content-type" | "accept" | "user-agent" => {}
                _ if crate::http::is_hop_by_hop(name) => {}
                _ => text(each, Spot::Header(name), value),
            }
        }
        if self.json(&request.headers, &request.body, each) {
            return;
        }
        if places::is_form(&request.headers) {
            if let Ok(body) = std::str::from_utf8(request.body.bytes()) {
                for (name, value) in places::pairs(body, '&') {
                    text(each, Spot::Form(name), value);
                }
            }
        }
    }

    /// Hands every candidate value of an answer to `each`: JSON leaves, the
    /// Location header's last segment, Set-Cookie values.
    pub fn answer(
        &mut self,
        headers: &[Header],
        body: &Body,
        each: &mut dyn FnMut(Spot<'_>, Leaf<'_>),
    ) {
        self.json(headers, body, each);
        if let Some(segment) = header_value(headers, "location").and_then(places::last_segment) {
            text(each, Spot::Location, segment);
        }
        for Header(name, value) in headers {
            if name.eq_ignore_ascii_case("set-cookie") {
                if let Some((n, v)) = value.split(';').next().and_then(|c| c.split_once('=')) {
                    text(each, Spot::Cookie(n.trim()), v.trim());
                }
            }
        }
    }

    /// The leaves of a JSON body; false when the body is not JSON.
    fn json(
        &mut self,
        headers: &[Header],
        body: &Body,
        each: &mut dyn FnMut(Spot<'_>, Leaf<'_>),
    ) -> bool {
        let Some(bytes) = places::json_bytes(headers, body) else {
            return false;
        };
        if self.leaves(&bytes, each) {
            return true;
        }
        // simd-json refuses integers past 64 bits, which serde_json reads
        // as floats: written again with those as floats, such a document
        // keeps its other leaves.
        let again = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|doc| serde_json::to_vec(&doc).ok());
        again.is_some_and(|json| self.leaves(&json, each))
    }

    /// Hands the leaves of the JSON document `json` to `each`; false when
    /// simd-json refuses it.
    fn leaves(&mut self, json: &[u8], each: &mut dyn FnMut(Spot<'_>, Leaf<'_>)) -> bool {
        self.doc.clear();
        self.doc.extend_from_slice(json);
        self.path.clear();
        self.path.push('$');
        let mut tape = Tape::default();
        let Ok(root) = tape.push(&mut self.doc, &mut self.parser) else {
            return false;
        };
        let mut walk = Walk {
            tape: &tape,
            path: &mut self.path,
            number: &mut self.number,
            each,
        };
        walk.leaves(root);
        true
    }
}

/// A walk over one parsed document's leaves.
struct Walk<'w, 't, 'a> {
    tape: &'t Tape<'a>,
    path: &'w mut String,
    number: &'w mut String,
    each: &'w mut dyn FnMut(Spot<'_>, Leaf<'_>),
}

impl Walk<'_, '_, '_> {
    fn leaves(&mut self, at: usize) {
        let len = self.path.len();
        match *self.tape.node(at) {
            Node::Object { .. } => {
                for (key, value) in self.tape.entries(at) {
                    places::push_key(self.path, key);
                    self.leaves(value);
                    self.path.truncate(len);
                }
            }
            Node::Array { .. } => {
                for (i, value) in self.tape.elements(at).enumerate() {
                    let _ = write!(self.path, "[{i}]");
                    self.leaves(value);
                    self.path.truncate(len);
                }
            }
            Node::String(text) if keyable(text) => {
                (self.each)(
                    Spot::Json(self.path.as_str()),
                    Leaf {
                        text,
                        integer: false,
                    },
                );
            }
            Node::Static(StaticNode::U64(n)) => self.integer(n),
            Node::Static(StaticNode::I64(n)) => self.integer(n),
            // Prices, flags and nulls are never ids.
            _ => {}
        }
    }

    fn integer(&mut self, n: impl std::fmt::Display) {
        self.number.clear();
        let _ = write!(self.number, "{n}");
        let text = self.number.as_str();
        (self.each)(
            Spot::Json(self.path.as_str()),
            Leaf {
                text,
                integer: true,
            },
        );
    }
}

/// Hands a text value to `each` when it can be an id or a token.
fn text(each: &mut dyn FnMut(Spot<'_>, Leaf<'_>), spot: Spot<'_>, text: &str) {
    if keyable(text) {
        each(
            spot,
            Leaf {
                text,
                integer: false,
            },
        );
    }
}

/// Strings that can be ids or tokens: not empty, not huge.
fn keyable(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_VALUE
}

/// `name` in lower case, copied into `buffer` only when it is not already.
fn lower<'a>(name: &'a str, buffer: &'a mut String) -> &'a str {
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return name;
    }
    buffer.clear();
    buffer.push_str(name);
    buffer.make_ascii_lowercase();
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Vec<(String, String, bool)> {
        let headers = vec![
            Header("Location".into(), "/api/orders/77?x=1".into()),
            Header("Set-Cookie".into(), "sid=s-1; Path=/".into()),
        ];
        let mut out = Vec::new();
        Scanner::default().answer(&headers, &Body::from(body), &mut |spot, leaf| {
            out.push((
                spot.place().to_string(),
                leaf.text.to_string(),
                leaf.integer,
            ));
        });
        out
    }

    #[test]
    fn an_answer_gives_its_id_like_leaves_in_document_order() {
        let found = answer(
            r#"{"z": 1, "id": "o-1", "a b": 7, "price": 9.5, "ok": true, "none": null, "empty": "",
                "items": [{"sku": -3}]}"#,
        );
        let shown: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|(p, t, i)| (p.as_str(), t.as_str(), *i))
            .collect();
        assert_eq!(
            shown,
            [
                ("$.z", "1", true),
                ("$.id", "o-1", false),
                (r#"$["a b"]"#, "7", true),
                ("$.items[0].sku", "-3", true),
                ("location", "77", false),
                ("cookie:sid", "s-1", false),
            ]
        );
    }

    #[test]
    fn an_integer_past_64_bits_does_not_hide_the_other_leaves() {
        let mut found =
            answer(r#"{"z": 1, "id": "o-1", "amount": 123456789012345678901234567890}"#);
        found.sort();
        let places: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(places, ["$.id", "$.z", "cookie:sid", "location"]);
    }

    #[test]
    fn a_body_that_is_not_json_gives_only_its_headers() {
        let found = answer("{\"id\": ");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(answer("plain text").len(), 2);
    }

    #[test]
    fn a_request_names_its_headers_in_lower_case_and_reads_forms() {
        let request = Request {
            method: "POST".into(),
            target: "/api/carts/12?page=2".into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                Header("X-Token".into(), "t-9".into()),
                Header("Authorization".into(), "Bearer abc".into()),
                Header(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
            body: Body::from("cart=12&qty="),
        };
        let mut out = Vec::new();
        Scanner::default().request(&request, &mut |spot, leaf| {
            out.push(format!("{}={}", spot.place(), leaf.text));
        });
        assert_eq!(
            out,
            [
                "path[0]=api",
                "path[1]=carts",
                "path[2]=12",
                "query:page=2",
                "header:x-token=t-9",
                "bearer=abc",
                "form:cart=12",
            ]
        );
    }
}
