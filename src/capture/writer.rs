use std::path::Path;

use super::{CaptureHeader, CaptureTrailer, Exchange};
use crate::jsonl::LineWriter;

/// Writes a capture file; gzip when the name ends in `.gz`.
///
/// Call [`CaptureWriter::finish`] to complete the file.
pub struct CaptureWriter {
    lines: LineWriter,
}

impl CaptureWriter {
    /// Creates `path` (and its parent directories) and writes the header line.
    pub fn create(path: impl AsRef<Path>, header: &CaptureHeader) -> anyhow::Result<Self> {
        let mut lines = LineWriter::create(path)?;
        lines.write(header)?;
        Ok(CaptureWriter { lines })
    }

    /// Appends one exchange.
    pub fn write(&mut self, exchange: &Exchange) -> anyhow::Result<()> {
        self.lines.write(exchange)
    }

    /// Pushes buffered exchanges to the file.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.lines.flush()
    }

    /// Bytes written so far, before compression.
    pub fn bytes(&self) -> u64 {
        self.lines.bytes()
    }

    /// How many exchanges were written.
    pub fn written(&self) -> u64 {
        self.lines.lines().saturating_sub(1)
    }

    /// Writes `trailer` as the last line, then finishes the file.
    pub fn finish_with(mut self, trailer: CaptureTrailer) -> anyhow::Result<u64> {
        let written = self.written();
        self.lines.write(&super::TrailerLine { trailer })?;
        self.lines.finish()?;
        Ok(written)
    }

    /// Flushes and closes the file; returns the number of exchanges written.
    pub fn finish(self) -> anyhow::Result<u64> {
        let written = self.written();
        self.lines.finish()?;
        Ok(written)
    }
}
