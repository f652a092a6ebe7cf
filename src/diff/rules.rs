//! The rules file (`docs/rules.md`): what the differ treats as noise, per
//! route and method. Every rule counts the times it applied, so that a rule
//! that matched nothing during a run is reported as unused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use regex::Regex;
use serde::Deserialize;

use super::query::Query;
use super::tape::Node;
use crate::route::Route;

/// Headers never compared unless a rule says `compare_headers`: they differ
/// between any two servers or answers, describe the connection rather than
/// the resource, or describe the body's encoding (bodies are compared
/// decoded).
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "x-request-id",
    "content-length",
    "content-encoding",
    "connection",
    "keep-alive",
    "transfer-encoding",
];

/// Headers whose values are credentials: compared, never shown in reports.
/// A rules file adds more with `redact_headers`.
pub const DEFAULT_REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-csrf-token",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    defaults: RuleBody,
    #[serde(default, rename = "route")]
    routes: Vec<RouteRule>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    #[serde(default)]
    ignore_headers: Vec<String>,
    #[serde(default)]
    compare_headers: Vec<String>,
    #[serde(default)]
    ignore_paths: Vec<String>,
    #[serde(default)]
    unordered_arrays: Vec<UnorderedSpec>,
    #[serde(default)]
    tolerance: Vec<ToleranceSpec>,
    #[serde(default)]
    same_kind: Vec<SameKindSpec>,
    #[serde(default)]
    body_replace: Vec<ReplaceSpec>,
    #[serde(default)]
    header_replace: Vec<HeaderReplaceSpec>,
    #[serde(default)]
    status_only: bool,
    #[serde(default)]
    redact_headers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnorderedSpec {
    path: String,
    key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToleranceSpec {
    path: String,
    absolute: Option<f64>,
    relative: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SameKindSpec {
    path: String,
    kind: ValueKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceSpec {
    regex: String,
    with: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderReplaceSpec {
    header: String,
    regex: String,
    with: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRule {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(flatten)]
    body: RuleBody,
}

/// Kinds of value that `same_kind` treats as equal when both sides are one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A UUID string.
    Uuid,
    /// An RFC 3339 timestamp string.
    Timestamp,
    /// A positive integer, or a string of digits.
    IntegerId,
    /// A string of hex digits.
    Hex,
    /// Any number.
    Number,
    /// Any string.
    String,
}

impl ValueKind {
    /// True when `v` is of this kind.
    pub(crate) fn holds(self, v: &Node) -> bool {
        use super::tape::StaticNode::{F64, I64, U64};
        match (self, v) {
            (ValueKind::Number, Node::Static(U64(_) | I64(_) | F64(_)))
            | (ValueKind::String, Node::String(_))
            | (ValueKind::IntegerId, Node::Static(U64(_))) => true,
            (ValueKind::IntegerId, Node::String(s)) => {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
            }
            (ValueKind::Hex, Node::String(s)) => {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
            }
            (ValueKind::Uuid, Node::String(s)) => crate::route::is_uuid(s),
            (ValueKind::Timestamp, Node::String(s)) => is_rfc3339(s),
            _ => false,
        }
    }
}

fn is_rfc3339(s: &str) -> bool {
    static RFC3339: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RFC3339
        .get_or_init(|| {
            Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
                .unwrap()
        })
        .is_match(s)
}

/// One rule of a rules file, with where it came from and how often it
/// applied.
#[derive(Debug)]
pub struct Item<T> {
    /// Where it is written, e.g. `[[route]] #2 (GET /x) ignore_paths "$.id"`.
    pub origin: String,
    /// The rule.
    pub rule: T,
    hits: AtomicU64,
}

impl<T> Item<T> {
    fn new(origin: String, rule: T) -> Arc<Item<T>> {
        Arc::new(Item {
            origin,
            rule,
            hits: AtomicU64::new(0),
        })
    }

    /// Counts one use.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Uses so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Arrays compared as multisets, elements matched by `key` when given.
#[derive(Debug)]
pub struct Unordered {
    /// Where the arrays are.
    pub path: Query,
    /// Field that identifies an element.
    pub key: Option<String>,
}

/// Numbers equal within a margin.
#[derive(Debug)]
pub struct Tolerance {
    /// Where the numbers are.
    pub path: Query,
    /// Largest absolute difference.
    pub absolute: f64,
    /// Largest difference relative to the larger magnitude.
    pub relative: f64,
}

impl Tolerance {
    /// True when `a` and `b` are within the margin.
    pub fn accepts(&self, a: f64, b: f64) -> bool {
        let d = (a - b).abs();
        d <= self.absolute || d <= self.relative * a.abs().max(b.abs())
    }
}

/// Values equal when both are of a kind.
#[derive(Debug)]
pub struct SameKind {
    /// Where the values are.
    pub path: Query,
    /// The kind.
    pub kind: ValueKind,
}

/// A regex replacement in bodies or header values.
#[derive(Debug)]
pub struct Replace {
    /// Lower-case header name, `*` for every header; `None` for bodies.
    pub header: Option<String>,
    /// What to replace.
    pub regex: Regex,
    /// With what.
    pub with: String,
}

/// The rules in force for one route: defaults plus every matching `[[route]]`.
#[derive(Debug, Default)]
pub struct RouteRules {
    /// Header names not compared.
    pub ignore_headers: Vec<Arc<Item<String>>>,
    /// Default-ignored header names compared after all.
    pub compare_headers: Vec<Arc<Item<String>>>,
    /// JSONPath queries whose nodes are not compared.
    pub ignore_paths: Vec<Arc<Item<Query>>>,
    /// Arrays compared without regard to order.
    pub unordered: Vec<Arc<Item<Unordered>>>,
    /// Numeric margins.
    pub tolerance: Vec<Arc<Item<Tolerance>>>,
    /// Same-kind equalities.
    pub same_kind: Vec<Arc<Item<SameKind>>>,
    /// Replacements in bodies.
    pub body_replace: Vec<Arc<Item<Replace>>>,
    /// Replacements in header values.
    pub header_replace: Vec<Arc<Item<Replace>>>,
    /// Only status codes are compared, if set.
    pub status_only: Option<Arc<Item<()>>>,
    /// Header names whose values reports never show, beyond the defaults.
    pub redact_headers: Vec<String>,
}

impl RouteRules {
    /// `value` as a report may show it: a placeholder for credential headers.
    pub fn shown(&self, name: &str, value: String) -> String {
        let name = name.to_ascii_lowercase();
        if DEFAULT_REDACTED_HEADERS.contains(&name.as_str()) || self.redact_headers.contains(&name)
        {
            format!("<redacted, {} bytes>", value.len())
        } else {
            value
        }
    }

    /// True when `name` (lower case) is not compared, by default or by rule.
    pub fn ignores_header(&self, name: &str) -> bool {
        if let Some(rule) = self.ignore_headers.iter().find(|h| h.rule == name) {
            rule.hit();
            return true;
        }
        if DEFAULT_IGNORED_HEADERS.contains(&name) {
            match self.compare_headers.iter().find(|h| h.rule == name) {
                Some(rule) => {
                    rule.hit();
                    return false;
                }
                None => return true,
            }
        }
        false
    }
}

/// Every rule of a file, in force per route.
#[derive(Debug, Default, Clone)]
struct Compiled {
    ignore_headers: Vec<Arc<Item<String>>>,
    compare_headers: Vec<Arc<Item<String>>>,
    ignore_paths: Vec<Arc<Item<Query>>>,
    unordered: Vec<Arc<Item<Unordered>>>,
    tolerance: Vec<Arc<Item<Tolerance>>>,
    same_kind: Vec<Arc<Item<SameKind>>>,
    body_replace: Vec<Arc<Item<Replace>>>,
    header_replace: Vec<Arc<Item<Replace>>>,
    status_only: Option<Arc<Item<()>>>,
    redact_headers: Vec<String>,
}

/// A loaded, checked rules file.
#[derive(Debug, Default)]
pub struct RuleSet {
    defaults: Compiled,
    routes: Vec<(Arc<Item<RoutePattern>>, Compiled)>,
    cache: HashMap<Route, Arc<RouteRules>>,
}

impl RuleSet {
    /// Reads and checks a rules file; errors name the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<RuleSet> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read rules file", path.display()))?;
        RuleSet::parse(&text).with_context(|| format!("{}: invalid rules file", path.display()))
    }

    /// Parses rules from TOML text.
    pub fn parse(text: &str) -> anyhow::Result<RuleSet> {
        let file: RulesFile = toml::from_str(text)?;
        let defaults = compile("[defaults]", &file.defaults).context("[defaults]")?;
        let mut routes = Vec::new();
        for (i, rule) in file.routes.iter().enumerate() {
            let origin = format!("[[route]] #{} (match = {:?})", i + 1, rule.pattern);
            let pattern = RoutePattern::parse(&rule.pattern).with_context(|| origin.clone())?;
            let compiled = compile(&origin, &rule.body).with_context(|| origin.clone())?;
            routes.push((Item::new(origin, pattern), compiled));
        }
        Ok(RuleSet {
            defaults,
            routes,
            cache: HashMap::new(),
        })
    }

    /// The rules for `route`, computed once per route.
    pub fn for_route(&mut self, route: &Route) -> Arc<RouteRules> {
        if let Some(rules) = self.cache.get(route) {
            return rules.clone();
        }
        let mut merged = self.defaults.clone();
        for (pattern, compiled) in &self.routes {
            if pattern.rule.matches(route) {
                pattern.hit();
                merged.extend(compiled);
            }
        }
        let rules = Arc::new(RouteRules {
            ignore_headers: merged.ignore_headers,
            compare_headers: merged.compare_headers,
            ignore_paths: merged.ignore_paths,
            unordered: merged.unordered,
            tolerance: merged.tolerance,
            same_kind: merged.same_kind,
            body_replace: merged.body_replace,
            header_replace: merged.header_replace,
            status_only: merged.status_only,
            redact_headers: merged.redact_headers,
        });
        self.cache.insert(route.clone(), rules.clone());
        rules
    }

    /// Rules that applied to nothing so far, by where they are written.
    pub fn unused(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.defaults.unused(&mut out);
        for (pattern, compiled) in &self.routes {
            if pattern.hits() == 0 {
                out.push(format!("{}: matched no route", pattern.origin));
            } else {
                compiled.unused(&mut out);
            }
        }
        out
    }
}

impl Compiled {
    fn extend(&mut self, other: &Compiled) {
        self.ignore_headers
            .extend(other.ignore_headers.iter().cloned());
        self.compare_headers
            .extend(other.compare_headers.iter().cloned());
        self.ignore_paths.extend(other.ignore_paths.iter().cloned());
        self.unordered.extend(other.unordered.iter().cloned());
        self.tolerance.extend(other.tolerance.iter().cloned());
        self.same_kind.extend(other.same_kind.iter().cloned());
        self.body_replace.extend(other.body_replace.iter().cloned());
        self.header_replace
            .extend(other.header_replace.iter().cloned());
        if other.status_only.is_some() {
            self.status_only = other.status_only.clone();
        }
        self.redact_headers
            .extend(other.redact_headers.iter().cloned());
    }

    fn unused(&self, out: &mut Vec<String>) {
        fn push<T>(items: &[Arc<Item<T>>], out: &mut Vec<String>) {
            out.extend(
                items
                    .iter()
                    .filter(|i| i.hits() == 0)
                    .map(|i| i.origin.clone()),
            );
        }
        push(&self.ignore_headers, out);
        push(&self.compare_headers, out);
        push(&self.ignore_paths, out);
        push(&self.unordered, out);
        push(&self.tolerance, out);
        push(&self.same_kind, out);
        push(&self.body_replace, out);
        push(&self.header_replace, out);
        if let Some(s) = &self.status_only {
            push(std::slice::from_ref(s), out);
        }
    }
}

fn compile(origin: &str, body: &RuleBody) -> anyhow::Result<Compiled> {
    let at = |what: &str, text: &str| format!("{origin} {what} {text:?}");
    let path = |key: &str, text: &str| -> anyhow::Result<Query> {
        Query::parse(text).map_err(|e| anyhow::anyhow!("{key}: {text:?}: {e}"))
    };
    let regex = |key: &str, text: &str| -> anyhow::Result<Regex> {
        Regex::new(text).map_err(|e| anyhow::anyhow!("{key}: {text:?}: {e}"))
    };
    let header = |h: &String| h.trim().to_ascii_lowercase();
    let mut c = Compiled::default();
    for h in &body.ignore_headers {
        c.ignore_headers
            .push(Item::new(at("ignore_headers", h), header(h)));
    }
    for h in &body.compare_headers {
        c.compare_headers
            .push(Item::new(at("compare_headers", h), header(h)));
    }
    for p in &body.ignore_paths {
        c.ignore_paths
            .push(Item::new(at("ignore_paths", p), path("ignore_paths", p)?));
    }
    for u in &body.unordered_arrays {
        let rule = Unordered {
            path: path("unordered_arrays", &u.path)?,
            key: u.key.clone(),
        };
        c.unordered
            .push(Item::new(at("unordered_arrays", &u.path), rule));
    }
    for t in &body.tolerance {
        if t.absolute.is_none() && t.relative.is_none() {
            bail!("tolerance {:?}: give absolute, relative or both", t.path);
        }
        let rule = Tolerance {
            path: path("tolerance", &t.path)?,
            absolute: t.absolute.unwrap_or(0.0),
            relative: t.relative.unwrap_or(0.0),
        };
        c.tolerance.push(Item::new(at("tolerance", &t.path), rule));
    }
    for k in &body.same_kind {
        let rule = SameKind {
            path: path("same_kind", &k.path)?,
            kind: k.kind,
        };
        c.same_kind.push(Item::new(at("same_kind", &k.path), rule));
    }
    for r in &body.body_replace {
        let rule = Replace {
            header: None,
            regex: regex("body_replace", &r.regex)?,
            with: r.with.clone(),
        };
        c.body_replace
            .push(Item::new(at("body_replace", &r.regex), rule));
    }
    for r in &body.header_replace {
        let rule = Replace {
            header: Some(header(&r.header)),
            regex: regex("header_replace", &r.regex)?,
            with: r.with.clone(),
        };
        c.header_replace
            .push(Item::new(at("header_replace", &r.regex), rule));
    }
    c.redact_headers = body.redact_headers.iter().map(header).collect();
    if body.status_only {
        c.status_only = Some(Item::new(format!("{origin} status_only"), ()));
    }
    Ok(c)
}

/// `"METHOD /path/template"`: method `*` matches any method; a segment `*`
/// matches any one segment; a final `**` matches any rest, including none.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    method: String,
    segments: Vec<String>,
}

impl RoutePattern {
    fn parse(text: &str) -> anyhow::Result<RoutePattern> {
        let mut parts = text.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!("expected \"METHOD /path\", e.g. \"GET /api/orders/{{id}}\" or \"* /api/**\"");
        };
        if !path.starts_with('/') {
            bail!("the path {path:?} must start with '/'");
        }
        let segments: Vec<String> = path.split('/').skip(1).map(str::to_string).collect();
        if let Some(pos) = segments.iter().position(|s| s == "**") {
            if pos != segments.len() - 1 {
                bail!("'**' may only be the last segment");
            }
        }
        Ok(RoutePattern {
            method: method.to_ascii_uppercase(),
            segments,
        })
    }

    fn matches(&self, route: &Route) -> bool {
        if self.method != "*" && self.method != route.method {
            return false;
        }
        let actual: Vec<&str> = route.template.split('/').skip(1).collect();
        let mut i = 0;
        for seg in &self.segments {
            if seg == "**" {
                return true;
            }
            match actual.get(i) {
                Some(a) if seg == "*" || seg == a => i += 1,
                _ => return false,
            }
        }
        i == actual.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str) -> Route {
        let (m, p) = s.split_once(' ').unwrap();
        Route::of(m, p)
    }

    #[test]
    fn patterns_match_methods_and_segments() {
        let p = RoutePattern::parse("GET /api/orders/{id}").unwrap();
        assert!(p.matches(&route("GET /api/orders/7")));
        assert!(!p.matches(&route("POST /api/orders/7")));
        assert!(!p.matches(&route("GET /api/orders/7/pay")));
        let any = RoutePattern::parse("* /api/*/{id}").unwrap();
        assert!(any.matches(&route("DELETE /api/products/9")));
        let rest = RoutePattern::parse("* /api/**").unwrap();
        assert!(rest.matches(&route("GET /api")));
        assert!(rest.matches(&route("GET /api/orders/1/pay")));
        assert!(!rest.matches(&route("GET /health")));
    }

    #[test]
    fn rules_merge_defaults_and_matching_routes() {
        let mut rules = RuleSet::parse(
            r#"
            [defaults]
            ignore_headers = ["X-Trace"]
            compare_headers = ["date"]
            [[route]]
            match = "POST /api/orders"
            ignore_paths = ["$.id"]
            [[route]]
            match = "GET /api/**"
            ignore_paths = ["$..created_at"]
            [[route]]
            match = "GET /never"
            status_only = true
            "#,
        )
        .unwrap();
        let post = rules.for_route(&route("POST /api/orders"));
        assert!(post.ignores_header("x-trace") && post.ignores_header("server"));
        assert!(
            !post.ignores_header("date"),
            "compare_headers overrides the default"
        );
        assert_eq!(post.ignore_paths.len(), 1);
        let get = rules.for_route(&route("GET /api/orders/3"));
        assert_eq!(
            get.ignore_paths[0].origin,
            r#"[[route]] #2 (match = "GET /api/**") ignore_paths "$..created_at""#
        );
        // Headers were consulted; JSON paths not yet; one route never matched.
        let unused = rules.unused();
        assert!(
            unused
                .iter()
                .any(|u| u.contains("#3") && u.contains("matched no route")),
            "{unused:?}"
        );
        assert!(unused.iter().any(|u| u.contains("$.id")), "{unused:?}");
        assert!(
            !unused
                .iter()
                .any(|u| u.contains("X-Trace") || u.contains("x-trace")),
            "{unused:?}"
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let cases = [
            ("[[route]]\nmatch = \"GET\"\n", "expected \"METHOD /path\""),
            ("[defaults]\nignore_paths = [\"$.[\"]\n", "$.["),
            ("[defaults]\nignore_header = []\n", "ignore_header"),
            (
                "[defaults]\ntolerance = [{ path = \"$.a\" }]\n",
                "give absolute, relative or both",
            ),
            (
                "[defaults]\nsame_kind = [{ path = \"$.a\", kind = \"colour\" }]\n",
                "colour",
            ),
            (
                "[defaults]\nbody_replace = [{ regex = \"(\", with = \"\" }]\n",
                "body_replace",
            ),
        ];
        for (text, expected) in cases {
            let err = RuleSet::parse(text).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }

    #[test]
    fn value_kinds() {
        let holds = |kind: ValueKind, json: &str| {
            let mut docs = super::super::tape::buffers(&[json]);
            let (tape, roots) = super::super::tape::Tape::of(&mut docs);
            kind.holds(tape.node(roots[0].unwrap()))
        };
        assert!(holds(
            ValueKind::Uuid,
            r#""3f2a9c1e-9b7d-4c2a-8e1f-0123456789ab""#
        ));
        assert!(holds(
            ValueKind::Timestamp,
            r#""2026-11-22T03:40:00.123+01:00""#
        ));
        assert!(!holds(ValueKind::Timestamp, r#""yesterday""#));
        assert!(holds(ValueKind::IntegerId, "1042") && holds(ValueKind::IntegerId, r#""1042""#));
        assert!(!holds(ValueKind::IntegerId, "-3"));
        assert!(!holds(ValueKind::IntegerId, "1042.0"));
        assert!(holds(ValueKind::Hex, r#""deadbeef""#));
        assert!(holds(ValueKind::Number, "-3") && !holds(ValueKind::Number, "null"));
    }
}
