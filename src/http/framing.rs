//! Where an HTTP/1.x message's body ends (RFC 9112 §6.3), shared by the
//! packet parser, which reads both directions of recorded connections, and
//! the replay engines' own connections, which read answers.

use crate::capture::Header;

/// A Content-Length above this cannot be real; it is treated as invalid
/// framing rather than swallowing the rest of the connection as body.
const MAX_CONTENT_LENGTH: u64 = 1 << 40;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// This many bytes.
    Length(u64),
    /// Transfer-Encoding chunked.
    Chunked,
    /// Everything until the connection closes.
    UntilClose,
    /// The connection is no longer HTTP (101, a CONNECT's 2xx).
    Tunnel,
    /// The length cannot be known: the message cannot be read.
    Invalid(&'static str),
}

/// An answer's framing, `request_method` the method of the request it
/// answers. 1xx answers other than 101 are interim and have no body; the
/// caller reads the next head after them.
pub fn response_framing(status: u16, headers: &[Header], request_method: &str) -> Framing {
    if request_method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status) {
        return Framing::Tunnel;
    }
    if status == 101 {
        return Framing::Tunnel;
    }
    if request_method.eq_ignore_ascii_case("HEAD")
        || status == 204
        || status == 304
        || (100..200).contains(&status)
    {
        return Framing::None;
    }
    if let Some(te) = joined(headers, "transfer-encoding") {
        return if last_coding_is_chunked(&te) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
    }
    match content_length(headers) {
        Ok(Some(n)) => Framing::Length(n),
        Ok(None) => Framing::UntilClose,
        // An unusable length in a response: read to the close, as a client would have to.
        Err(_) => Framing::UntilClose,
    }
}

/// Every value of header `name` (lower case), joined with commas; `None`
/// if it is absent.
pub fn joined(headers: &[Header], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|h| h.0 == name)
        .map(|h| h.1.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Whether a Transfer-Encoding's last coding is chunked.
pub fn last_coding_is_chunked(te: &str) -> bool {
    te.rsplit(',')
        .map(str::trim)
        .find(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
}

/// The Content-Length, if any; every value must be the same run of digits.
pub fn content_length(headers: &[Header]) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    for Header(_, value) in headers.iter().filter(|h| h.0 == "content-length") {
        // A list only where a comma says so: splitting every answer's one
        // value cost more than the rest of the framing.
        if value.contains(',') {
            for value in value.split(',') {
                found = Some(one_length(value, found)?);
            }
        } else {
            found = Some(one_length(value, found)?);
        }
    }
    Ok(found)
}

/// One Content-Length value, which must agree with any `found` before it.
fn one_length(value: &str, found: Option<u64>) -> Result<u64, &'static str> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid Content-Length");
    }
    let digits = value.trim_start_matches('0');
    let n = if digits.is_empty() {
        0
    } else {
        digits
            .parse::<u64>()
            .map_err(|_| "Content-Length overflows")?
    };
    if n > MAX_CONTENT_LENGTH {
        return Err("Content-Length beyond 1 TiB");
    }
    if found.is_some_and(|f| f != n) {
        return Err("conflicting Content-Length values");
    }
    Ok(n)
}

/// Whether the connection that carried a message with these headers stays
/// open after it (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`,
/// HTTP/1.0 only with `Connection: keep-alive`.
pub fn keeps_alive(minor_version: u8, headers: &[Header]) -> bool {
    let has = |token: &str| {
        headers.iter().filter(|h| h.0 == "connection").any(|h| {
            h.1.trim().eq_ignore_ascii_case(token)
                || (h.1.contains(',')
                    && h.1.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if minor_version >= 1 {
        !has("close")
    } else {
        has("keep-alive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        Header(name.into(), value.into())
    }

    #[test]
    fn lengths_agree_or_are_refused() {
        assert_eq!(content_length(&[h("content-length", "5")]), Ok(Some(5)));
        let repeated = [h("content-length", "5, 5"), h("content-length", "05")];
        assert_eq!(content_length(&repeated), Ok(Some(5)));
        assert_eq!(content_length(&[]), Ok(None));
        for bad in [
            &[h("content-length", "5, 6")][..],
            &[h("content-length", "5"), h("content-length", "6")],
            &[h("content-length", "+5")],
            &[h("content-length", "")],
        ] {
            assert!(content_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connections_stay_open_as_their_version_and_tokens_say() {
        assert!(keeps_alive(1, &[h("connection", "keep-alive")]));
        assert!(!keeps_alive(1, &[h("connection", "Close")]));
        assert!(!keeps_alive(1, &[h("connection", "upgrade, close")]));
        assert!(!keeps_alive(0, &[]));
        assert!(keeps_alive(0, &[h("connection", "Keep-Alive")]));
    }

    #[test]
    fn bodies_end_as_rfc_9112_says() {
        let chunked = [
            h("transfer-encoding", "gzip, chunked"),
            h("content-length", "3"),
        ];
        assert_eq!(response_framing(200, &chunked, "GET"), Framing::Chunked);
        let gzip = [h("transfer-encoding", "gzip")];
        assert_eq!(response_framing(200, &gzip, "GET"), Framing::UntilClose);
        let three = [h("content-length", "3")];
        assert_eq!(response_framing(200, &three, "GET"), Framing::Length(3));
        assert_eq!(response_framing(304, &three, "GET"), Framing::None);
        assert_eq!(response_framing(200, &three, "HEAD"), Framing::None);
        assert_eq!(response_framing(101, &[], "GET"), Framing::Tunnel);
        assert_eq!(response_framing(200, &[], "GET"), Framing::UntilClose);
    }
}
