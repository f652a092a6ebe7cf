//! Redaction at record time: secrets and personal data in a capture are
//! replaced by keyed tokens that keep their type and shape (digits stay
//! digits, letters letters, separators and length as they were; a card
//! number stays a Luhn-valid number of its brand), so that equal values
//! stay equal (diff, correlation and session keys work on a redacted
//! capture as on the original) and cannot be recovered without the key.
//!
//! What is redacted is named in a `[redact]` table (docs/redaction.md):
//! headers, JSONPath fields of request and answer bodies, query, form and
//! cookie keys, and detectors (card numbers, emails, JWTs, bearer tokens).
//! Each rule counts what it replaced; the counts, never the values, go into
//! the capture's trailer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::capture::{Exchange, Header, Request, Response};
use crate::correlate::places::{self, Place};

/// The environment variable holding the key, when no key file is given.
pub const KEY_VARIABLE: &str = "TANDEM_REDACT_KEY";

/// The `[redact]` table of a redaction file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRules {
    /// Headers whose values are replaced (Authorization keeps its scheme).
    #[serde(default)]
    pub headers: Vec<String>,
    /// JSONPath queries (RFC 9535) into request and answer bodies.
    #[serde(default)]
    pub json: Vec<String>,
    /// Query parameters.
    #[serde(default)]
    pub query: Vec<String>,
    /// Fields of form bodies.
    #[serde(default)]
    pub form: Vec<String>,
    /// Cookies (Cookie in requests, Set-Cookie in answers).
    #[serde(default)]
    pub cookies: Vec<String>,
    /// Detectors run over every value: `card`, `email`, `jwt`, `bearer`.
    #[serde(default)]
    pub detect: Vec<Detector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactFile {
    redact: RedactRules,
}

/// A kind of value found wherever it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// Payment card numbers: 13 to 19 digits (spaces or dashes allowed)
    /// with a known issuer prefix and a valid Luhn check digit.
    Card,
    /// Email addresses.
    Email,
    /// JSON Web Tokens (three base64url parts, the first two JSON).
    Jwt,
    /// The token of `Authorization: Bearer`.
    Bearer,
}

impl Detector {
    fn name(self) -> &'static str {
        match self {
            Detector::Card => "detect:card",
            Detector::Email => "detect:email",
            Detector::Jwt => "detect:jwt",
            Detector::Bearer => "detect:bearer",
        }
    }
}

/// Applies a redaction file's rules with a key, counting per rule.
pub struct Redactor {
    tokens: Tokens,
    headers: Vec<String>,
    json: Vec<(String, JsonPath)>,
    query: Vec<String>,
    form: Vec<String>,
    cookies: Vec<String>,
    detect: Vec<Detector>,
    patterns: Patterns,
    counts: BTreeMap<String, u64>,
}

struct Patterns {
    card: regex::Regex,
    email: regex::Regex,
    jwt: regex::Regex,
}

impl Redactor {
    /// The rules of `path`'s `[redact]` table, with `key` (at least 16
    /// bytes: a short key could be guessed).
    pub fn load(path: &Path, key: Vec<u8>) -> anyhow::Result<Redactor> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let file: RedactFile = toml::from_str(&text)
            .with_context(|| format!("{}: not a redaction file", path.display()))?;
        Redactor::new(file.redact, key).with_context(|| format!("{}", path.display()))
    }

    /// A redactor of `rules` with `key`.
    pub fn new(rules: RedactRules, key: Vec<u8>) -> anyhow::Result<Redactor> {
        anyhow::ensure!(
            key.len() >= 16,
            "the redaction key must be at least 16 bytes (it has {})",
            key.len()
        );
        let json = rules
            .json
            .iter()
            .map(|q| {
                JsonPath::parse(q)
                    .map(|p| (q.clone(), p))
                    .with_context(|| format!("json = {q:?}: not a JSONPath query"))
            })
            .collect::<anyhow::Result<_>>()?;
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        Ok(Redactor {
            tokens: Tokens {
                key,
                issued: HashMap::new(),
                strings: HashMap::new(),
            },
            headers: lower(&rules.headers),
            json,
            query: rules.query,
            form: rules.form,
            cookies: rules.cookies,
            detect: rules.detect,
            patterns: Patterns {
                card: regex::Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("valid"),
                email: regex::Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
                    .expect("valid"),
                jwt: regex::Regex::new(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
                    .expect("valid"),
            },
            counts: BTreeMap::new(),
        })
    }

    /// The key: `key_file`'s bytes (trimmed), else [`KEY_VARIABLE`]'s.
    pub fn key(key_file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
        match key_file {
            Some(path) => Ok(std::fs::read(path)
                .with_context(|| format!("{}: cannot read the redaction key", path.display()))?
                .trim_ascii()
                .to_vec()),
            None => std::env::var(KEY_VARIABLE)
                .map(String::into_bytes)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "redaction needs a key: --redact-key-file FILE or {KEY_VARIABLE} \
                         (at least 16 bytes; keep it secret: with it tokens can be checked \
                         against guesses)"
                    )
                }),
        }
    }

    /// How many values each rule replaced so far, by rule.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Takes the counts, starting afresh (a new capture file).
    pub fn take_counts(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.counts)
    }

    /// Redacts `exchange` in place: its request and its answer, and its
    /// session key when that is a listed header's value (as a recorder
    /// keyed by `--session-header` takes it).
    pub fn apply(&mut self, exchange: &mut Exchange) {
        let session_is_listed = exchange.request.headers.iter().any(|h| {
            h.1 == exchange.session && self.headers.iter().any(|l| h.0.eq_ignore_ascii_case(l))
        });
        if session_is_listed {
            exchange.session = self.tokens.shaped(&exchange.session);
        }
        exchange.request = self.request(&exchange.request);
        if let Some(response) = exchange.response.take() {
            exchange.response = Some(self.response(response));
        }
    }

    fn request(&mut self, request: &Request) -> Request {
        let mut swaps = Vec::new();
        let json_pointers = self.json_pointers(&request.headers, &request.body);
        for (place, value) in places::request_values(request) {
            let rule = match &place {
                Place::Query(name) if self.query.contains(name) => Some(format!("query:{name}")),
                Place::Form(name) if self.form.contains(name) => Some(format!("form:{name}")),
                Place::Cookie(name) if self.cookies.contains(name) => {
                    Some(format!("cookie:{name}"))
                }
                Place::Json(path) => places::pointer(path)
                    .and_then(|p| json_pointers.get(&p).cloned())
                    .map(|q| format!("json:{q}")),
                Place::Bearer if self.detect.contains(&Detector::Bearer) => {
                    Some(Detector::Bearer.name().to_string())
                }
                // Listed headers are redacted whole, below.
                Place::Header(name) if self.headers.contains(name) => continue,
                Place::Bearer if self.headers.iter().any(|h| h == "authorization") => continue,
                _ => None,
            };
            if let Some(replaced) = self.value(rule, &value) {
                swaps.push((place, replaced));
            }
        }
        let mut out = match swaps.is_empty() {
            true => request.clone(),
            false => places::rewritten(request, &swaps),
        };
        self.listed_headers(&mut out.headers);
        out
    }

    fn response(&mut self, mut response: Response) -> Response {
        let json_pointers = self.json_pointers(&response.headers, &response.body);
        let mut swaps = Vec::new();
        for (place, value) in places::answer_values(&response.headers, &response.body) {
            let rule = match &place {
                Place::Cookie(name) if self.cookies.contains(name) => {
                    Some(format!("cookie:{name}"))
                }
                Place::Json(path) => places::pointer(path)
                    .and_then(|p| json_pointers.get(&p).cloned())
                    .map(|q| format!("json:{q}")),
                // Location and Set-Cookie are headers: listed ones below.
                Place::Location => continue,
                _ => None,
            };
            if let Some(replaced) = self.value(rule, &value) {
                swaps.push((place, replaced));
            }
        }
        if !swaps.is_empty() {
            response = places::rewritten_answer(&response, &swaps);
        }
        self.listed_headers(&mut response.headers);
        response
    }

    /// JSON pointers of the body's nodes the JSONPath rules select, each
    /// with its rule.
    fn json_pointers(
        &self,
        headers: &[Header],
        body: &crate::capture::Body,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.json.is_empty() {
            return out;
        }
        let Some(doc) = places::json_body(headers, body) else {
            return out;
        };
        for (text, path) in &self.json {
            for node in path.query_located(&doc) {
                out.insert(node.location().to_json_pointer(), text.clone());
            }
        }
        out
    }

    /// What `value` becomes: a whole token when a rule names its place,
    /// else with what the detectors find replaced; `None` when unchanged.
    fn value(&mut self, rule: Option<String>, value: &Value) -> Option<Value> {
        if let Some(rule) = rule {
            let replaced = match value {
                Value::Number(n) => self.tokens.number(&n.to_string()),
                Value::String(s) => Value::String(self.tokens.shaped(s)),
                _ => return None,
            };
            *self.counts.entry(rule).or_default() += 1;
            return Some(replaced);
        }
        let Value::String(text) = value else {
            return None;
        };
        if let Some(token) = self.tokens.repeated(text) {
            let token = Value::String(token.clone());
            *self.counts.entry("repeated".to_string()).or_default() += 1;
            return Some(token);
        }
        let found = self.detected(text);
        (found != *text).then_some(Value::String(found))
    }

    /// `text` with what the detectors find in it replaced.
    fn detected(&mut self, text: &str) -> String {
        let Redactor {
            detect,
            patterns,
            tokens,
            counts,
            ..
        } = self;
        let mut out = text.to_string();
        for &detector in detect.iter() {
            let (pattern, check): (&regex::Regex, fn(&str) -> bool) = match detector {
                Detector::Card => (&patterns.card, is_card),
                Detector::Email => (&patterns.email, |_| true),
                Detector::Jwt => (&patterns.jwt, |_| true),
                Detector::Bearer => continue,
            };
            let mut replaced = 0;
            out = pattern
                .replace_all(&out, |m: &regex::Captures| {
                    let found = &m[0];
                    if !check(found) {
                        return found.to_string();
                    }
                    replaced += 1;
                    match detector {
                        Detector::Card => tokens.card(found),
                        _ => tokens.shaped(found),
                    }
                })
                .into_owned();
            if replaced > 0 {
                *counts.entry(detector.name().to_string()).or_default() += replaced;
            }
        }
        out
    }

    /// The listed headers' values replaced whole (Authorization keeps its
    /// scheme, so a bearer token stays one), and detectors over the rest.
    fn listed_headers(&mut self, headers: &mut [Header]) {
        for Header(name, value) in headers.iter_mut() {
            // The listed names are lower case: no lower-cased copy of every
            // header's name on the import loop.
            let Some(lower) = self.headers.iter().find(|l| name.eq_ignore_ascii_case(l)) else {
                continue;
            };
            *value = match (lower.as_str(), value.split_once(' ')) {
                ("authorization" | "proxy-authorization", Some((scheme, credentials))) => {
                    compact_str::format_compact!(
                        "{scheme} {}",
                        self.tokens.shaped(credentials.trim())
                    )
                }
                _ => self.tokens.shaped(value).into(),
            };
            *self.counts.entry(format!("header:{lower}")).or_default() += 1;
        }
    }
}

/// Tokens issued with one key. A shape keeps few values apart when it is
/// short (`u12` has 2,600 tokens of its shape): a token already issued for
/// another value is drawn again, so that distinct values stay distinct.
/// The same values in the same order get the same tokens, run after run.
struct Tokens {
    key: Vec<u8>,
    /// Token to the value it stands for.
    issued: HashMap<String, String>,
    /// Value to its token, for strings: a value once redacted is redacted
    /// wherever it appears after (a customer id in an answer, then in a
    /// later request's query), so that links between places hold.
    strings: HashMap<String, String>,
}

/// Strings this long or longer, once redacted, are redacted wherever they
/// appear after; shorter ones (and numbers) only where a rule says: `1` or
/// `a` everywhere would change what the traffic means.
const REPEATED_FROM: usize = 2;

/// Tokens remembered, at most; past it the memory starts afresh (two
/// values far apart may then share a token).
const ISSUED: usize = 4_000_000;

impl Tokens {
    fn shaped(&mut self, value: &str) -> String {
        let token = self.fresh(value, |key, attempt| shaped_with(key, value, attempt));
        if value.chars().count() >= REPEATED_FROM {
            self.strings.insert(value.to_string(), token.clone());
        }
        token
    }

    /// The token of a string already redacted somewhere, if it was.
    fn repeated(&self, value: &str) -> Option<&String> {
        self.strings.get(value)
    }

    fn card(&mut self, value: &str) -> String {
        self.fresh(value, |key, attempt| card_token(key, value, attempt))
    }

    fn number(&mut self, value: &str) -> Value {
        let token = self.fresh(value, |key, attempt| number_token(key, value, attempt));
        serde_json::from_str(&token).unwrap_or(Value::String(token))
    }

    fn fresh(&mut self, value: &str, make: impl Fn(&[u8], u32) -> String) -> String {
        if self.issued.len() >= ISSUED {
            self.issued.clear();
            self.strings.clear();
        }
        // A shape with as many tokens as it has values ends the search.
        for attempt in 0..64 {
            let token = make(&self.key, attempt);
            match self.issued.get(&token) {
                Some(original) if original != value => continue,
                Some(_) => return token,
                None => {
                    self.issued.insert(token.clone(), value.to_string());
                    return token;
                }
            }
        }
        make(&self.key, 0)
    }
}

/// The keyed bytes a token is drawn from: HMAC-SHA256 of the value and the
/// attempt, with a block counter for longer values.
fn keyed_bytes(key: &[u8], value: &str, attempt: u32, needed: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(needed + 32);
    let mut block = 0u32;
    while out.len() < needed {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        mac.update(&attempt.to_be_bytes());
        mac.update(&block.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        block += 1;
    }
    out
}

/// `value` with each digit, lower-case and upper-case letter replaced by a
/// keyed one of the same class; everything else kept.
pub fn shaped(key: &[u8], value: &str) -> String {
    shaped_with(key, value, 0)
}

fn shaped_with(key: &[u8], value: &str, attempt: u32) -> String {
    let bytes = keyed_bytes(key, value, attempt, value.chars().count());
    value
        .chars()
        .zip(bytes)
        .map(|(c, b)| match c {
            '0'..='9' => (b'0' + b % 10) as char,
            'a'..='z' => (b'a' + b % 26) as char,
            'A'..='Z' => (b'A' + b % 26) as char,
            other => other,
        })
        .collect()
}

/// A JSON number's token: as many digits, no leading zero, sign kept.
fn number_token(key: &[u8], number: &str, attempt: u32) -> String {
    let mut token = shaped_with(key, number, attempt);
    let first_digit = token.find(|c: char| c.is_ascii_digit());
    if let Some(i) = first_digit {
        if token[i..].len() > 1 && token.as_bytes()[i] == b'0' {
            token.replace_range(i..=i, "1");
        }
    }
    token
}

/// Whether `text` (digits with spaces or dashes) is a payment card number:
/// 13 to 19 digits, a known issuer prefix, a valid Luhn check digit.
pub fn is_card(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| d - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let issuer = digits[0] == 4
        || (51..=55).contains(&prefix(2))
        || (2221..=2720).contains(&prefix(4))
        || matches!(prefix(2), 34 | 37 | 36 | 38 | 65)
        || prefix(4) == 6011
        || (3528..=3589).contains(&prefix(4));
    issuer && luhn_sum(&digits) % 10 == 0
}

fn luhn_sum(digits: &[u8]) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            match i % 2 {
                1 if d * 2 > 9 => d * 2 - 9,
                1 => d * 2,
                _ => d,
            }
        })
        .sum()
}

/// A card number's token: the issuer's first digit kept, the middle keyed,
/// the check digit made valid again, separators where they were.
fn card_token(key: &[u8], card: &str, attempt: u32) -> String {
    let shaped = shaped_with(key, card, attempt);
    let mut digits: Vec<u8> = shaped
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|d| d - b'0')
        .collect();
    let first = card
        .bytes()
        .find(u8::is_ascii_digit)
        .map_or(4, |d| d - b'0');
    digits[0] = first;
    let last = digits.len() - 1;
    digits[last] = 0;
    digits[last] = ((10 - luhn_sum(&digits) % 10) % 10) as u8;
    let mut next = digits.into_iter();
    card.chars()
        .map(|c| match c.is_ascii_digit() {
            true => (b'0' + next.next().unwrap_or(0)) as char,
            false => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a key of sixteen bytes or more";

    #[test]
    fn tokens_keep_shape_and_equal_values_stay_equal() {
        let a = shaped(KEY, "Jane.Doe-42@example.com");
        assert_eq!(a.len(), "Jane.Doe-42@example.com".len());
        assert_eq!(&a[4..5], ".");
        assert_eq!(&a[11..12], "@");
        assert!(a[0..1].chars().all(|c| c.is_ascii_uppercase()));
        assert_eq!(a, shaped(KEY, "Jane.Doe-42@example.com"));
        assert_ne!(a, shaped(KEY, "Jane.Doe-43@example.com"));
        assert_ne!(
            a,
            shaped(b"another key of sixteen bytes", "Jane.Doe-42@example.com")
        );
    }

    #[test]
    fn a_card_stays_a_valid_card_of_its_brand() {
        let card = "4111 1111 1111 1111";
        assert!(is_card(card));
        assert!(!is_card("4111 1111 1111 1112"), "bad check digit");
        assert!(!is_card("1234567890123"), "no issuer");
        let token = card_token(KEY, card, 0);
        assert_ne!(token, card);
        assert!(token.starts_with('4'));
        assert_eq!(token.len(), card.len());
        assert_eq!(&token[4..5], " ");
        assert!(is_card(&token), "{token}");
    }

    #[test]
    fn short_values_never_share_a_token() {
        let mut tokens = Tokens {
            key: KEY.to_vec(),
            issued: HashMap::new(),
            strings: HashMap::new(),
        };
        let values: Vec<String> = (0..2_000).map(|i| format!("u{i:02}")).collect();
        let issued: std::collections::HashSet<String> =
            values.iter().map(|v| tokens.shaped(v)).collect();
        assert_eq!(issued.len(), values.len());
        assert_eq!(tokens.shaped("u07"), tokens.shaped("u07"));
    }

    #[test]
    fn numbers_keep_their_digit_count() {
        let text = number_token(KEY, "1042", 0);
        assert_eq!(text.len(), 4);
        assert!(!text.starts_with('0'));
    }
}
