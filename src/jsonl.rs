//! Streaming JSON Lines files, plain or gzip: the container of every format
//! tandem writes between stages (capture, results). Errors name the file and
//! the line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::write::GzEncoder;

/// What can go wrong reading a JSON Lines file, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The file could not be opened.
    // The io error is part of the message, not a chained source, so that
    // `{:#}` does not print it twice.
    #[error("{path}: cannot open: {cause}")]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Reading failed part way, e.g. a truncated gzip stream.
    #[error("{path}: line {line}: read failed: {cause}")]
    Read {
        path: PathBuf,
        line: u64,
        cause: std::io::Error,
    },
    /// A line is not what the format says it must be.
    #[error("{path}: line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

impl LineError {
    /// The line it is about; 0 when the file could not be opened.
    pub fn line(&self) -> u64 {
        match self {
            LineError::Open { .. } => 0,
            LineError::Read { line, .. } | LineError::Malformed { line, .. } => *line,
        }
    }
}

/// Reads a JSON Lines file one value at a time, through gzip when the file
/// starts with gzip's magic bytes.
pub struct LineReader {
    path: PathBuf,
    lines: Box<dyn BufRead + Send>,
    line_no: u64,
    buf: String,
    /// The line's bytes, before they are checked to be UTF-8.
    raw: Vec<u8>,
    /// Set after a read failure: the stream cannot be trusted past it.
    failed: bool,
}

impl LineReader {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<LineReader, LineError> {
        let path = path.as_ref().to_path_buf();
        let open_error = |cause| LineError::Open {
            path: path.clone(),
            cause,
        };
        let file = File::open(&path).map_err(open_error)?;
        let mut raw = BufReader::with_capacity(256 * 1024, file);
        let gzip = raw
            .fill_buf()
            .map_err(open_error)?
            .starts_with(&[0x1f, 0x8b]);
        let lines: Box<dyn BufRead + Send> = if gzip {
            let decoder = flate2::read::MultiGzDecoder::new(raw);
            Box::new(BufReader::with_capacity(256 * 1024, decoder))
        } else {
            Box::new(raw)
        };
        Ok(LineReader {
            path,
            lines,
            line_no: 0,
            buf: String::new(),
            raw: Vec::new(),
            failed: false,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line last read, without its line break.
    pub fn current(&self) -> &str {
        self.buf.trim_end()
    }

    /// The line last read, without its line break, where it was not
    /// UTF-8: each invalid sequence replaced by U+FFFD. `None` for a line
    /// that was.
    pub fn current_lossy(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.raw);
        matches!(text, std::borrow::Cow::Owned(_)).then(|| text.trim_end().to_string())
    }

    /// The number of the line last read, from 1.
    pub fn line_number(&self) -> u64 {
        self.line_no
    }

    /// Opens `path` and reads its header line as `H`, refusing a file of
    /// another format or version: `versioned` gives the header's `format`
    /// and `version`, to be `format` of a version in `versions` (the
    /// results and effects files of a run directory).
    pub fn open_versioned<H: serde::de::DeserializeOwned>(
        path: &Path,
        (format, versions): (&str, std::ops::RangeInclusive<u32>),
        versioned: impl Fn(&H) -> (&str, u32),
    ) -> anyhow::Result<(LineReader, H)> {
        let mut lines = LineReader::open(path)?;
        let header: H = match lines.next(&format!("the {format} header line")) {
            Some(header) => header?,
            None => anyhow::bail!(
                "{}: empty file, expected a {format} header line",
                path.display()
            ),
        };
        let (found, found_version) = versioned(&header);
        let reads = match (versions.start(), versions.end()) {
            (first, last) if first == last => format!("v{first}"),
            (first, last) => format!("v{first} to v{last}"),
        };
        anyhow::ensure!(
            found == format && versions.contains(&found_version),
            "{}: format {found} v{found_version} is not supported (this build reads {format} \
             {reads})",
            path.display(),
        );
        Ok((lines, header))
    }

    /// The next non-blank line parsed as `T`, `None` at the end of the file.
    /// `what` names the expected value in the error message. A malformed line
    /// is an error and reading goes on after it; a read failure (such as a
    /// truncated gzip stream) is an error and the last item.
    pub fn next<T: serde::de::DeserializeOwned>(
        &mut self,
        what: &str,
    ) -> Option<Result<T, LineError>> {
        Some(self.advance()?.and_then(|()| self.parse_current(what)))
    }

    /// Moves to the next non-blank line, `None` at the end of the file; a
    /// read failure is an error and the last item. For readers that parse
    /// only part of a line ([`LineReader::parse_current`],
    /// [`LineReader::parse_part`]).
    pub fn advance(&mut self) -> Option<Result<(), LineError>> {
        if self.failed {
            return None;
        }
        match self.next_line() {
            Ok(false) => None,
            Ok(true) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        }
    }

    /// The current line parsed as `T`, which may borrow from it.
    pub fn parse_current<'a, T: serde::Deserialize<'a>>(
        &'a self,
        what: &str,
    ) -> Result<T, LineError> {
        self.parse_part(self.buf.trim_end(), what)
    }

    /// `text`, a part of the current line, parsed as `T`; an error names
    /// the line.
    pub fn parse_part<'a, T: serde::Deserialize<'a>>(
        &self,
        text: &'a str,
        what: &str,
    ) -> Result<T, LineError> {
        serde_json::from_str(text).map_err(|e| {
            let hint = if e.is_eof() {
                " (the line is truncated)"
            } else {
                ""
            };
            self.malformed(format!("expected {what}: {e}{hint}"))
        })
    }

    /// An error about the line last read.
    pub fn malformed(&self, message: String) -> LineError {
        LineError::Malformed {
            path: self.path.clone(),
            line: self.line_no,
            message,
        }
    }

    /// Reads the next non-blank line into `buf`. A line that is not UTF-8
    /// is an error of that line alone: reading goes on after it.
    fn next_line(&mut self) -> Result<bool, LineError> {
        loop {
            self.buf.clear();
            self.raw.clear();
            self.line_no += 1;
            let read = self.lines.read_until(b'\n', &mut self.raw);
            let n = read.map_err(|cause| {
                self.failed = true;
                LineError::Read {
                    path: self.path.clone(),
                    line: self.line_no,
                    cause,
                }
            })?;
            if n == 0 {
                return Ok(false);
            }
            match std::str::from_utf8(&self.raw) {
                Ok(text) => self.buf.push_str(text),
                Err(e) => {
                    return Err(self.malformed(format!(
                        "not UTF-8 (an invalid byte at column {}); the line is skipped",
                        e.valid_up_to() + 1
                    )))
                }
            }
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }
}

/// Lines are pushed to the file at least this often while they come.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes JSON Lines, gzip-compressed when the name ends in `.gz`.
///
/// The file is written as `NAME.partial` and renamed to NAME by
/// [`LineWriter::finish`], so that an existing NAME stays whole until the
/// new one is, and a killed run leaves its lines in the partial file: they
/// are pushed to it at least once a second while lines come.
pub struct LineWriter {
    path: PathBuf,
    partial: PathBuf,
    flushed: std::time::Instant,
    /// `None` once finished.
    sink: Option<Sink>,
    lines: u64,
    bytes: u64,
    /// One line is serialized here, then written in one call: serde_json
    /// writes strings in many small pieces.
    line: Vec<u8>,
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl LineWriter {
    /// Creates `path` and its parent directories.
    pub fn create(path: impl AsRef<Path>) -> anyhow::Result<LineWriter> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        }
        let partial = crate::output::partial_name(&path);
        let file = File::create(&partial)
            .with_context(|| format!("{}: cannot create", partial.display()))?;
        let buffered = BufWriter::with_capacity(256 * 1024, file);
        let sink = if path.extension().is_some_and(|e| e == "gz") {
            Sink::Gzip(GzEncoder::new(buffered, flate2::Compression::fast()))
        } else {
            Sink::Plain(buffered)
        };
        Ok(LineWriter {
            path,
            partial,
            flushed: std::time::Instant::now(),
            sink: Some(sink),
            lines: 0,
            bytes: 0,
            line: Vec::with_capacity(4096),
        })
    }

    /// Appends `value` as one line.
    pub fn write<T: serde::Serialize>(&mut self, value: &T) -> anyhow::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value)
            .with_context(|| format!("{}: cannot serialize a line", self.path.display()))?;
        self.line.push(b'\n');
        self.sink
            .as_mut()
            .expect("not finished")
            .as_write()
            .write_all(&self.line)
            .with_context(|| format!("{}: write failed", self.path.display()))?;
        self.bytes += self.line.len() as u64;
        self.lines += 1;
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Pushes buffered lines to the file, so that a crash loses little.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.flushed = std::time::Instant::now();
        let result = self.sink().flush();
        result.with_context(|| format!("{}: flush failed", self.partial.display()))
    }

    /// Bytes written so far, before compression.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The file being written, by the name it has once finished.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and closes the file, completing the gzip stream, and gives
    /// it its name.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let result = match self.sink.take().expect("finished once") {
            Sink::Plain(mut w) => w.flush(),
            Sink::Gzip(w) => w.finish().and_then(|mut inner| inner.flush()),
        };
        result.with_context(|| format!("{}: closing failed", self.partial.display()))?;
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "{}: cannot rename to {}",
                self.partial.display(),
                self.path.display()
            )
        })
    }
}

impl LineWriter {
    fn sink(&mut self) -> &mut dyn Write {
        self.sink.as_mut().expect("not finished").as_write()
    }
}

impl Drop for LineWriter {
    /// Unfinished (an error stopped the writing): a partial file holding
    /// only its header line is removed; one with more is kept, for what it
    /// holds.
    fn drop(&mut self) {
        if self.sink.is_some() && self.lines <= 1 {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl Sink {
    fn as_write(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }

    fn open(text: &str) -> anyhow::Result<(LineReader, Header)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("file.jsonl");
        std::fs::write(&path, text)?;
        LineReader::open_versioned(&path, ("tandem-things", 1..=1), |h: &Header| {
            (&h.format, h.version)
        })
    }

    #[test]
    fn a_versioned_file_is_read_only_in_its_own_format_and_version() {
        let (mut lines, header) =
            open("{\"format\":\"tandem-things\",\"version\":1}\n7\n").unwrap();
        assert_eq!(
            (header.format.as_str(), header.version),
            ("tandem-things", 1)
        );
        assert_eq!(lines.next::<u32>("a number").unwrap().unwrap(), 7);
        let error = |text| open(text).err().expect("refused").to_string();
        let newer = error("{\"format\":\"tandem-things\",\"version\":2}\n");
        assert!(newer.contains("file.jsonl: format tandem-things v2 is not supported (this build reads tandem-things v1)"), "{newer}");
        let other = error("{\"format\":\"tandem-results\",\"version\":1}\n");
        assert!(
            other.contains("format tandem-results v1 is not supported"),
            "{other}"
        );
        let empty = error("");
        assert!(
            empty.contains("empty file, expected a tandem-things header line"),
            "{empty}"
        );
    }
}
