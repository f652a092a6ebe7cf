//! Routes: requests grouped by method and path template, where segments that
//! look like identifiers become `{id}`: `GET /api/orders/{id}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A method and a path template, the unit every report groups by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Route {
    /// Request method, upper case.
    pub method: String,
    /// Path with id-like segments replaced by `{id}` and the query removed.
    pub template: String,
}

impl Route {
    /// The route of a request.
    pub fn of(method: &str, target: &str) -> Route {
        Route {
            method: method.to_ascii_uppercase(),
            template: template(target),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.template)
    }
}

/// The path template of a request target: query and fragment dropped, id-like
/// segments replaced by `{id}`.
pub fn template(target: &str) -> String {
    // An absolute-form target (proxies see these) keeps only its path.
    let path = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |p| &target[i + 3 + p..]),
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/')
        .map(|seg| if looks_like_id(seg) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Digits, a UUID, or a long run of hex digits.
fn looks_like_id(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let all = |f: fn(char) -> bool| segment.chars().all(f);
    if all(|c| c.is_ascii_digit()) {
        return true;
    }
    if is_uuid(segment) {
        return true;
    }
    // 16+ hex digits with at least one digit: object ids, hashes, tokens.
    if segment.len() >= 16
        && all(|c| c.is_ascii_hexdigit())
        && segment.chars().any(|c| c.is_ascii_digit())
    {
        return true;
    }
    // A prefixed id: letters, `_` or `-`, then a suffix with two digits or
    // more (`cart_1042`, `ord-7f3a91`, Stripe's `ch_3MqL…`), but not `api-v1`.
    match segment.split_once(['_', '-']) {
        Some((prefix, suffix)) => {
            !prefix.is_empty()
                && prefix.chars().all(|c| c.is_ascii_alphabetic())
                && suffix.chars().all(|c| c.is_ascii_alphanumeric())
                && suffix.chars().filter(char::is_ascii_digit).count() >= 2
        }
        None => false,
    }
}

/// True for a UUID in its canonical 8-4-4-4-12 hex form.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders() {
        assert_eq!(template("/api/orders/1042"), "/api/orders/{id}");
        assert_eq!(template("/api/orders/1042/pay?x=1"), "/api/orders/{id}/pay");
        assert_eq!(
            template("/u/3f2a9c1e-9b7d-4c2a-8e1f-0123456789ab/cart"),
            "/u/{id}/cart"
        );
        assert_eq!(template("/obj/5f1d7c2e9a8b7c6d5e4f3a2b"), "/obj/{id}");
        assert_eq!(template("/api/products"), "/api/products");
        assert_eq!(template("/api/v2/feed"), "/api/v2/feed");
        assert_eq!(template("/deadbeefcafebabe"), "/deadbeefcafebabe");
        assert_eq!(template("http://h:1/a/7"), "/a/{id}");
        assert_eq!(template("?q=1"), "/");
    }

    #[test]
    fn templates_are_learned_where_values_are_many_and_distinct() {
        let mut paths: Vec<String> = (0..40)
            .map(|i| format!("/v1/products/P{}x{}", (b'a' + i % 26) as char, i))
            .collect();
        // Base62 ids, which no shape rule catches.
        paths.extend((0..30).map(|i| format!("/v1/carts/aZ{i}kQ/items")));
        // A frequent word beside the ids stays a word.
        paths.extend((0..30).map(|_| "/v1/products/search".to_string()));
        // Few distinct values are not ids.
        paths.extend(["/v1/status/green", "/v1/status/red", "/v1/status/amber"].map(String::from));
        let mut t = Templates::default();
        t.learn(paths.iter().map(String::as_str));
        let route = |p: &str| t.route("get", p).to_string();
        assert_eq!(route("/v1/products/Pqx99"), "GET /v1/products/{id}");
        assert_eq!(route("/v1/products/search"), "GET /v1/products/search");
        assert_eq!(
            route("/v1/carts/aZ7kQ/items?x=1"),
            "GET /v1/carts/{id}/items"
        );
        assert_eq!(route("/v1/status/red"), "GET /v1/status/red");
        // Paths the capture never had are named by shape.
        assert_eq!(route("/v2/orders/1042"), "GET /v2/orders/{id}");
        assert_eq!(route("/"), "GET /");
        assert_eq!(t.learned(), ["/v1/carts/{id}/items", "/v1/products/{id}"]);
    }

    #[test]
    fn written_templates_come_first() {
        let mut t = Templates::written(&["/v1/products/{sku}".to_string()]);
        t.learn(["/v1/products/a", "/v1/products/b"]);
        assert_eq!(
            t.route("GET", "/v1/products/A-1").to_string(),
            "GET /v1/products/{sku}"
        );
        assert_eq!(
            t.route("GET", "/v1/products/A-1/x").to_string(),
            "GET /v1/products/A-1/x"
        );
        // With nothing learned or written, routes are as Route::of names them.
        let none = Templates::default();
        for p in ["/api/orders/", "/api/orders/7/pay", "/a//b"] {
            assert_eq!(none.route("GET", p), Route::of("GET", p));
        }
    }

    #[test]
    fn route_display() {
        assert_eq!(
            Route::of("get", "/api/orders/7").to_string(),
            "GET /api/orders/{id}"
        );
    }
}

/// Path templates learned from a capture: under one path prefix, a
/// position whose values are many and mostly distinct holds ids
/// (`/v1/products/SKU-92`, `/v1/products/SKU-97`: `/v1/products/{id}`),
/// as API-inventory tools find them; the frequent values there (`search`,
/// `count`) stay as written.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    /// Written (`[[route]] template`), tried first.
    written: Vec<Vec<String>>,
    root: Node,
    /// Learning named some position `{id}`: the tree is worth walking.
    learned_any: bool,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Paths through this node.
    count: u64,
    /// Paths that end here.
    ends: u64,
    /// `{id}` made by learning rather than by the segment's shape.
    learned: bool,
    children: std::collections::BTreeMap<String, Node>,
}

/// Distinct values under one prefix from which a position holds ids.
const MANY: usize = 10;

impl Templates {
    /// Templates written in a rules file, e.g. `/v1/products/{sku}`.
    pub fn written(templates: &[String]) -> Templates {
        Templates {
            written: templates.iter().map(|t| segments(t)).collect(),
            root: Node::default(),
            learned_any: false,
        }
    }

    /// Learns from the paths of a capture's requests.
    pub fn learn<S: AsRef<str>>(&mut self, targets: impl IntoIterator<Item = S>) {
        for target in targets {
            let mut node = &mut self.root;
            node.count += 1;
            for seg in segments(&template(target.as_ref())) {
                node = node.children.entry(seg).or_default();
                node.count += 1;
            }
            node.ends += 1;
        }
        self.root.collapse();
        self.learned_any = !self.learned().is_empty();
    }

    /// The route of a request: a written template it fits, else the learned
    /// ones, else each segment by its shape.
    pub fn route(&self, method: &str, target: &str) -> Route {
        // The judge names every exchange's route: most captures learn
        // nothing, and then a segment's shape alone names it.
        if self.written.is_empty() && !self.learned_any {
            return Route::of(method, target);
        }
        let shaped = segments(&template(target));
        let named = match self.written.iter().find(|t| fits(t, &shaped)) {
            Some(written) => written.clone(),
            None => self.root.walk(shaped),
        };
        Route {
            method: method.to_ascii_uppercase(),
            template: join(&named),
        }
    }

    /// The templates learning made (those a segment's shape alone would
    /// not), less those a written template names.
    pub fn learned(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.root.learned_paths(&mut Vec::new(), false, &mut out);
        out.retain(|path| !self.written.iter().any(|t| fits(t, &segments(path))));
        out
    }
}

impl Node {
    /// Folds the rare values of a position with many into `{id}`, then
    /// does the same below.
    fn collapse(&mut self) {
        let literal = self.children.keys().filter(|k| *k != "{id}").count();
        if literal >= MANY {
            let rare: Vec<String> = self
                .children
                .iter()
                .filter(|(k, c)| *k != "{id}" && c.count * 10 < self.count)
                .map(|(k, _)| k.clone())
                .collect();
            if rare.len() >= MANY {
                let mut ids = self.children.remove("{id}").unwrap_or_default();
                for key in rare {
                    if let Some(child) = self.children.remove(&key) {
                        ids.absorb(child);
                    }
                }
                ids.learned = true;
                self.children.insert("{id}".into(), ids);
            }
        }
        for child in self.children.values_mut() {
            child.collapse();
        }
    }

    fn absorb(&mut self, other: Node) {
        self.count += other.count;
        self.ends += other.ends;
        for (key, child) in other.children {
            self.children.entry(key).or_default().absorb(child);
        }
    }

    /// Names each segment down the tree: as learned where the tree knows
    /// the path, as shaped past where it does not.
    fn walk(&self, shaped: Vec<String>) -> Vec<String> {
        let mut node = Some(self);
        let mut named = Vec::with_capacity(shaped.len());
        for seg in shaped {
            let next = node.and_then(|n| {
                n.children
                    .get_key_value(&seg)
                    .or_else(|| n.children.get_key_value("{id}"))
            });
            match next {
                Some((key, child)) => {
                    named.push(key.clone());
                    node = Some(child);
                }
                None => {
                    named.push(seg);
                    node = None;
                }
            }
        }
        named
    }

    fn learned_paths(&self, path: &mut Vec<String>, learned: bool, out: &mut Vec<String>) {
        if self.ends > 0 && learned {
            out.push(join(path));
        }
        for (key, child) in &self.children {
            path.push(key.clone());
            child.learned_paths(path, learned || child.learned, out);
            path.pop();
        }
    }
}

/// Whether a written template names a path: its `{…}` segments fit any.
fn fits(template: &[String], path: &[String]) -> bool {
    template.len() == path.len()
        && template
            .iter()
            .zip(path)
            .all(|(t, s)| t.starts_with('{') || t == s)
}

/// `/a/b` → `["a", "b"]`, as [`template`] writes paths (`/` → `[""]`).
fn segments(path: &str) -> Vec<String> {
    path.split('/').skip(1).map(str::to_string).collect()
}

fn join(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}
