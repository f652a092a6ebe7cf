//! A target: the base URL of a stack that requests are sent to.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use hyper::header::HeaderValue;
use hyper::Uri;

/// The base URL of a stack: scheme, authority and an optional path prefix
/// that every request target is appended to.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    scheme: String,
    /// Host and port, without userinfo.
    authority: String,
    prefix: String,
    /// `user:password` from the URL: sent as Basic credentials to a request
    /// without its own Authorization, never printed.
    userinfo: Option<String>,
}

impl Target {
    /// The full URI for a request target (`/path?query`).
    pub fn uri_for(&self, target: &str) -> anyhow::Result<Uri> {
        let text = format!(
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.path_for(target)
        );
        Uri::try_from(text)
            .with_context(|| format!("request target {target:?} does not make a valid URI"))
    }

    /// The origin form (`/prefix/path?query`) of [`Target::uri_for`]'s URI:
    /// what an HTTP/1.1 request line names, built without the whole URI.
    pub fn origin_for(&self, target: &str) -> anyhow::Result<Uri> {
        // From the String itself: the URI keeps its buffer rather than a
        // copy (one allocation fewer for every request to each stack).
        Uri::try_from(self.path_for(target))
            .with_context(|| format!("request target {target:?} does not make a valid URI"))
    }

    fn path_for(&self, target: &str) -> String {
        // Pushed rather than formatted: this is every request's, and
        // `format!` costs several times as much for three pieces.
        let pieces = self.path_pieces(target);
        let mut path = String::with_capacity(pieces.iter().map(|p| p.len()).sum());
        pieces.iter().for_each(|p| path.push_str(p));
        path
    }

    /// The path of `target` (a recorded request target) at this target, in
    /// pieces: its prefix, a slash where the recorded one has none, then
    /// the recorded one.
    pub fn path_pieces<'a>(&'a self, target: &'a str) -> [&'a str; 3] {
        let slash = if target.starts_with('/') { "" } else { "/" };
        [&self.prefix, slash, target]
    }

    /// Host (lower case) and port, the default port of the scheme if none
    /// is written: what two targets share when they are the same server.
    pub fn endpoint(&self) -> (String, u16) {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host.to_ascii_lowercase(), port.parse().unwrap_or(default))
            }
            _ => (self.authority.to_ascii_lowercase(), default),
        }
    }

    /// Whether the stack runs on this machine (`localhost`, 127.0.0.0/8,
    /// `::1`, or 0.0.0.0 and `::`, which connect there): then it shares
    /// the cores with the replay.
    pub fn is_loopback(&self) -> bool {
        let (host, _) = self.endpoint();
        let host = host.trim_matches(['[', ']']);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }

    /// `Authorization: Basic` from the URL's userinfo, if it has one.
    pub fn basic_auth(&self) -> Option<HeaderValue> {
        use base64::Engine;
        let userinfo = percent_decoded(self.userinfo.as_deref()?);
        let encoded = base64::engine::general_purpose::STANDARD.encode(userinfo);
        HeaderValue::from_str(&format!("Basic {encoded}")).ok()
    }

    /// The value of a Host header naming this target.
    pub fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.authority).expect("authority was validated when parsed")
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Target> {
        let uri: Uri = text
            .parse()
            .with_context(|| format!("{text:?} is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            Some(other) => {
                bail!("{text:?}: scheme {other:?} is not supported (use http:// or https://)")
            }
            None => bail!("{text:?}: expected a URL such as http://127.0.0.1:8080"),
        };
        let Some(authority) = uri.authority() else {
            bail!("{text:?}: the URL has no host");
        };
        if uri.query().is_some() {
            bail!("{text:?}: a target URL cannot have a query");
        }
        // The error names the URL as written, secrets and all: it is the
        // user's own input, shown back to them.
        let (userinfo, host) = match authority.as_str().rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo.to_string()), host),
            None => (None, authority.as_str()),
        };
        HeaderValue::from_str(host).with_context(|| format!("{text:?}: invalid host"))?;
        Ok(Target {
            scheme: scheme.to_string(),
            authority: host.to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            userinfo,
        })
    }
}

/// The URL with its password redacted: what every report, log line and
/// summary shows.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match self.userinfo.as_deref().map(|u| u.split_once(':')) {
            None => String::new(),
            Some(Some((user, _))) => format!("{user}:***@"),
            Some(None) => format!("{}@", self.userinfo.as_deref().unwrap_or_default()),
        };
        write!(
            f,
            "{}://{user}{}{}",
            self.scheme, self.authority, self.prefix
        )
    }
}

/// As shown: the password redacted (arguments are logged with `{:?}`).
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// `%XX` escapes decoded; anything else kept as it is.
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_sent_as_basic_credentials_and_never_shown() {
        let t: Target = "http://ops:s%40cret@127.0.0.1:9000/v1".parse().unwrap();
        assert_eq!(t.to_string(), "http://ops:***@127.0.0.1:9000/v1");
        assert_eq!(t.host_header(), "127.0.0.1:9000");
        assert_eq!(t.endpoint(), ("127.0.0.1".to_string(), 9000));
        assert_eq!(
            t.uri_for("/x").unwrap().to_string(),
            "http://127.0.0.1:9000/v1/x"
        );
        // base64("ops:s@cret")
        assert_eq!(t.basic_auth().unwrap(), "Basic b3BzOnNAY3JldA==");
        let plain: Target = "http://127.0.0.1:9000".parse().unwrap();
        assert!(plain.basic_auth().is_none());
    }

    #[test]
    fn knows_a_stack_on_this_machine() {
        let on = |url: &str| url.parse::<Target>().unwrap().is_loopback();
        assert!(on("http://127.0.0.1:9000"));
        assert!(on("http://127.3.2.1"));
        assert!(on("https://LocalHost:8443/v1"));
        assert!(on("http://[::1]:9000"));
        assert!(on("http://0.0.0.0:9000"));
        // A name is not an address, whatever it starts with.
        assert!(!on("http://127.0.0.1.example:9000"));
        assert!(!on("http://orders.staging:8080"));
        assert!(!on("http://[::2]:9000"));
        assert!(!on("http://localhost.example:80"));
    }

    #[test]
    fn joins_prefix_and_target() {
        let t: Target = "http://127.0.0.1:9000/v1/".parse().unwrap();
        assert_eq!(
            t.uri_for("/orders?x=1").unwrap(),
            "http://127.0.0.1:9000/v1/orders?x=1"
        );
        assert_eq!(t.to_string(), "http://127.0.0.1:9000/v1");
        // What the engine's own connections send: the same path and query.
        assert_eq!(t.origin_for("orders?x=1").unwrap(), "/v1/orders?x=1");
        let root: Target = "http://127.0.0.1:9000".parse().unwrap();
        assert_eq!(root.origin_for("/").unwrap(), "/");
        assert_eq!(
            root.origin_for("//a").unwrap(),
            root.uri_for("//a").unwrap().path()
        );
        assert!("ftp://x".parse::<Target>().is_err());
        assert_eq!(
            "https://h:8443".parse::<Target>().unwrap().to_string(),
            "https://h:8443"
        );
        assert!("127.0.0.1:80".parse::<Target>().is_err());
    }
}
