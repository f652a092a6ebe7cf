//! The differ: compares the legacy and the new answer to one request and
//! lists every [`Mismatch`], after the noise that the rules name is removed.
//!
//! Status codes are compared first, then headers (minus a default ignore list
//! and the rules'), then bodies: JSON structurally (key order ignored, numbers
//! by value, every difference at its JSON path), anything else as text with a
//! line diff.

mod json;
mod memo;
pub mod query;
pub mod rules;
pub(crate) mod tape;

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::capture::{header_value, Header, Response};
use crate::route::Route;
pub use rules::{RouteRules, RuleSet};

/// What differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// Status codes differ.
    Status,
    /// A header differs, or is present on one side only.
    Header,
    /// Non-JSON bodies differ, or only one side is JSON.
    Body,
    /// A JSON field (or array element) the legacy answer has and the new one lacks.
    MissingField,
    /// A JSON field (or array element) only the new answer has.
    ExtraField,
    /// A JSON value differs, same type on both sides.
    Value,
    /// A JSON value has a different type on each side.
    Type,
}

impl MismatchKind {
    /// The snake_case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::Status => "status",
            MismatchKind::Header => "header",
            MismatchKind::Body => "body",
            MismatchKind::MissingField => "missing_field",
            MismatchKind::ExtraField => "extra_field",
            MismatchKind::Value => "value",
            MismatchKind::Type => "type",
        }
    }
}

/// One difference between the two answers to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// What differs.
    pub kind: MismatchKind,
    /// JSON path (`$.items[0].price`) or header name; `None` for status and text bodies.
    pub path: Option<String>,
    /// The legacy side's value, shortened; `None` when absent.
    pub legacy: Option<String>,
    /// The new side's value, shortened; `None` when absent.
    pub new: Option<String>,
    /// A unified line diff, for text bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Mismatch {
    /// The path with array indices replaced by `[*]`, so that the same field
    /// of different elements groups together.
    pub fn group_path(&self) -> Option<String> {
        let path = self.path.as_ref()?;
        let mut out = String::with_capacity(path.len());
        let mut rest = path.as_str();
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            rest = &rest[open..];
            let len = if rest.starts_with("['") {
                quoted_len(rest)
            } else {
                rest.find(']').map_or(rest.len(), |close| close + 1)
            };
            let (step, after) = rest.split_at(len);
            let is_index =
                step.len() > 2 && step[1..step.len() - 1].bytes().all(|b| b.is_ascii_digit());
            out.push_str(if is_index { "[*]" } else { step });
            rest = after;
        }
        out.push_str(rest);
        Some(out)
    }
}

/// Length of a `['quoted key']` step at the start of `s`, escapes included.
fn quoted_len(s: &str) -> usize {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(2) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' if s[i + 1..].starts_with(']') => return i + 2,
            _ => {}
        }
    }
    s.len()
}

/// Compares answers under a rule set.
#[derive(Debug, Default)]
pub struct Differ {
    rules: RuleSet,
    scratch: Scratch,
    memo: memo::Memo,
}

/// What parsing JSON bodies reuses from one comparison to the next: the
/// parser's buffers, and copies of the bodies (parsing unescapes strings in
/// place, and the bodies as sent are still needed for text diffs).
#[derive(Debug, Default)]
struct Scratch {
    parser: tape::Parser,
    legacy: Vec<u8>,
    others: Vec<Vec<u8>>,
}

impl Differ {
    /// A differ applying `rules`.
    pub fn new(rules: RuleSet) -> Differ {
        Differ {
            rules,
            scratch: Scratch::default(),
            memo: memo::Memo::default(),
        }
    }

    /// The rules in force for `route`.
    pub fn rules_for(&mut self, route: &Route) -> std::sync::Arc<RouteRules> {
        self.rules.for_route(route)
    }

    /// Rules of the rules file that applied to nothing so far.
    pub fn unused_rules(&self) -> Vec<String> {
        self.rules.unused()
    }

    /// Every mismatch between `legacy` and `new`, answers to a request on `route`.
    pub fn compare(&mut self, route: &Route, legacy: &Response, new: &Response) -> Vec<Mismatch> {
        let [out] = self.compare_each(route, legacy, [new]);
        out
    }

    /// Every mismatch between `legacy` and each of `others`, answers to the
    /// same request on `route` (the new stack's, a second legacy one), as
    /// [`Differ::compare`] finds them, parsing `legacy` once.
    pub fn compare_each<const N: usize>(
        &mut self,
        route: &Route,
        legacy: &Response,
        others: [&Response; N],
    ) -> [Vec<Mismatch>; N] {
        let rules = self.rules.for_route(route);
        let mut outs: [Vec<Mismatch>; N] = std::array::from_fn(|_| Vec::new());
        for (other, out) in others.iter().zip(&mut outs) {
            if legacy.status != other.status {
                out.push(Mismatch {
                    kind: MismatchKind::Status,
                    path: None,
                    legacy: Some(legacy.status.to_string()),
                    new: Some(other.status.to_string()),
                    diff: None,
                });
            }
        }
        if let Some(status_only) = &rules.status_only {
            status_only.hit();
            return outs;
        }
        for (other, out) in others.iter().zip(&mut outs) {
            compare_headers(&legacy.headers, &other.headers, &rules, out);
        }
        let truncated = |o: &&Response| legacy.truncated.is_some() || o.truncated.is_some();
        if others.iter().any(truncated) {
            self.compare_some_by_hash(legacy, &others, &rules, &mut outs);
        } else {
            let (scratch, memo) = (&mut self.scratch, &mut self.memo);
            compare_bodies(legacy, &others, &rules, scratch, memo, &mut outs);
        }
        self.scratch.trim();
        outs
    }

    /// Bodies too long to keep whole are compared by length and hash; the
    /// others as usual.
    fn compare_some_by_hash(
        &mut self,
        legacy: &Response,
        others: &[&Response],
        rules: &Arc<RouteRules>,
        outs: &mut [Vec<Mismatch>],
    ) {
        let mut whole = Vec::new();
        for (i, other) in others.iter().enumerate() {
            match legacy.truncated.is_some() || other.truncated.is_some() {
                true => compare_by_hash(legacy, other, &mut outs[i]),
                false => whole.push(i),
            }
        }
        if whole.is_empty() {
            return;
        }
        let subset: Vec<&Response> = whole.iter().map(|&i| others[i]).collect();
        let mut found: Vec<Vec<Mismatch>> = whole
            .iter()
            .map(|&i| std::mem::take(&mut outs[i]))
            .collect();
        let (scratch, memo) = (&mut self.scratch, &mut self.memo);
        compare_bodies(legacy, &subset, rules, scratch, memo, &mut found);
        for (i, found) in whole.into_iter().zip(found) {
            outs[i] = found;
        }
    }
}

impl Scratch {
    /// Buffers kept between pairs; a larger body's are freed after it, so
    /// that one huge answer does not pin its size in memory for the run.
    const KEEP: usize = 1 << 20;

    fn trim(&mut self) {
        let largest = self.others.iter().map(Vec::capacity).max().unwrap_or(0);
        if self.legacy.capacity().max(largest) > Self::KEEP {
            *self = Scratch::default();
        }
    }
}

fn compare_headers(legacy: &[Header], new: &[Header], rules: &RouteRules, out: &mut Vec<Mismatch>) {
    // Each side's compared headers sorted by name, then walked together:
    // this runs for every exchange on the collector, where looking each
    // name up in both lists cost more than the rest of the comparison.
    let (legacy, new) = (compared(legacy, rules), compared(new, rules));
    let (mut l, mut n) = (&legacy[..], &new[..]);
    while let Some(name) = match (l.first(), n.first()) {
        (Some(a), Some(b)) => Some(a.0.as_ref().min(b.0.as_ref())),
        (Some(a), None) | (None, Some(a)) => Some(a.0.as_ref()),
        (None, None) => None,
    } {
        let (lv, rest) = take_values(l, name);
        l = rest;
        let (nv, rest) = take_values(n, name);
        n = rest;
        let lv = lv.map(|v| replace_in_header(name, v, rules));
        let nv = nv.map(|v| replace_in_header(name, v, rules));
        if lv != nv {
            let shown = |v: Option<Cow<str>>| v.map(|v| rules.shown(name, v.into_owned()));
            out.push(Mismatch {
                kind: MismatchKind::Header,
                legacy: shown(lv),
                new: shown(nv),
                path: Some(name.to_string()),
                diff: None,
            });
        }
    }
}

/// A compared header: its name in lower case, its value.
type Compared<'a> = (Cow<'a, str>, &'a str);

/// The headers compared (those the rules do not ignore), names in lower
/// case, sorted by name; values of one name keep their order.
fn compared<'a>(headers: &'a [Header], rules: &RouteRules) -> Vec<Compared<'a>> {
    let mut kept: Vec<Compared> = headers
        .iter()
        .map(|h| (lower_case(&h.0), h.1.as_str()))
        .filter(|(name, _)| !rules.ignores_header(name))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept
}

fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The values of the headers named `name` at the head of `sorted`, joined
/// by ", " as a list header's would be (borrowed when there is one), and
/// the rest of `sorted`.
fn take_values<'a, 's>(
    sorted: &'s [Compared<'a>],
    name: &str,
) -> (Option<Cow<'a, str>>, &'s [Compared<'a>]) {
    let count = sorted.iter().take_while(|(n, _)| n == name).count();
    let (these, rest) = sorted.split_at(count);
    let value = match these {
        [] => None,
        [(_, one)] => Some(Cow::Borrowed(*one)),
        [(_, first), more @ ..] => {
            let mut joined = first.to_string();
            for (_, value) in more {
                joined.push_str(", ");
                joined.push_str(value);
            }
            Some(Cow::Owned(joined))
        }
    };
    (value, rest)
}

/// A header value after the rules' replacements for that header.
fn replace_in_header<'a>(name: &str, value: Cow<'a, str>, rules: &RouteRules) -> Cow<'a, str> {
    let mut value = value;
    for item in &rules.header_replace {
        let rule = &item.rule;
        if rule
            .header
            .as_deref()
            .is_some_and(|h| h == name || h == "*")
            && rule.regex.is_match(&value)
        {
            item.hit();
            value = Cow::Owned(
                rule.regex
                    .replace_all(&value, rule.with.as_str())
                    .into_owned(),
            );
        }
    }
    value
}

/// Decoded bodies larger than this are compared as sent.
const MAX_DECODED: usize = 64 << 20;

/// The body as compared: its Content-Encoding (gzip, deflate, br) undone,
/// text in another charset turned into UTF-8, and the rules' replacements
/// made. As sent where none applies or decoding fails.
fn decoded<'a>(r: &'a Response, rules: &RouteRules) -> Cow<'a, [u8]> {
    let raw = r.body.bytes().as_ref();
    let mut body = match header_value(&r.headers, "content-encoding") {
        Some(coding) if !coding.trim().eq_ignore_ascii_case("identity") && !raw.is_empty() => {
            match crate::encoding::decode(coding, raw, MAX_DECODED) {
                Ok(body) => Cow::Owned(body),
                Err(_) => Cow::Borrowed(raw),
            }
        }
        _ => Cow::Borrowed(raw),
    };
    if let Some(charset) = charset(&r.headers) {
        if let Some(encoding) = encoding_rs::Encoding::for_label(charset.as_bytes()) {
            if encoding != encoding_rs::UTF_8 {
                let (text, _, _) = encoding.decode(&body);
                body = Cow::Owned(text.into_owned().into_bytes());
            }
        }
    }
    if rules.body_replace.is_empty() {
        return body;
    }
    let Ok(mut text) = String::from_utf8(body.into_owned()) else {
        return Cow::Borrowed(raw);
    };
    for item in &rules.body_replace {
        if item.rule.regex.is_match(&text) {
            item.hit();
            text = item
                .rule
                .regex
                .replace_all(&text, item.rule.with.as_str())
                .into_owned();
        }
    }
    Cow::Owned(text.into_bytes())
}

/// The charset parameter of the Content-Type, if any.
fn charset(headers: &[Header]) -> Option<String> {
    let content_type = header_value(headers, "content-type")?;
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// The bodies of `legacy` and each of `others`, compared as JSON where
/// either side says or looks so (the legacy body parsed once for all), as
/// text otherwise; a pair compared before under the same rules finds what
/// it found then.
fn compare_bodies(
    legacy: &Response,
    others: &[&Response],
    rules: &Arc<RouteRules>,
    scratch: &mut Scratch,
    memo: &mut memo::Memo,
    outs: &mut [Vec<Mismatch>],
) {
    let l = decoded(legacy, rules);
    let l = l.as_ref();
    let bodies: Vec<Cow<[u8]>> = others.iter().map(|o| decoded(o, rules)).collect();
    let declared_json = |r: &Response| {
        header_value(&r.headers, "content-type").is_some_and(|ct| ct.contains("json"))
    };
    // Identical bytes cannot differ under any rule: no need to parse them.
    let differ: Vec<bool> = bodies.iter().map(|n| n.as_ref() != l).collect();
    let as_json: Vec<bool> = others
        .iter()
        .zip(&differ)
        .map(|(o, &d)| d && (declared_json(legacy) || declared_json(o) || looks_like_json(l)))
        .collect();
    let mut done: Vec<bool> = (0..others.len())
        .map(|i| differ[i] && recall(memo, rules, as_json[i], l, &bodies[i], &mut outs[i]))
        .collect();
    if (0..others.len()).any(|i| as_json[i] && !done[i]) {
        let Scratch {
            parser,
            legacy: l_copy,
            others: copies,
        } = scratch;
        copies.resize_with(others.len(), Vec::new);
        l_copy.clear();
        l_copy.extend_from_slice(l);
        let sizes: usize = bodies.iter().map(|b| b.len()).sum();
        let mut tape = tape::Tape::with_capacity(l.len() + sizes);
        let lv = tape.push(l_copy, parser);
        for (i, copy) in copies.iter_mut().enumerate() {
            if !as_json[i] || done[i] {
                continue;
            }
            let n = bodies[i].as_ref();
            copy.clear();
            copy.extend_from_slice(n);
            let found = match (&lv, tape.push(copy, parser)) {
                (Ok(lv), Ok(nv)) => {
                    let (mismatches, hits) = json::compare(&tape, *lv, nv, rules);
                    memo::Outcome { mismatches, hits }
                }
                (Ok(_), Err(_)) | (Err(_), Ok(_)) if !l.is_empty() && !n.is_empty() => {
                    memo::Outcome {
                        mismatches: vec![body_mismatch(l, n, None)],
                        hits: Default::default(),
                    }
                }
                _ => continue,
            };
            outs[i].extend(found.mismatches.iter().cloned());
            memo.remember(rules, true, l, n, found);
            done[i] = true;
        }
    }
    for (i, n) in bodies.iter().enumerate() {
        if differ[i] && !done[i] {
            let mismatch = body_mismatch(l, n, text_diff(l, n));
            outs[i].push(mismatch.clone());
            let found = memo::Outcome {
                mismatches: vec![mismatch],
                hits: Default::default(),
            };
            memo.remember(rules, as_json[i], l, n, found);
        }
    }
}

/// Whether `legacy` and `other` were compared before under `rules` (and
/// the same choice of JSON): if so, what that found goes to `out`, and the
/// rules it applied count their uses again.
fn recall(
    memo: &mut memo::Memo,
    rules: &Arc<RouteRules>,
    as_json: bool,
    legacy: &[u8],
    other: &[u8],
    out: &mut Vec<Mismatch>,
) -> bool {
    let Some(known) = memo.recall(rules, as_json, legacy, other) else {
        return false;
    };
    out.extend(known.mismatches.iter().cloned());
    known.hits.replay(rules);
    true
}

/// Bodies of which one was too long to keep whole: equal when their length
/// and SHA-256 are.
fn compare_by_hash(legacy: &Response, other: &Response, out: &mut Vec<Mismatch>) {
    let whole = |r: &Response| match &r.truncated {
        Some(t) => (t.len, t.sha256.clone()),
        None => (
            r.body.bytes().len() as u64,
            crate::capture::sha256_of_bytes(r.body.bytes()),
        ),
    };
    let (l, n) = (whole(legacy), whole(other));
    if l != n {
        out.push(Mismatch {
            kind: MismatchKind::Body,
            path: Some("sha256".to_string()),
            legacy: Some(format!("{} bytes, sha256 {:.16}", l.0, l.1)),
            new: Some(format!("{} bytes, sha256 {:.16}", n.0, n.1)),
            diff: None,
        });
    }
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

fn body_mismatch(l: &[u8], n: &[u8], diff: Option<String>) -> Mismatch {
    Mismatch {
        kind: MismatchKind::Body,
        path: None,
        legacy: Some(short_bytes(l)),
        new: Some(short_bytes(n)),
        diff,
    }
}

/// A unified line diff of two text bodies; `None` when either is not UTF-8.
fn text_diff(l: &[u8], n: &[u8]) -> Option<String> {
    let (l, n) = (std::str::from_utf8(l).ok()?, std::str::from_utf8(n).ok()?);
    let diff = similar::TextDiff::from_lines(l, n);
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header("legacy", "new")
        .to_string();
    Some(shorten(text, 4000))
}

const SHORT: usize = 200;

fn short_json(v: &serde_json::Value) -> String {
    shorten(v.to_string(), SHORT)
}

fn short_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(text) => shorten(text.to_string(), SHORT),
        Err(_) => format!("<{} bytes of binary>", b.len()),
    }
}

fn shorten(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Body;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|&(n, v)| Header(n.into(), v.into()))
                .collect(),
            body: Body::from(body),
            latency_us: 0,
            truncated: None,
        }
    }

    #[test]
    fn comparing_against_two_answers_at_once_finds_what_two_comparisons_find() {
        let route = Route::of("GET", "/x");
        let json = [("content-type", "application/json")];
        let legacy = response(200, &json, r#"{"a":1,"b":[1,2],"c":"x"}"#);
        let answers = [
            response(200, &json, r#"{"a":2,"b":[1,2,3]}"#),
            response(200, &json, r#"{"b":[1,2],"a":1,"c":"x"}"#),
            response(200, &json, r#"{"a":1,"b":[1,2],"c":"x"}"#),
            response(500, &[], "not json at all"),
            response(200, &json, r#"{"a":1,"#),
            response(200, &[], ""),
        ];
        let mut differ = Differ::new(RuleSet::default());
        for a in &answers {
            for b in &answers {
                let one_by_one = [
                    differ.compare(&route, &legacy, a),
                    differ.compare(&route, &legacy, b),
                ];
                let at_once = differ.compare_each(&route, &legacy, [a, b]);
                assert_eq!(format!("{at_once:?}"), format!("{one_by_one:?}"));
            }
        }
        // A legacy answer that is not JSON, against JSON and text.
        let text = response(200, &[], "plain");
        let [j, t] = differ.compare_each(&route, &text, [&answers[0], &answers[3]]);
        assert_eq!(
            format!("{j:?}"),
            format!("{:?}", differ.compare(&route, &text, &answers[0]))
        );
        assert_eq!(
            format!("{t:?}"),
            format!("{:?}", differ.compare(&route, &text, &answers[3]))
        );
        assert!(!j.is_empty() && !t.is_empty());
    }

    #[test]
    fn a_pair_compared_again_finds_what_it_found_and_counts_its_rules_again() {
        let rules = "[defaults]\nignore_paths = [\"$.at\"]\n\
                     tolerance = [{ path = \"$.total\", absolute = 0.5 }]\n\
                     unordered_arrays = [{ path = \"$.items\" }]\n\
                     same_kind = [{ path = \"$.id\", kind = \"uuid\" }]\n\
                     [[route]]\nmatch = \"GET /strict\"\nignore_paths = [\"$.note\"]\n";
        let route = Route::of("GET", "/x");
        let json = [("content-type", "application/json")];
        let legacy = response(
            200,
            &json,
            r#"{"id":"0b6e4b9a-1c2d-4e5f-8a9b-0c1d2e3f4a5b","at":1,"total":10.0,"items":[1,2],"note":"a","n":1}"#,
        );
        let new = response(
            200,
            &json,
            r#"{ "n": 2, "note": "b", "items": [2, 1], "total": 10.25, "at": 2, "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7" }"#,
        );
        let text = [("content-type", "text/plain")];
        let pairs = [
            (&legacy, &new),
            (
                &response(200, &text, "one\ntwo\n"),
                &response(200, &text, "one\n2\n"),
            ),
        ];
        let mut again = Differ::new(RuleSet::parse(rules).unwrap());
        for round in 1..=3u64 {
            for (l, n) in pairs {
                let fresh = Differ::new(RuleSet::parse(rules).unwrap()).compare(&route, l, n);
                let found = again.compare(&route, l, n);
                assert_eq!(format!("{found:?}"), format!("{fresh:?}"), "round {round}");
                assert!(!found.is_empty());
            }
            // Each rule counted once per comparison of the JSON pair, the
            // pairs found again included.
            let applied = again.rules_for(&route);
            for hits in [
                applied.ignore_paths[0].hits(),
                applied.tolerance[0].hits(),
                applied.unordered_arrays[0].hits(),
                applied.same_kind[0].hits(),
            ] {
                assert_eq!(hits, round);
            }
            // Found again, not compared anew, after the first round.
            assert_eq!(again.memo.recalled(), (round - 1) * 2);
        }
        // The same bodies under another route's rules are compared anew:
        // `$.note` is ignored there.
        let strict = Route::of("GET", "/strict");
        let paths = |found: Vec<Mismatch>| -> Vec<String> {
            found.into_iter().filter_map(|m| m.path).collect()
        };
        assert_eq!(
            paths(again.compare(&route, &legacy, &new)),
            ["$.note", "$.n"]
        );
        assert_eq!(paths(again.compare(&strict, &legacy, &new)), ["$.n"]);
    }

    #[test]
    fn a_tolerance_on_timestamps_is_in_seconds() {
        let rules = RuleSet::parse("[defaults]\ntolerance = [{ path = \"$.at\", absolute = 2 }]\n")
            .unwrap();
        let mut differ = Differ::new(rules);
        let route = Route::of("POST", "/hooks");
        let json = [("content-type", "application/json")];
        let at = |t: &str| response(200, &json, &format!(r#"{{"at":"{t}"}}"#));
        let legacy = at("2026-12-01T10:00:00.250Z");
        for close in [
            "2026-12-01T10:00:01.5Z",
            "2026-12-01T11:00:01+01:00",
            "2026-12-01 10:00:00",
        ] {
            assert!(
                differ.compare(&route, &legacy, &at(close)).is_empty(),
                "{close}"
            );
        }
        for far in [
            "2026-12-01T10:00:05Z",
            "2026-12-01T10:00:01+01:00",
            "not a time",
        ] {
            assert_eq!(differ.compare(&route, &legacy, &at(far)).len(), 1, "{far}");
        }
    }

    #[test]
    fn noise_headers_are_ignored_by_default() {
        let route = Route::of("GET", "/x");
        let a = response(
            200,
            &[
                ("date", "1"),
                ("server", "a"),
                ("x-request-id", "1"),
                ("content-length", "2"),
            ],
            "{}",
        );
        let b = response(
            200,
            &[("date", "2"), ("server", "b"), ("x-request-id", "2")],
            "{ }",
        );
        assert!(Differ::default().compare(&route, &a, &b).is_empty());
    }

    #[test]
    fn status_header_and_text_body() {
        let route = Route::of("GET", "/x");
        let a = response(200, &[("etag", "1")], "one\ntwo\n");
        let b = response(404, &[], "one\nthree\n");
        let found = Differ::default().compare(&route, &a, &b);
        let kinds: Vec<_> = found.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MismatchKind::Status,
                MismatchKind::Header,
                MismatchKind::Body
            ]
        );
        assert_eq!(found[1].path.as_deref(), Some("etag"));
        let diff = found[2].diff.as_deref().unwrap();
        assert!(diff.contains("-two") && diff.contains("+three"), "{diff}");
    }

    #[test]
    fn repeated_headers_compare_as_one_list_whatever_their_case_and_place() {
        let route = Route::of("GET", "/x");
        let a = response(
            200,
            &[
                ("vary", "accept"),
                ("X-Tag", "b"),
                ("vary", "origin"),
                ("x-only", "1"),
            ],
            "",
        );
        let b = response(
            200,
            &[("x-tag", "b"), ("Vary", "accept, origin"), ("x-new", "2")],
            "",
        );
        let found = Differ::default().compare(&route, &a, &b);
        let named: Vec<_> = found
            .iter()
            .map(|m| {
                (
                    m.path.as_deref().unwrap(),
                    m.legacy.as_deref(),
                    m.new.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [("x-new", None, Some("2")), ("x-only", Some("1"), None)]
        );
        let c = response(200, &[("vary", "origin, accept"), ("x-tag", "b")], "");
        let found = Differ::default().compare(&route, &a, &c);
        assert_eq!(
            found[0].path.as_deref(),
            Some("vary"),
            "the order of values counts"
        );
        assert_eq!(found[0].legacy.as_deref(), Some("accept, origin"));
    }

    #[test]
    fn credentials_are_compared_but_not_shown() {
        let route = Route::of("GET", "/x");
        let a = response(200, &[("set-cookie", "session=abc")], "");
        let b = response(200, &[("set-cookie", "session=xyz")], "");
        let found = Differ::default().compare(&route, &a, &b);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].legacy.as_deref(), Some("<redacted, 11 bytes>"));
    }

    #[test]
    fn bodies_compare_after_content_decoding() {
        use std::io::Write;
        let route = Route::of("GET", "/x");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"a": 1}"#).unwrap();
        let mut a = response(200, &[("content-encoding", "gzip")], "");
        a.body = Body(bytes::Bytes::from(gz.finish().unwrap()));
        let b = response(200, &[], r#"{"a":1}"#);
        assert!(Differ::default().compare(&route, &a, &b).is_empty());
        let c = response(200, &[], r#"{"a":2}"#);
        assert_eq!(
            Differ::default().compare(&route, &a, &c)[0].path.as_deref(),
            Some("$.a")
        );
    }

    fn with_rules(text: &str) -> Differ {
        Differ::new(RuleSet::parse(text).unwrap())
    }

    #[test]
    fn a_rules_file_adds_headers_to_redact() {
        let route = Route::of("GET", "/x");
        let mut differ = with_rules("[defaults]\nredact_headers = [\"X-Session\"]\n");
        let a = response(200, &[("x-session", "alpha"), ("x-plain", "1")], "");
        let b = response(200, &[("x-session", "beta"), ("x-plain", "2")], "");
        let found = differ.compare(&route, &a, &b);
        assert_eq!(found.len(), 2, "still compared");
        assert_eq!(found[1].path.as_deref(), Some("x-session"));
        assert_eq!(found[1].legacy.as_deref(), Some("<redacted, 5 bytes>"));
        assert_eq!(found[0].legacy.as_deref(), Some("1"));
    }

    #[test]
    fn status_only_routes() {
        let route = Route::of("GET", "/x");
        let mut differ = with_rules("[[route]]\nmatch = \"GET /x\"\nstatus_only = true\n");
        let a = response(200, &[("etag", "1")], "one");
        let b = response(200, &[("etag", "2")], "two");
        assert!(differ.compare(&route, &a, &b).is_empty());
        let c = response(500, &[], "two");
        assert_eq!(differ.compare(&route, &a, &c).len(), 1);
        assert!(differ.rules.unused().is_empty());
    }

    #[test]
    fn replacements_in_headers_and_text_bodies() {
        let route = Route::of("GET", "/x");
        let mut differ = with_rules(
            r#"[defaults]
            header_replace = [{ header = "location", regex = '/orders/\d+', with = "/orders/N" }]
            body_replace = [{ regex = 'took \d+ms', with = "took Nms" }]
            "#,
        );
        let a = response(200, &[("location", "/orders/17")], "done, took 12ms\n");
        let b = response(200, &[("location", "/orders/90")], "done, took 345ms\n");
        assert!(differ.compare(&route, &a, &b).is_empty());
        let c = response(200, &[("location", "/carts/90")], "failed, took 3ms\n");
        let kinds: Vec<_> = differ
            .compare(&route, &a, &c)
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(kinds, [MismatchKind::Header, MismatchKind::Body]);
    }

    #[test]
    fn text_in_other_charsets_is_compared_as_text() {
        let route = Route::of("GET", "/x");
        let mut latin1 = response(
            200,
            &[("content-type", "text/plain; charset=ISO-8859-1")],
            "",
        );
        latin1.body = Body(bytes::Bytes::from_static(b"caf\xe9\n"));
        let utf8 = response(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "café\n",
        );
        // The bodies are the same text; only the declared charset differs.
        let found = Differ::default().compare(&route, &latin1, &utf8);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path.as_deref(), Some("content-type"));
    }

    #[test]
    fn json_bodies_compare_structurally() {
        let route = Route::of("GET", "/x");
        let a = response(
            200,
            &[("content-type", "application/json")],
            r#"{"a":1,"b":[1,2]}"#,
        );
        let b = response(
            200,
            &[("content-type", "application/json")],
            r#"{ "b": [1, 2], "a": 1.0 }"#,
        );
        assert!(Differ::default().compare(&route, &a, &b).is_empty());
    }

    #[test]
    fn parse_buffers_are_kept_only_for_ordinary_bodies() {
        let route = Route::of("GET", "/x");
        let json = [("content-type", "application/json")];
        let mut differ = Differ::default();
        let (a, b) = (
            response(200, &json, "[1, 2]"),
            response(200, &json, "[1, 3]"),
        );
        assert_eq!(differ.compare(&route, &a, &b).len(), 1);
        assert!(
            differ.scratch.legacy.capacity() > 0,
            "kept for the next pair"
        );
        let big = format!("[\"{}\"]", "x".repeat(2 << 20));
        let (a, b) = (response(200, &json, &big), response(200, &json, "[\"y\"]"));
        assert_eq!(differ.compare(&route, &a, &b).len(), 1);
        assert_eq!(
            differ.scratch.legacy.capacity(),
            0,
            "freed after a large body"
        );
    }

    #[test]
    fn group_path_collapses_indices() {
        let m = Mismatch {
            kind: MismatchKind::Value,
            path: Some("$.items[12].tags[0]['a[1]']['it\\'s'][3]".into()),
            legacy: None,
            new: None,
            diff: None,
        };
        assert_eq!(
            m.group_path().unwrap(),
            "$.items[*].tags[*]['a[1]']['it\\'s'][*]"
        );
    }
}
