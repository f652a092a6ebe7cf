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
    fn route_display() {
        assert_eq!(
            Route::of("get", "/api/orders/7").to_string(),
            "GET /api/orders/{id}"
        );
    }
}
