//! Places: where a value sits in a request or an answer, how to read every
//! candidate value out of one, and how to write a value back into a request.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capture::{header_value, Body, Header, Request, Response};

use super::scan::{Scanner, Spot, MAX_VALUE};

/// Decoded bodies larger than this are not searched for values.
const MAX_BODY: usize = 8 << 20;

/// Where a value sits. Written in rules as `$.cart_id`, `path[2]`,
/// `query:cart`, `bearer`, `header:x-token`, `cookie:sid`, `form:cart`,
/// `location`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Place {
    /// A JSON leaf of the body, by its concrete path (`$.items[0].id`).
    Json(String),
    /// A segment of the request path, from 0 after the leading `/`.
    Path(usize),
    /// A query parameter's value.
    Query(String),
    /// The token of `Authorization: Bearer …`.
    Bearer,
    /// A header's whole value (name in lower case).
    Header(String),
    /// A cookie: Cookie in requests, Set-Cookie in answers.
    Cookie(String),
    /// A field of an `application/x-www-form-urlencoded` body.
    Form(String),
    /// The last path segment of an answer's Location header.
    Location,
}

impl Place {
    /// The place as the scanner names it, borrowing its names.
    pub(crate) fn spot(&self) -> Spot<'_> {
        match self {
            Place::Json(path) => Spot::Json(path),
            Place::Path(i) => Spot::Path(*i),
            Place::Query(name) => Spot::Query(name),
            Place::Bearer => Spot::Bearer,
            Place::Header(name) => Spot::Header(name),
            Place::Cookie(name) => Spot::Cookie(name),
            Place::Form(name) => Spot::Form(name),
            Place::Location => Spot::Location,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spot().fmt(f)
    }
}

impl FromStr for Place {
    type Err = String;

    fn from_str(text: &str) -> Result<Place, String> {
        let text = text.trim();
        let named = |prefix: &str| text.strip_prefix(prefix).filter(|n| !n.is_empty());
        if text.starts_with('$') {
            return Ok(Place::Json(text.to_string()));
        }
        if let Some(i) = text.strip_prefix("path[").and_then(|r| r.strip_suffix(']')) {
            return i
                .parse()
                .map(Place::Path)
                .map_err(|_| format!("{text:?}: path[N] takes a segment number"));
        }
        match text {
            "bearer" => return Ok(Place::Bearer),
            "location" => return Ok(Place::Location),
            _ => {}
        }
        if let Some(name) = named("query:") {
            return Ok(Place::Query(name.to_string()));
        }
        if let Some(name) = named("header:") {
            return Ok(Place::Header(name.to_ascii_lowercase()));
        }
        if let Some(name) = named("cookie:") {
            return Ok(Place::Cookie(name.to_string()));
        }
        if let Some(name) = named("form:") {
            return Ok(Place::Form(name.to_string()));
        }
        Err(format!(
            "{text:?} is not a place: use a JSON path ($.id), path[N], query:NAME, bearer, \
             header:NAME, cookie:NAME, form:NAME or location"
        ))
    }
}

impl TryFrom<String> for Place {
    type Error = String;
    fn try_from(text: String) -> Result<Place, String> {
        text.parse()
    }
}

impl From<Place> for String {
    fn from(place: Place) -> String {
        place.to_string()
    }
}

/// The text a value is matched by: a string as it is, an integer in
/// decimal. Only strings and integers are ids or tokens.
pub fn key_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if keyable(value) => Some(s.clone()),
        Value::Number(n) if keyable(value) => Some(n.to_string()),
        _ => None,
    }
}

/// Whether `value` has a [`key_of`]: checked before copying a leaf.
fn keyable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.is_empty() && s.len() <= MAX_VALUE,
        Value::Number(n) => n.is_u64() || n.is_i64(),
        _ => false,
    }
}

/// Every candidate value of an answer: JSON leaves, the Location header's
/// last segment, Set-Cookie values.
pub fn answer_values(headers: &[Header], body: &Body) -> Vec<(Place, Value)> {
    let mut out = Vec::new();
    SCANNER.with_borrow_mut(|scanner| {
        scanner.answer(headers, body, &mut |spot, leaf| {
            out.push((spot.place(), leaf.value()));
        })
    });
    out
}

/// The value at `place` of an answer, if it has one that can be an id or
/// a token.
pub fn answer_value(headers: &[Header], body: &Body, place: &Place) -> Option<Value> {
    answer_values_at(headers, body, &[place]).pop().flatten()
}

thread_local! {
    /// Answers are read on the replay's hot path (every producer's answer,
    /// on every stack), requests by shadowing and redaction: one scanner
    /// per thread keeps its buffers.
    static SCANNER: std::cell::RefCell<Scanner> = std::cell::RefCell::default();
}

/// The values of an answer at each of `wanted`, read in one pass and
/// without building the JSON body; `None` where it has none that can be an
/// id or a token. Of repeated JSON keys the last counts (as parsers keep
/// it), of repeated cookies the first.
pub fn answer_values_at(headers: &[Header], body: &Body, wanted: &[&Place]) -> Vec<Option<Value>> {
    let mut found = vec![None; wanted.len()];
    SCANNER.with_borrow_mut(|scanner| {
        scanner.answer(headers, body, &mut |spot, leaf| {
            for (slot, place) in found.iter_mut().zip(wanted) {
                if spot.is(place) && (slot.is_none() || matches!(spot, Spot::Json(_))) {
                    *slot = Some(leaf.value());
                }
            }
        })
    });
    found
}

/// Every candidate value of a request: path segments, query values, the
/// bearer token and other headers, cookies, JSON leaves, form fields.
pub fn request_values(request: &Request) -> Vec<(Place, Value)> {
    let mut out = Vec::new();
    SCANNER.with_borrow_mut(|scanner| {
        scanner.request(request, &mut |spot, leaf| {
            out.push((spot.place(), leaf.value()));
        })
    });
    out
}

/// `request` with each place set to its value: the target, headers and
/// body rewritten where needed. A body that changes loses its recorded
/// Content-Length, which the client sets anew.
pub fn rewritten(request: &Request, values: &[(Place, Value)]) -> Request {
    let mut out = request.clone();
    let mut json = None;
    let mut form: Option<Vec<(String, String)>> = None;
    for (place, value) in values {
        let plain = key_of(value).unwrap_or_else(|| value.to_string());
        match place {
            Place::Path(i) => out.target = with_segment(&out.target, *i, &plain),
            Place::Query(name) => out.target = with_query(&out.target, name, &plain),
            Place::Bearer => set_header(
                &mut out.headers,
                "authorization",
                &format!("Bearer {plain}"),
            ),
            Place::Header(name) => set_header(&mut out.headers, name, &plain),
            Place::Cookie(name) => {
                let cookie = header_value(&out.headers, "cookie").unwrap_or_default();
                let cookie = pairs(cookie, ';')
                    .map(|(n, v)| {
                        if n == name {
                            format!("{n}={plain}")
                        } else {
                            format!("{n}={v}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                set_header(&mut out.headers, "cookie", &cookie);
            }
            Place::Json(path) => {
                let doc = json.get_or_insert_with(|| json_body(&request.headers, &request.body));
                if let (Some(doc), Some(pointer)) = (doc.as_mut(), pointer(path)) {
                    if let Some(slot) = doc.pointer_mut(&pointer) {
                        *slot = value.clone();
                    }
                }
            }
            Place::Form(name) => {
                let fields = form.get_or_insert_with(|| {
                    let body = std::str::from_utf8(request.body.bytes()).unwrap_or_default();
                    pairs(body, '&')
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect()
                });
                for field in fields.iter_mut().filter(|(n, _)| n == name) {
                    field.1 = plain.clone();
                }
            }
            Place::Location => {}
        }
    }
    let body = match (json, form) {
        (Some(Some(doc)), _) => Some(serde_json::to_vec(&doc).unwrap_or_default()),
        (_, Some(fields)) => Some(
            fields
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("&")
                .into_bytes(),
        ),
        _ => None,
    };
    if let Some(body) = body {
        out.body = Body::from(bytes::Bytes::from(body));
        out.headers
            .retain(|h| !h.0.eq_ignore_ascii_case("content-length"));
        // A body that was sent encoded is sent plain now.
        out.headers
            .retain(|h| !h.0.eq_ignore_ascii_case("content-encoding"));
    }
    out
}

/// `response` with each place set to its value: JSON leaves of the body,
/// Set-Cookie values. A body that changes loses its recorded
/// Content-Length and Content-Encoding (it is kept plain).
pub fn rewritten_answer(response: &Response, values: &[(Place, Value)]) -> Response {
    let mut out = response.clone();
    let mut json = None;
    for (place, value) in values {
        let plain = key_of(value).unwrap_or_else(|| value.to_string());
        match place {
            Place::Json(path) => {
                let doc = json.get_or_insert_with(|| json_body(&response.headers, &response.body));
                if let (Some(doc), Some(pointer)) = (doc.as_mut(), pointer(path)) {
                    if let Some(slot) = doc.pointer_mut(&pointer) {
                        *slot = value.clone();
                    }
                }
            }
            Place::Cookie(name) => {
                for header in out
                    .headers
                    .iter_mut()
                    .filter(|h| h.0.eq_ignore_ascii_case("set-cookie"))
                {
                    let (cookie, attributes) =
                        header.1.split_once(';').unwrap_or((header.1.as_str(), ""));
                    if cookie
                        .split_once('=')
                        .is_some_and(|(n, _)| n.trim() == name)
                    {
                        header.1 = match attributes.is_empty() {
                            true => compact_str::format_compact!("{name}={plain}"),
                            false => compact_str::format_compact!("{name}={plain};{attributes}"),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(Some(doc)) = json {
        out.body = Body::from(bytes::Bytes::from(
            serde_json::to_vec(&doc).unwrap_or_default(),
        ));
        out.headers.retain(|h| {
            !h.0.eq_ignore_ascii_case("content-length")
                && !h.0.eq_ignore_ascii_case("content-encoding")
        });
    }
    out
}

pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) fn last_segment(location: &str) -> Option<&str> {
    let (path, _) = split_target(location);
    path.rsplit('/').find(|s| !s.is_empty())
}

pub(crate) fn split_target(target: &str) -> (&str, &str) {
    let target = target.split('#').next().unwrap_or_default();
    target.split_once('?').unwrap_or((target, ""))
}

pub(crate) fn pairs(text: &str, separator: char) -> impl Iterator<Item = (&str, &str)> {
    text.split(separator)
        .filter_map(|pair| pair.trim().split_once('='))
}

fn with_segment(target: &str, index: usize, value: &str) -> String {
    let (path, query) = split_target(target);
    let mut segments: Vec<&str> = path.split('/').collect();
    if let Some(segment) = segments.get_mut(index + 1) {
        *segment = value;
    }
    let path = segments.join("/");
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

fn with_query(target: &str, name: &str, value: &str) -> String {
    let (path, query) = split_target(target);
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((n, _)) if n == name => format!("{n}={value}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

fn set_header(headers: &mut [Header], name: &str, value: &str) {
    for header in headers
        .iter_mut()
        .filter(|h| h.0.eq_ignore_ascii_case(name))
    {
        header.1 = value.into();
    }
}

pub(crate) fn is_form(headers: &[Header]) -> bool {
    header_value(headers, "content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// The body as JSON, decoded by its Content-Encoding; `None` if it is not JSON.
pub fn json_body(headers: &[Header], body: &Body) -> Option<Value> {
    serde_json::from_slice(&json_bytes(headers, body)?).ok()
}

/// The body decoded by its Content-Encoding, when it looks like JSON (an
/// object or an array); not parsed.
pub(crate) fn json_bytes<'a>(headers: &[Header], body: &'a Body) -> Option<Cow<'a, [u8]>> {
    let bytes = body.bytes();
    if bytes.is_empty() {
        return None;
    }
    let bytes = match header_value(headers, "content-encoding") {
        Some(codings) => Cow::Owned(crate::encoding::decode(codings, bytes, MAX_BODY).ok()?),
        None => Cow::Borrowed(&bytes[..]),
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    matches!(first, b'{' | b'[').then_some(bytes)
}

/// Appends an object member's key to a concrete path: `.name`, or
/// `["any key"]`.
pub(crate) fn push_key(path: &mut String, key: &str) {
    if is_name(key) {
        path.push('.');
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(key).unwrap_or_default());
        path.push(']');
    }
}

fn is_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit())
}

/// A concrete path (`$.items[0].id`, `$["a b"]`) as a JSON pointer.
pub fn pointer(path: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = path.strip_prefix('$')?;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            push_token(&mut out, &after[..end]);
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            if after.starts_with('"') {
                let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
                let key = de.next()?.ok()?;
                let used = de.byte_offset();
                push_token(&mut out, &key);
                rest = after[used..].strip_prefix(']')?;
            } else {
                let end = after.find(']')?;
                push_token(&mut out, &after[..end]);
                rest = &after[end + 1..];
            }
        } else {
            return None;
        }
    }
    Some(out)
}

fn push_token(out: &mut String, token: &str) {
    out.push('/');
    out.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_read_and_write_back() {
        for text in [
            "$.a[0].b",
            "path[2]",
            "query:cart",
            "bearer",
            "header:x-token",
            "cookie:sid",
            "form:f",
            "location",
        ] {
            let place: Place = text.parse().unwrap();
            assert_eq!(place.to_string(), text);
        }
        assert!("body".parse::<Place>().is_err());
        assert_eq!(pointer("$.items[0].id").unwrap(), "/items/0/id");
        assert_eq!(pointer(r#"$["a b"].c"#).unwrap(), "/a b/c");
    }

    #[test]
    fn a_request_is_rewritten_where_its_values_sit() {
        let request = Request {
            method: "POST".into(),
            target: "/api/carts/12/items?cart=12&x=1".into(),
            version: "HTTP/1.1".into(),
            headers: vec![
                Header("authorization".into(), "Bearer old".into()),
                Header("cookie".into(), "sid=s1; theme=dark".into()),
                Header("content-type".into(), "application/json".into()),
                Header("content-length".into(), "27".into()),
            ],
            body: Body::from(bytes::Bytes::from_static(br#"{"cart_id":12,"qty":1}"#)),
        };
        let values = request_values(&request);
        assert!(values.contains(&(Place::Path(2), Value::String("12".into()))));
        assert!(values.contains(&(Place::Json("$.cart_id".into()), Value::from(12))));
        let big = Value::from(7_409_284_110_012_416_001_u64);
        let out = rewritten(
            &request,
            &[
                (Place::Path(2), big.clone()),
                (Place::Query("cart".into()), big.clone()),
                (Place::Bearer, Value::String("new".into())),
                (Place::Cookie("sid".into()), Value::String("s2".into())),
                (Place::Json("$.cart_id".into()), Value::String("c-9".into())),
            ],
        );
        assert_eq!(
            out.target,
            "/api/carts/7409284110012416001/items?cart=7409284110012416001&x=1"
        );
        assert_eq!(
            header_value(&out.headers, "authorization"),
            Some("Bearer new")
        );
        assert_eq!(
            header_value(&out.headers, "cookie"),
            Some("sid=s2; theme=dark")
        );
        assert_eq!(out.body.bytes().as_ref(), br#"{"cart_id":"c-9","qty":1}"#);
        assert_eq!(header_value(&out.headers, "content-length"), None);
    }
}
