use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::repeats;

/// A message body. Serialized as a JSON string when it is UTF-8 text and as
/// `{"base64": "..."}` when it is not, so that binary bodies survive exactly.
/// A file that states repeated bodies once (results from v2, see
/// [`repeats`]) also writes `{"text": "...", "keep": N}` (or `"base64"`
/// with `"keep"`) for a body later lines may repeat, and `{"same": N}` for
/// the repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

impl Body {
    /// The raw bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body(bytes)
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Self {
        Body(Bytes::copy_from_slice(text.as_bytes()))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Repr<'a> {
    Text(&'a str),
    KeptText {
        text: &'a str,
        keep: u64,
    },
    Binary {
        base64: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        keep: Option<u64>,
    },
    Same {
        same: u64,
    },
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let keep = match repeats::note(&self.0) {
            repeats::Noted::Same(same) => return Repr::Same { same }.serialize(serializer),
            repeats::Noted::Keep(number) => Some(number),
            repeats::Noted::Plain => None,
        };
        let repr = match (std::str::from_utf8(&self.0), keep) {
            (Ok(text), None) => Repr::Text(text),
            (Ok(text), Some(keep)) => Repr::KeptText { text, keep },
            (Err(_), keep) => Repr::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(&self.0),
                keep,
            },
        };
        repr.serialize(serializer)
    }
}

// Read by a visitor rather than as an untagged enum: serde buffers an
// untagged value whole before trying its variants, a copy of every body of a
// capture.
impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> serde::de::Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a body: a string, or {\"base64\": \"...\"}")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Body, E> {
        Ok(Body::from(text))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Body, E> {
        Ok(Body(Bytes::from(text)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        use serde::de::Error;
        let (mut text, mut base64, mut keep, mut same) = (None, None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "text" if text.is_none() => text = Some(map.next_value::<String>()?),
                "base64" if base64.is_none() => base64 = Some(map.next_value::<String>()?),
                "keep" if keep.is_none() => keep = Some(map.next_value::<u64>()?),
                "same" if same.is_none() => same = Some(map.next_value::<u64>()?),
                _ => {
                    return Err(A::Error::custom(format!(
                        "body: unexpected field {key:?}, expected \"base64\" or \"text\" (and \
                         \"keep\"), or \"same\""
                    )))
                }
            }
        }
        let body = match (text, base64, same) {
            (None, None, Some(same)) if keep.is_none() => {
                return repeats::same(same).map(Body).map_err(A::Error::custom)
            }
            (Some(text), None, None) => Body(Bytes::from(text)),
            (None, Some(base64), None) => base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map(|bytes| Body(Bytes::from(bytes)))
                .map_err(|e| A::Error::custom(format!("body: invalid base64: {e}")))?,
            _ => {
                return Err(A::Error::custom(
                    "body: expected one of \"base64\", \"text\" or \"same\"",
                ))
            }
        };
        if let Some(keep) = keep {
            repeats::keep(keep, &body.0);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_a_string_and_binary_is_base64() {
        let text = Body::from("héllo");
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"héllo\"");
        let binary = Body(Bytes::from_static(&[0xff, 0x00, 0x1f]));
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"base64":"/wAf"}"#);
        assert_eq!(serde_json::from_str::<Body>(&json).unwrap(), binary);
        assert_eq!(serde_json::from_str::<Body>("\"héllo\"").unwrap(), text);
    }
}
