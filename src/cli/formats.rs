//! `tandem import` of HAR and GoReplay files, and `tandem export` of a
//! capture or a run's results as HAR or `.gor` (src/record/har.rs,
//! src/record/gor.rs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::EXIT_BAD_INPUT;
use crate::capture::{CaptureHeader, CaptureReader, CaptureWriter, Exchange};
use crate::record::{gor, har, Selection};

/// The formats `tandem import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// pcap or pcapng packets.
    Pcap,
    /// HTTP Archive 1.2.
    Har,
    /// GoReplay's .gor.
    Gor,
}

impl ImportFormat {
    /// By the file's name: `.har`, `.gor`, else packets.
    pub fn of(path: &Path) -> ImportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("har") => ImportFormat::Har,
            Some(e) if e.eq_ignore_ascii_case("gor") => ImportFormat::Gor,
            _ => ImportFormat::Pcap,
        }
    }
}

/// Imports a HAR or `.gor` file into the capture `out`: the selection and
/// redaction as for any recording; what cannot be read is named, counted,
/// and left out (exit 2).
/// What an import of HAR or `.gor` keeps, and how.
pub(super) struct ImportOptions {
    /// Body bytes kept at most (`.gor`).
    pub max_body: usize,
    /// The session key from this request header, when present.
    pub session_header: Option<String>,
    /// Which exchanges are kept.
    pub selection: Selection,
    /// Redaction of what is kept.
    pub redactor: Option<crate::redact::Redactor>,
}

pub(super) fn import(
    format: ImportFormat,
    file: &Path,
    out: &Path,
    options: ImportOptions,
) -> anyhow::Result<ExitCode> {
    let ImportOptions {
        max_body,
        session_header,
        selection,
        redactor,
    } = options;
    let (exchanges, started, unreadable, notes) = match format {
        ImportFormat::Har => {
            let h = har::read(file)?;
            let notes = format!(
                "{} without their answer's body, marked incomplete",
                h.without_body
            );
            (h.exchanges, h.started_at_unix_us, h.unreadable, notes)
        }
        ImportFormat::Gor => {
            let g = gor::read(file, max_body)?;
            let notes = format!(
                "{} replayed answers and {} answers without their request left out",
                g.replayed_answers, g.orphan_answers
            );
            (g.exchanges, g.started_at_unix_us, g.unreadable, notes)
        }
        ImportFormat::Pcap => unreachable!("packets are imported by record::import"),
    };
    let source = format!(
        "{} file={}",
        if format == ImportFormat::Har {
            "har"
        } else {
            "gor"
        },
        file.display()
    );
    let header = CaptureHeader {
        started_at_unix_us: started,
        ..CaptureHeader::new(source)
    };
    let mut exchanges = exchanges;
    if let Some(name) = &session_header {
        for exchange in &mut exchanges {
            if let Some(key) = crate::capture::header_value(&exchange.request.headers, name) {
                exchange.session = key.to_string();
            }
        }
    }
    let (written, filtered, redacted) =
        write_capture(out, &header, exchanges, &selection, redactor)?;
    println!(
        "wrote {written} exchanges ({filtered} left out by --methods/--path-regex/--sample-percent; {notes}) to {}",
        out.display()
    );
    if !redacted.is_empty() {
        println!("redacted: {}", super::record::redaction_counts(&redacted));
    }
    if !unreadable.is_empty() {
        for line in &unreadable {
            eprintln!("tandem: {line}");
        }
        eprintln!(
            "tandem: {} entries could not be read and were not imported",
            unreadable.len()
        );
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `exchanges` (numbered anew) to `out`; returns what was written,
/// left out, and redacted.
fn write_capture(
    out: &Path,
    header: &CaptureHeader,
    exchanges: Vec<Exchange>,
    selection: &Selection,
    mut redactor: Option<crate::redact::Redactor>,
) -> anyhow::Result<(u64, u64, std::collections::BTreeMap<String, u64>)> {
    let mut writer = CaptureWriter::create(out, header)?;
    let (mut written, mut filtered) = (0, 0);
    for mut exchange in exchanges {
        if !selection.keeps(&exchange) {
            filtered += 1;
            continue;
        }
        written += 1;
        exchange.id = written;
        if let Some(redactor) = redactor.as_mut() {
            redactor.apply(&mut exchange);
        }
        writer.write(&exchange)?;
    }
    let redacted = redactor.map(|mut r| r.take_counts()).unwrap_or_default();
    match redacted.is_empty() {
        true => writer.finish()?,
        false => writer.finish_with(crate::capture::CaptureTrailer {
            redacted: redacted.clone(),
        })?,
    };
    Ok((written, filtered, redacted))
}

/// `tandem export`'s arguments.
#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// A capture file, or a run directory (its results.jsonl: each request
    /// with legacy's and new's answers).
    source: PathBuf,
    /// The file to write: `.har` (open it in browser devtools) or `.gor`.
    #[arg(long)]
    out: PathBuf,
    /// Only these exchange ids (e.g. a mismatch group's examples); repeat
    /// or separate by commas.
    #[arg(long = "id", value_delimiter = ',')]
    ids: Vec<u64>,
}

/// `tandem export`.
pub(super) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let har = match args.out.extension().and_then(|e| e.to_str()) {
        Some("har") => true,
        Some("gor") => false,
        _ => anyhow::bail!("{}: name the output .har or .gor", args.out.display()),
    };
    let wanted = |id: u64| args.ids.is_empty() || args.ids.contains(&id);
    let exported = match args.source.is_dir() {
        true => export_results(&args.source, &args.out, har, &wanted)?,
        false => export_capture(&args.source, &args.out, har, &wanted)?,
    };
    println!("wrote {exported} exchanges to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn export_capture(
    capture: &Path,
    out: &Path,
    har: bool,
    wanted: &dyn Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    crate::output::refuse_overwriting(&[capture], &[out])?;
    let mut reader = CaptureReader::open(capture)?;
    let started = reader.header().started_at_unix_us;
    let (mut entries, mut gor, mut n) = (Vec::new(), gor::Writer::new(), 0);
    for exchange in reader.by_ref() {
        let exchange = exchange?;
        if !wanted(exchange.id) {
            continue;
        }
        n += 1;
        match har {
            true => entries.push(har::entry(
                &exchange.request,
                exchange.response.as_ref(),
                started,
                exchange.offset_us,
                None,
            )),
            false => gor.exchange(
                exchange.id,
                (started + exchange.offset_us) * 1000,
                &exchange.request,
                exchange.response.as_ref(),
                None,
            ),
        }
    }
    match har {
        true => har::write(out, entries)?,
        false => gor.write(out)?,
    }
    Ok(n)
}

/// A run's results: in HAR an entry for each stack's answer (commented
/// `legacy`, `new`); in `.gor` legacy's as the original answer and new's as
/// the replayed one.
fn export_results(
    run: &Path,
    out: &Path,
    har: bool,
    wanted: &dyn Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let path = run.join(crate::results::FILE_NAME);
    let mut reader = crate::results::ResultsReader::open(&path)
        .with_context(|| format!("{}: not a run directory", run.display()))?;
    let started = reader.header().started_at_unix_us;
    let (mut entries, mut gor, mut n) = (Vec::new(), gor::Writer::new(), 0);
    while let Some(result) = reader.next_result() {
        let result = result?;
        if !wanted(result.id) {
            continue;
        }
        n += 1;
        let (legacy, new) = (
            result.legacy.response.as_ref(),
            result.new.response.as_ref(),
        );
        match har {
            true => {
                for (stack, answer) in [("legacy", legacy), ("new", new)] {
                    entries.push(har::entry(
                        &result.request,
                        answer,
                        started,
                        result.scheduled_us,
                        Some(format!("exchange {} answered by {stack}", result.id)),
                    ));
                }
            }
            false => gor.exchange(
                result.id,
                (started + result.scheduled_us) * 1000,
                &result.request,
                legacy,
                new,
            ),
        }
    }
    match har {
        true => har::write(out, entries)?,
        false => gor.write(out)?,
    }
    Ok(n)
}
