use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A message body. Serialized as a JSON string when it is UTF-8 text and as
/// `{"base64": "..."}` when it is not, so that binary bodies survive exactly.
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
    Text(std::borrow::Cow<'a, str>),
    Binary { base64: String },
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => Repr::Text(text.into()).serialize(serializer),
            Err(_) => Repr::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(&self.0),
            }
            .serialize(serializer),
        }
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
        let mut base64: Option<std::borrow::Cow<'de, str>> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "base64" || base64.is_some() {
                return Err(A::Error::custom(format!(
                    "body: unexpected field {key:?}, expected one \"base64\""
                )));
            }
            base64 = Some(map.next_value()?);
        }
        let base64 = base64.ok_or_else(|| A::Error::missing_field("base64"))?;
        base64::engine::general_purpose::STANDARD
            .decode(base64.as_bytes())
            .map(|bytes| Body(Bytes::from(bytes)))
            .map_err(|e| A::Error::custom(format!("body: invalid base64: {e}")))
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
