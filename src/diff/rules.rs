//! The rules file (`docs/rules.md`): what the differ treats as noise, per
//! route and method. Every rule counts the times it applied, so that a rule
//! that matched nothing during a run is reported as unused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use regex::Regex;
use serde::{Deserialize, Serialize};

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

/// Whether `name` is in [`DEFAULT_IGNORED_HEADERS`].
fn is_ignored_by_default(name: &str) -> bool {
    DEFAULT_IGNORED_HEADERS.contains(&name)
}

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

/// A rules file as written: the serde model that reads it, and that
/// `--write-rules` writes learned noise with.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// `[defaults]`: in force on every route.
    #[serde(default, skip_serializing_if = "RuleBody::is_empty")]
    pub defaults: RuleBody,
    /// `[[route]]`: in force on the routes its pattern matches.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteRule>,
    /// `[[correlate]]`: links between answers and later requests that the
    /// replay follows (read by the correlation stage, not the differ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub correlate: Vec<crate::correlate::CorrelateRule>,
    /// `[[time_shift]]`: request fields holding absolute times, moved by
    /// the time between recording and replay (read by the correlation stage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_shift: Vec<crate::correlate::TimeShift>,
}

/// One `[[route]]` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// `"METHOD /path/template"`, see [`RoutePattern`]; with `template`
    /// alone, every method on that template.
    #[serde(rename = "match", default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// A path template that names routes, e.g. `/v1/products/{sku}`: the
    /// paths it fits are reported as one route, before any learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Its rules.
    #[serde(flatten)]
    pub body: RuleBody,
}

/// `arrays compared as multisets`: `{ path, key }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnorderedSpec {
    path: String,
    key: Option<String>,
}

/// `{ path, absolute, relative }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToleranceSpec {
    path: String,
    absolute: Option<f64>,
    relative: Option<f64>,
}

/// `{ path, kind }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SameKindSpec {
    path: String,
    kind: ValueKind,
}

/// `{ regex, with }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSpec {
    regex: String,
    with: String,
}

/// `{ header, regex, with }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderReplaceSpec {
    header: String,
    regex: String,
    with: String,
}

/// How a written rule is named in errors and in the unused-rules list.
trait Labelled {
    fn label(&self) -> &str;
}

impl Labelled for String {
    fn label(&self) -> &str {
        self
    }
}

macro_rules! labelled_by {
    ($($spec:ty => $field:ident),* $(,)?) => {
        $(impl Labelled for $spec {
            fn label(&self) -> &str {
                &self.$field
            }
        })*
    };
}

labelled_by! {
    UnorderedSpec => path,
    ToleranceSpec => path,
    SameKindSpec => path,
    ReplaceSpec => regex,
    HeaderReplaceSpec => regex,
}

/// Declares every kind of rule once: its key in the file (and field of
/// [`RuleBody`] and [`RouteRules`]), what it compiles to, what is written
/// for it, and the function that compiles one. Parsing, merging per route,
/// usage counting and serializing all come from this table, so a new kind
/// is one line here, its compile function and its matcher in the differ.
macro_rules! rule_kinds {
    ($( $(#[$doc:meta])* $key:ident: $rule:ty = $spec:ty => $compile:ident, )*) => {
        /// The rules of `[defaults]` or of one `[[route]]`, as written.
        #[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct RuleBody {
            $( $(#[$doc])*
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub $key: Vec<$spec>, )*
            /// Only status codes are compared.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub status_only: bool,
            /// Header names whose values reports never show, beyond the defaults.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub redact_headers: Vec<String>,
        }

        /// The rules in force for one route: defaults plus every matching
        /// `[[route]]`, each counting its uses.
        #[derive(Debug, Default, Clone)]
        pub struct RouteRules {
            $( $(#[$doc])* pub $key: Vec<Arc<Item<$rule>>>, )*
            /// Only status codes are compared, if set.
            pub status_only: Option<Arc<Item<()>>>,
            /// Header names whose values reports never show, beyond the defaults.
            pub redact_headers: Vec<String>,
        }

        impl RouteRules {
            /// Compiles the rules of one section; `origin` names it.
            fn compile(origin: &str, body: &RuleBody) -> anyhow::Result<RouteRules> {
                let mut c = RouteRules::default();
                $( for spec in &body.$key {
                    let at = format!("{} {:?}", stringify!($key), spec.label());
                    let rule = $compile(spec).with_context(|| at.clone())?;
                    c.$key.push(Item::new(format!("{origin} {at}"), rule));
                } )*
                c.redact_headers = body.redact_headers.iter().map(|h| header_name(h)).collect::<anyhow::Result<_>>()?;
                if body.status_only {
                    c.status_only = Some(Item::new(format!("{origin} status_only"), ()));
                }
                Ok(c)
            }

            /// Adds the rules of another section that applies too.
            fn extend(&mut self, other: &RouteRules) {
                $( self.$key.extend(other.$key.iter().cloned()); )*
                if other.status_only.is_some() {
                    self.status_only = other.status_only.clone();
                }
                self.redact_headers.extend(other.redact_headers.iter().cloned());
            }

            /// Pushes the origin of every rule that applied to nothing.
            fn unused(&self, out: &mut Vec<String>) {
                fn push<T>(items: &[Arc<Item<T>>], out: &mut Vec<String>) {
                    out.extend(items.iter().filter(|i| i.hits() == 0).map(|i| i.origin.clone()));
                }
                $( push(&self.$key, out); )*
                if let Some(s) = &self.status_only {
                    push(std::slice::from_ref(s), out);
                }
            }
        }
    };
}

rule_kinds! {
    /// Header names not compared.
    ignore_headers: String = String => header_name,
    /// Default-ignored header names compared after all.
    compare_headers: String = String => header_name,
    /// JSONPath queries whose nodes are not compared.
    ignore_paths: Query = String => query,
    /// Arrays compared without regard to order.
    unordered_arrays: Unordered = UnorderedSpec => unordered,
    /// Numeric margins.
    tolerance: Tolerance = ToleranceSpec => tolerance,
    /// Same-kind equalities.
    same_kind: SameKind = SameKindSpec => same_kind,
    /// Replacements in bodies.
    body_replace: Replace = ReplaceSpec => body_replace,
    /// Replacements in header values.
    header_replace: Replace = HeaderReplaceSpec => header_replace,
}

fn header_name(text: &str) -> anyhow::Result<String> {
    Ok(text.trim().to_ascii_lowercase())
}

fn query(text: &str) -> anyhow::Result<Query> {
    Query::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn regex(text: &str) -> anyhow::Result<Regex> {
    Ok(Regex::new(text)?)
}

fn unordered(spec: &UnorderedSpec) -> anyhow::Result<Unordered> {
    Ok(Unordered {
        path: query(&spec.path)?,
        key: spec.key.clone(),
    })
}

fn tolerance(spec: &ToleranceSpec) -> anyhow::Result<Tolerance> {
    if spec.absolute.is_none() && spec.relative.is_none() {
        bail!("give absolute, relative or both");
    }
    Ok(Tolerance {
        path: query(&spec.path)?,
        absolute: spec.absolute.unwrap_or(0.0),
        relative: spec.relative.unwrap_or(0.0),
    })
}

fn same_kind(spec: &SameKindSpec) -> anyhow::Result<SameKind> {
    Ok(SameKind {
        path: query(&spec.path)?,
        kind: spec.kind,
    })
}

fn body_replace(spec: &ReplaceSpec) -> anyhow::Result<Replace> {
    Ok(Replace {
        header: None,
        regex: regex(&spec.regex)?,
        with: spec.with.clone(),
    })
}

fn header_replace(spec: &HeaderReplaceSpec) -> anyhow::Result<Replace> {
    Ok(Replace {
        header: Some(header_name(&spec.header)?),
        regex: regex(&spec.regex)?,
        with: spec.with.clone(),
    })
}

impl RuleBody {
    /// True when it holds no rule.
    pub fn is_empty(&self) -> bool {
        *self == RuleBody::default()
    }

    /// Ignores these JSON paths and headers: what `--write-rules` writes.
    pub fn ignoring(paths: Vec<String>, headers: Vec<String>) -> RuleBody {
        RuleBody {
            ignore_paths: paths,
            ignore_headers: headers,
            ..RuleBody::default()
        }
    }
}

/// Kinds of value that `same_kind` treats as equal when both sides are one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
        self.hit_n(1);
    }

    /// Counts `n` uses.
    pub fn hit_n(&self, n: u64) {
        self.hits.fetch_add(n, Ordering::Relaxed);
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
        if is_ignored_by_default(name) {
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

/// A loaded, checked rules file.
#[derive(Debug, Default)]
pub struct RuleSet {
    defaults: RouteRules,
    templates: Vec<String>,
    routes: Vec<(Arc<Item<RoutePattern>>, RouteRules)>,
    cache: HashMap<Route, Arc<RouteRules>>,
}

impl RuleSet {
    /// The rules of `path` ([`RuleSet::load`]), or none without a file.
    pub fn load_or_none(path: Option<&Path>) -> anyhow::Result<RuleSet> {
        path.map_or_else(|| Ok(RuleSet::default()), RuleSet::load)
    }

    /// Reads and checks a rules file; errors name the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<RuleSet> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read rules file", path.display()))?;
        RuleSet::parse(&text).with_context(|| format!("{}: invalid rules file", path.display()))
    }

    /// Parses rules from TOML text.
    pub fn parse(text: &str) -> anyhow::Result<RuleSet> {
        let file: RulesFile = toml::from_str(text)?;
        let defaults = RouteRules::compile("[defaults]", &file.defaults).context("[defaults]")?;
        let mut routes = Vec::new();
        let mut templates = Vec::new();
        for (i, rule) in file.routes.iter().enumerate() {
            let pattern = match (&rule.template, rule.pattern.is_empty()) {
                (Some(t), true) => format!("* {}", template_pattern(t)),
                (_, false) => rule.pattern.clone(),
                (None, true) => anyhow::bail!("[[route]] #{}: needs `match` or `template`", i + 1),
            };
            if let Some(t) = &rule.template {
                anyhow::ensure!(
                    t.starts_with('/'),
                    "[[route]] #{}: template {t:?} must be a path starting with /",
                    i + 1
                );
                templates.push(t.clone());
            }
            let origin = format!("[[route]] #{} (match = {:?})", i + 1, pattern);
            let pattern = RoutePattern::parse(&pattern).with_context(|| origin.clone())?;
            let compiled =
                RouteRules::compile(&origin, &rule.body).with_context(|| origin.clone())?;
            routes.push((Item::new(origin, pattern), compiled));
        }
        Ok(RuleSet {
            defaults,
            templates,
            routes,
            cache: HashMap::new(),
        })
    }

    /// The `[[route]] template`s, in the file's order.
    pub fn templates(&self) -> &[String] {
        &self.templates
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
        let rules = Arc::new(merged);
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

/// A template's pattern: each `{name}` matches any one segment.
fn template_pattern(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { "*" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// `"METHOD /path/template"`: method `*` matches any method; a segment `*`
/// matches any one segment; a final `**` matches any rest, including none.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    method: String,
    segments: Vec<String>,
}

impl RoutePattern {
    /// Parses `"METHOD /path/template"`.
    pub fn parse(text: &str) -> anyhow::Result<RoutePattern> {
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

    /// True when `route` is one this pattern names.
    pub fn matches(&self, route: &Route) -> bool {
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
    #[test]
    fn the_default_ignored_headers_are_those_listed() {
        for name in super::DEFAULT_IGNORED_HEADERS {
            assert!(super::is_ignored_by_default(name), "{name}");
        }
        for name in ["content-type", "x-request", "dates", "", "etag"] {
            assert!(!super::is_ignored_by_default(name), "{name}");
        }
    }

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
