use std::borrow::Cow;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{CaptureHeader, CaptureTrailer, Exchange, Request, FORMAT, VERSION};
use crate::jsonl::{LineError, LineReader};

/// Errors reading a capture name the file and the line.
pub type CaptureError = LineError;

/// Reads a capture file one exchange at a time.
pub struct CaptureReader {
    lines: LineReader,
    header: CaptureHeader,
    trailer: Option<CaptureTrailer>,
    /// The current line, copied for simd-json (which unescapes in place),
    /// and its reused buffers.
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl CaptureReader {
    /// Opens `path` (plain or gzip) and checks its header line.
    pub fn open(path: impl AsRef<Path>) -> Result<CaptureReader, CaptureError> {
        let mut lines = LineReader::open(path)?;
        let header: CaptureHeader = match lines.next("the tandem-capture header line") {
            None => {
                let msg = "empty file: expected a tandem-capture header line".to_string();
                return Err(lines.malformed(msg));
            }
            Some(header) => header?,
        };
        if header.format != FORMAT {
            let msg = format!("format is {:?}, expected {FORMAT:?}", header.format);
            return Err(lines.malformed(msg));
        }
        if header.version != VERSION {
            let msg = format!(
                "capture format version {} is not supported (this build reads version {VERSION})",
                header.version
            );
            return Err(lines.malformed(msg));
        }
        Ok(CaptureReader {
            lines,
            header,
            trailer: None,
            scratch: Vec::new(),
            buffers: simd_json::Buffers::default(),
        })
    }

    /// The capture's trailer line, once read past (at the end).
    pub fn trailer(&self) -> Option<&CaptureTrailer> {
        self.trailer.as_ref()
    }

    /// Moves to the next exchange's line, keeping a trailer line aside;
    /// `None` at the end.
    fn advance(&mut self) -> Option<Result<(), CaptureError>> {
        loop {
            if let Err(e) = self.lines.advance()? {
                return Some(Err(e));
            }
            if !self.lines.current().starts_with("{\"trailer\"") {
                return Some(Ok(()));
            }
            match self
                .lines
                .parse_current::<super::TrailerLine>("the capture's trailer")
            {
                Ok(line) => self.trailer = Some(line.trailer),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The capture's header line.
    pub fn header(&self) -> &CaptureHeader {
        &self.header
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    /// The next exchange's outline, for a reader that sends some exchanges
    /// and only needs the others' place on the timeline (a replay engine, a
    /// shard): `None` at the end of the file.
    pub fn next_outline(&mut self) -> Option<Result<Outline<'_>, CaptureError>> {
        if let Err(e) = self.advance()? {
            return Some(Err(e));
        }
        let lines = &self.lines;
        let fields = lines.parse_current::<OutlineFields>("an exchange");
        Some(fields.map(|f| Outline {
            id: f.id,
            offset_us: f.offset_us,
            session: f.session,
            request: f.request,
            response: f.response,
            lines,
        }))
    }
}

/// An exchange as a replay first reads it: where it falls on the timeline
/// and whose session it is. Its request is parsed only when asked for, and
/// the recorded answer, which a replay does not send, is kept as text for
/// the judge (fidelity) without being parsed here.
pub struct Outline<'a> {
    /// Position in the capture.
    pub id: u64,
    /// When the request arrived, µs since the capture started.
    pub offset_us: u64,
    /// The session key.
    pub session: Cow<'a, str>,
    request: &'a RawValue,
    response: Option<&'a RawValue>,
    lines: &'a crate::jsonl::LineReader,
}

impl Outline<'_> {
    /// Its line in the capture file.
    pub fn line(&self) -> u64 {
        self.lines.line_number()
    }

    /// The exchange's request; an error names the file and line.
    pub fn request(&self) -> Result<Request, CaptureError> {
        self.lines
            .parse_part(self.request.get(), "an exchange's request")
    }

    /// The request's target (path and query), read without the rest of
    /// the request; an error names the file and line.
    pub fn target(&self) -> Result<String, CaptureError> {
        #[derive(Deserialize)]
        struct Target<'a> {
            #[serde(borrow)]
            target: Cow<'a, str>,
        }
        let request: Target = self
            .lines
            .parse_part(self.request.get(), "an exchange's request")?;
        Ok(request.target.into_owned())
    }

    /// The recorded answer as its JSON text, unparsed; `None` when none was
    /// recorded.
    pub fn response_text(&self) -> Option<Box<RawValue>> {
        self.response.map(RawValue::to_owned)
    }
}

#[derive(Deserialize)]
struct OutlineFields<'a> {
    id: u64,
    offset_us: u64,
    #[serde(borrow)]
    session: Cow<'a, str>,
    #[serde(borrow)]
    request: &'a RawValue,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

impl Iterator for CaptureReader {
    type Item = Result<Exchange, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.advance()? {
            return Some(Err(e));
        }
        // A capture line is mostly bodies as escaped JSON strings, which
        // simd-json unescapes by SIMD: reading a capture whole (learning
        // reads every exchange before the first send) takes a third less
        // time. serde_json reads the lines it refuses, to name what is wrong.
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.lines.current().trim_end().as_bytes());
        if let Ok(exchange) =
            simd_json::serde::from_slice_with_buffers(&mut self.scratch, &mut self.buffers)
        {
            return Some(Ok(exchange));
        }
        Some(self.lines.parse_current("an exchange"))
    }
}
