//! The rules file (`docs/rules.md`): what the differ ignores, per route.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json_path::JsonPath;

use crate::route::Route;

/// Headers never compared: they differ between any two servers or any two
/// answers, describe the connection rather than the resource, or describe
/// the body's encoding (bodies are compared decoded).
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
    ignore_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteRule {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(flatten)]
    body: RuleBody,
}

/// A loaded, checked rules file.
#[derive(Debug, Default)]
pub struct RuleSet {
    defaults: Compiled,
    routes: Vec<(RoutePattern, Compiled)>,
    cache: HashMap<Route, Arc<RouteRules>>,
}

#[derive(Debug, Default, Clone)]
struct Compiled {
    headers: Vec<String>,
    paths: Vec<(String, JsonPath)>,
}

/// The rules in force for one route: defaults plus every matching `[[route]]`.
#[derive(Debug, Default)]
pub struct RouteRules {
    /// Lower-case header names not compared.
    pub ignore_headers: Vec<String>,
    /// JSONPath queries whose nodes are not compared, with their source text.
    pub ignore_paths: Vec<(String, JsonPath)>,
}

impl RouteRules {
    /// True when `name` (any case) is not compared, by default or by rule.
    pub fn ignores_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        DEFAULT_IGNORED_HEADERS.contains(&name.as_str()) || self.ignore_headers.contains(&name)
    }
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
        let defaults = compile(&file.defaults).context("[defaults]")?;
        let mut routes = Vec::new();
        for (i, rule) in file.routes.iter().enumerate() {
            let ctx = || format!("[[route]] #{} (match = {:?})", i + 1, rule.pattern);
            let pattern = RoutePattern::parse(&rule.pattern).with_context(ctx)?;
            routes.push((pattern, compile(&rule.body).with_context(ctx)?));
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
            if pattern.matches(route) {
                merged.headers.extend(compiled.headers.iter().cloned());
                merged.paths.extend(compiled.paths.iter().cloned());
            }
        }
        let rules = Arc::new(RouteRules {
            ignore_headers: merged.headers,
            ignore_paths: merged.paths,
        });
        self.cache.insert(route.clone(), rules.clone());
        rules
    }
}

fn compile(body: &RuleBody) -> anyhow::Result<Compiled> {
    let mut paths = Vec::new();
    for text in &body.ignore_paths {
        let path =
            JsonPath::parse(text).map_err(|e| anyhow::anyhow!("ignore_paths: {text:?}: {e}"))?;
        paths.push((text.clone(), path));
    }
    let headers = body
        .ignore_headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    Ok(Compiled { headers, paths })
}

/// `"METHOD /path/template"`: method `*` matches any method; a segment `*`
/// matches any one segment; a final `**` matches any rest, including none.
#[derive(Debug, Clone)]
struct RoutePattern {
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
            [[route]]
            match = "POST /api/orders"
            ignore_paths = ["$.id"]
            [[route]]
            match = "GET /api/**"
            ignore_paths = ["$..created_at"]
            "#,
        )
        .unwrap();
        let post = rules.for_route(&route("POST /api/orders"));
        assert!(post.ignores_header("x-trace") && post.ignores_header("Date"));
        assert_eq!(post.ignore_paths.len(), 1);
        let get = rules.for_route(&route("GET /api/orders/3"));
        assert_eq!(get.ignore_paths[0].0, "$..created_at");
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = RuleSet::parse("[[route]]\nmatch = \"GET\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("expected \"METHOD /path\""),
            "{err:#}"
        );
        let err = RuleSet::parse("[defaults]\nignore_paths = [\"$.[\"]\n").unwrap_err();
        assert!(format!("{err:#}").contains("$.["), "{err:#}");
        let err = RuleSet::parse("[defaults]\nignore_header = []\n").unwrap_err();
        assert!(format!("{err:#}").contains("ignore_header"), "{err:#}");
    }
}
