//! Content-Encoding: bodies are recorded as sent and decoded for comparison.

use std::io::Read;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {coding} body: {message}")]
pub struct DecodeError {
    /// The coding that failed.
    pub coding: String,
    /// What went wrong.
    pub message: String,
}

/// Decodes `body` by the Content-Encoding header value `codings` (applied in
/// order, so decoded in reverse): gzip, x-gzip, deflate (zlib, or raw as
/// some servers send), br, identity. Decoded output is capped at `limit`
/// bytes, so a compression bomb cannot exhaust memory.
pub fn decode(codings: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut data = body.to_vec();
    for coding in codings
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .rev()
    {
        data = match coding.as_str() {
            "" | "identity" => data,
            "gzip" | "x-gzip" => {
                read(flate2::read::MultiGzDecoder::new(&data[..]), limit, &coding)?
            }
            "deflate" => match read(flate2::read::ZlibDecoder::new(&data[..]), limit, &coding) {
                Ok(decoded) => decoded,
                // Servers that send raw deflate without the zlib header.
                Err(_) => read(flate2::read::DeflateDecoder::new(&data[..]), limit, &coding)?,
            },
            "br" => read(
                brotli_decompressor::Decompressor::new(&data[..], 4096),
                limit,
                &coding,
            )?,
            other => {
                return Err(DecodeError {
                    coding: other.to_string(),
                    message: "unknown content coding".into(),
                })
            }
        };
    }
    Ok(data)
}

fn read(reader: impl Read, limit: usize, coding: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError {
            coding: coding.to_string(),
            message: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError {
            coding: coding.to_string(),
            message: format!("decoded body over {limit} bytes"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_deflate_raw_deflate_and_stacks() {
        let text = b"hello hello hello hello";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode("gzip", &gz, 1 << 20).unwrap(), text);
        assert_eq!(decode("X-Gzip", &gz, 1 << 20).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text).unwrap();
        assert_eq!(
            decode("deflate", &z.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(text).unwrap();
        assert_eq!(
            decode("deflate", &raw.finish().unwrap(), 1 << 20).unwrap(),
            text
        );
        assert!(decode("gzip", &gz, 5).is_err(), "the limit holds");
        assert!(decode("compress", text, 1 << 20).is_err());
    }
}
