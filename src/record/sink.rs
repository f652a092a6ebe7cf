//! Where recorded exchanges go: put back in arrival order, filtered and
//! sampled, numbered, and written to a capture file that may rotate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::Context;
use regex::Regex;

use crate::capture::ordered::InOrder;
use crate::capture::{CaptureHeader, CaptureTrailer, CaptureWriter, Exchange};
use crate::redact::Redactor;

/// Which exchanges are kept.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Keep only these methods (upper case); empty keeps all.
    pub methods: Vec<String>,
    /// Keep only targets whose path and query match.
    pub path: Option<Regex>,
    /// Keep this percentage of sessions (0 < p ≤ 100), whole sessions at a time.
    pub sample_percent: Option<f64>,
}

impl Selection {
    /// True when `exchange` is kept.
    pub fn keeps(&self, exchange: &Exchange) -> bool {
        let request = &exchange.request;
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&request.method))
        {
            return false;
        }
        if self
            .path
            .as_ref()
            .is_some_and(|re| !re.is_match(&request.target))
        {
            return false;
        }
        match self.sample_percent {
            Some(p) => session_bucket(&exchange.session) < p,
            None => true,
        }
    }
}

/// Where a session falls in 0..100, the same on every machine and run
/// (FNV-1a), so that sampling keeps or drops a session whole.
fn session_bucket(session: &str) -> f64 {
    (crate::capture::session_hash(session) % 10_000) as f64 / 100.0
}

/// When to start a new capture file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    /// After this many bytes (before compression).
    pub max_bytes: Option<u64>,
    /// After this long.
    pub max_age: Option<Duration>,
}

impl Rotation {
    fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// What a sink wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkSummary {
    /// Exchanges written.
    pub written: u64,
    /// Exchanges left out by the selection.
    pub filtered: u64,
    /// The files written, in order.
    pub files: Vec<PathBuf>,
    /// Values replaced by each redaction rule, over all files.
    pub redacted: BTreeMap<String, u64>,
}

/// The recording end of a source. Ordering, selection and numbering happen
/// on the caller's thread; serializing, compressing and writing on a thread
/// of their own, so that a source and its file use two cores.
pub struct Sink {
    selection: Selection,
    order: InOrder,
    written: u64,
    filtered: u64,
    jobs: Option<SyncSender<Job>>,
    files: Option<JoinHandle<anyhow::Result<Written>>>,
    /// Exchanges the writer has flushed to the file: all before them are
    /// on disk.
    confirmed: Arc<AtomicU64>,
}

enum Job {
    Write(Box<Exchange>),
    Flush,
}

impl Sink {
    /// A sink writing to `out` (or to numbered parts of it when rotating).
    /// The first file is created before this returns, so that a bad path is
    /// an error here.
    pub fn create(
        out: &Path,
        source: &str,
        selection: Selection,
        rotation: Rotation,
    ) -> anyhow::Result<Sink> {
        Sink::create_with(out, source, selection, rotation, None)
    }

    /// [`Sink::create`], redacting each exchange with `redactor` (on the
    /// writer's thread) and writing its counts in each file's trailer.
    pub fn create_with(
        out: &Path,
        source: &str,
        selection: Selection,
        rotation: Rotation,
        redactor: Option<Redactor>,
    ) -> anyhow::Result<Sink> {
        let confirmed = Arc::new(AtomicU64::new(0));
        let mut files = Files {
            out: out.to_path_buf(),
            source: source.to_string(),
            rotation,
            writer: None,
            opened: Instant::now(),
            paths: Vec::new(),
            lines: 0,
            confirmed: confirmed.clone(),
            redactor,
            redacted: BTreeMap::new(),
        };
        files.open_next()?;
        let (jobs, queue) = sync_channel(4096);
        let thread = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || files.run(queue))?;
        Ok(Sink {
            selection,
            order: InOrder::new(1, 100_000),
            written: 0,
            filtered: 0,
            jobs: Some(jobs),
            files: Some(thread),
            confirmed,
        })
    }

    /// Exchanges the writer has flushed to the file.
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Exchanges handed to the writer that it has not confirmed on disk
    /// (after a write failure: those lost with it).
    pub fn unconfirmed(&self) -> u64 {
        self.written.saturating_sub(self.confirmed())
    }

    /// Which exchanges it keeps.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Exchanges finished by a source, with provisional numbers.
    pub fn take(&mut self, produced: Vec<(u64, Option<Exchange>)>) -> anyhow::Result<()> {
        for (id, exchange) in produced {
            let ready = self.order.done(id, exchange);
            self.write(ready)?;
        }
        Ok(())
    }

    /// Pushes what is buffered to the file.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.send(Job::Flush)
    }

    /// Writes what still waits and closes the file.
    pub fn finish(mut self) -> anyhow::Result<SinkSummary> {
        let rest = self.order.drain();
        self.write(rest)?;
        let Written { paths, redacted } = self.stop_writer()?;
        Ok(SinkSummary {
            written: self.written,
            filtered: self.filtered,
            files: paths,
            redacted,
        })
    }

    fn write(&mut self, ready: Vec<Exchange>) -> anyhow::Result<()> {
        for mut exchange in ready {
            if !self.selection.keeps(&exchange) {
                self.filtered += 1;
                continue;
            }
            self.written += 1;
            exchange.id = self.written;
            self.send(Job::Write(Box::new(exchange)))?;
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> anyhow::Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer stopped: its error says why.
            _ => match self.stop_writer() {
                Err(e) => Err(e),
                Ok(_) => anyhow::bail!("the capture writer stopped"),
            },
        }
    }

    fn stop_writer(&mut self) -> anyhow::Result<Written> {
        drop(self.jobs.take());
        match self.files.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the capture writer panicked"))?,
            None => anyhow::bail!("the capture writer already stopped"),
        }
    }
}

/// The capture file(s) being written, on the writer thread.
struct Files {
    out: PathBuf,
    source: String,
    rotation: Rotation,
    writer: Option<CaptureWriter>,
    opened: Instant,
    paths: Vec<PathBuf>,
    /// Exchanges written (into buffers at least).
    lines: u64,
    confirmed: Arc<AtomicU64>,
    redactor: Option<Redactor>,
    /// Redaction counts of the files already finished.
    redacted: BTreeMap<String, u64>,
}

/// What the writer wrote: its files, and what redaction replaced.
struct Written {
    paths: Vec<PathBuf>,
    redacted: BTreeMap<String, u64>,
}

impl Files {
    fn run(mut self, queue: Receiver<Job>) -> anyhow::Result<Written> {
        for job in queue {
            match job {
                Job::Write(mut exchange) => {
                    if let Some(redactor) = self.redactor.as_mut() {
                        redactor.apply(&mut exchange);
                    }
                    if self.due_for_rotation() {
                        self.open_next()?;
                    }
                    self.writer
                        .as_mut()
                        .expect("a file is open")
                        .write(&exchange)?;
                    self.lines += 1;
                }
                Job::Flush => {
                    if let Some(writer) = self.writer.as_mut() {
                        writer.flush()?;
                        self.confirmed.store(self.lines, Ordering::Relaxed);
                    }
                }
            }
        }
        self.finish_file()?;
        Ok(Written {
            paths: self.paths,
            redacted: self.redacted,
        })
    }

    /// Finishes the current file, with a trailer of what redaction
    /// replaced in it.
    fn finish_file(&mut self) -> anyhow::Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        match self.redactor.as_mut() {
            Some(redactor) => {
                let counts = redactor.take_counts();
                for (rule, n) in &counts {
                    *self.redacted.entry(rule.clone()).or_default() += n;
                }
                writer.finish_with(CaptureTrailer { redacted: counts })?;
            }
            None => {
                writer.finish()?;
            }
        }
        self.confirmed.store(self.lines, Ordering::Relaxed);
        Ok(())
    }

    fn due_for_rotation(&self) -> bool {
        let Some(writer) = &self.writer else {
            return true;
        };
        let too_big = self
            .rotation
            .max_bytes
            .is_some_and(|max| writer.bytes() >= max);
        let too_old = self
            .rotation
            .max_age
            .is_some_and(|max| self.opened.elapsed() >= max);
        writer.written() > 0 && (too_big || too_old)
    }

    fn open_next(&mut self) -> anyhow::Result<()> {
        self.finish_file()?;
        let path = if self.rotation.enabled() {
            part_path(&self.out, self.paths.len() + 1)
        } else {
            self.out.clone()
        };
        let header = CaptureHeader::new(self.source.clone());
        let writer = CaptureWriter::create(&path, &header)
            .with_context(|| format!("{}: cannot start the capture", path.display()))?;
        self.writer = Some(writer);
        self.opened = Instant::now();
        self.paths.push(path);
        Ok(())
    }
}

/// `captures/live.jsonl.gz`, part 3 → `captures/live.0003.jsonl.gz`.
fn part_path(out: &Path, part: usize) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, rest) = match name.find('.') {
        Some(dot) => name.split_at(dot),
        None => (name.as_str(), ""),
    };
    out.with_file_name(format!("{stem}.{part:04}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_before_the_extensions() {
        assert_eq!(
            part_path(Path::new("c/live.jsonl.gz"), 3),
            Path::new("c/live.0003.jsonl.gz")
        );
        assert_eq!(part_path(Path::new("cap"), 12), Path::new("cap.0012"));
    }

    #[test]
    fn sampling_keeps_about_the_share_asked_and_is_stable() {
        let kept = (0..10_000)
            .filter(|i| {
                session_bucket(&format!("127.0.{}.{}:{}", i % 250 / 100, i % 100, i)) < 25.0
            })
            .count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
        assert_eq!(session_bucket("a:1"), session_bucket("a:1"));
    }
}
