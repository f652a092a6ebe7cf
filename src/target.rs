//! A target: the base URL of a stack that requests are sent to.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use hyper::header::HeaderValue;
use hyper::Uri;

/// The base URL of a stack: scheme, authority and an optional path prefix
/// that every request target is appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    scheme: String,
    authority: String,
    prefix: String,
}

impl Target {
    /// The full URI for a request target (`/path?query`).
    pub fn uri_for(&self, target: &str) -> anyhow::Result<Uri> {
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/{target}")
        };
        let text = format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.prefix, target
        );
        text.parse()
            .with_context(|| format!("request target {target:?} does not make a valid URI"))
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
        HeaderValue::from_str(authority.as_str())
            .with_context(|| format!("{text:?}: invalid host"))?;
        Ok(Target {
            scheme: scheme.to_string(),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_prefix_and_target() {
        let t: Target = "http://127.0.0.1:9000/v1/".parse().unwrap();
        assert_eq!(
            t.uri_for("/orders?x=1").unwrap(),
            "http://127.0.0.1:9000/v1/orders?x=1"
        );
        assert_eq!(t.to_string(), "http://127.0.0.1:9000/v1");
        assert!("ftp://x".parse::<Target>().is_err());
        assert_eq!(
            "https://h:8443".parse::<Target>().unwrap().to_string(),
            "https://h:8443"
        );
        assert!("127.0.0.1:80".parse::<Target>().is_err());
    }
}
