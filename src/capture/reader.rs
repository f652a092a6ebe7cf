use std::path::Path;

use super::{CaptureHeader, Exchange, FORMAT, VERSION};
use crate::jsonl::{LineError, LineReader};

/// Errors reading a capture name the file and the line.
pub type CaptureError = LineError;

/// Reads a capture file one exchange at a time.
pub struct CaptureReader {
    lines: LineReader,
    header: CaptureHeader,
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
        Ok(CaptureReader { lines, header })
    }

    /// The capture's header line.
    pub fn header(&self) -> &CaptureHeader {
        &self.header
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        self.lines.path()
    }
}

impl Iterator for CaptureReader {
    type Item = Result<Exchange, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.lines.next("an exchange")
    }
}
