//! `tandem record` (proxy or live packets) and `tandem import`: a source
//! and a capture sink, composed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::{shutdown_signal, TrustArgs, EXIT_BAD_INPUT};
use crate::record::packets::AssemblyOptions;
use crate::record::proxy::OnWriteError;
use crate::record::{
    import_file, record_live, record_proxy, ImportConfig, LiveCapture, LiveConfig, PacketRecording,
    ProxyConfig, Rotation, Selection, Sink,
};
use crate::target::Target;

#[derive(Debug, Args)]
pub(super) struct RecordArgs {
    /// Proxy mode: address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, requires = "upstream", conflicts_with = "interface")]
    listen: Option<SocketAddr>,
    /// Proxy mode: the service to forward to, e.g. http://127.0.0.1:9000.
    #[arg(long, requires = "listen")]
    upstream: Option<Target>,
    /// Packet mode: the interface to capture on (needs root or CAP_NET_RAW).
    #[arg(long, requires = "port", required_unless_present = "listen")]
    interface: Option<String>,
    /// Packet mode: the service's TCP port.
    #[arg(long, requires = "interface")]
    port: Option<u16>,
    /// Packet mode: an extra BPF filter, and-ed with the port.
    #[arg(long, requires = "interface")]
    filter: Option<String>,
    /// Capture file to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    /// Proxy mode: take the session key from this request header (default: the client connection).
    #[arg(long, requires = "listen")]
    session_header: Option<String>,
    /// Proxy mode: longest wait for the upstream's complete answer (then
    /// the client gets 504).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Proxy mode: at stop, longest wait for in-flight exchanges; those
    /// still waiting then are written unanswered, counted.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Proxy mode: longest wait for a client's request head; a slower
    /// client is disconnected.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Proxy mode: when the capture cannot be written (disk full), keep
    /// serving clients unrecorded, or stop accepting. Either way the
    /// exchanges not recorded are counted and the exit code is 2.
    #[arg(long, value_enum, default_value_t = OnWriteError::Serve)]
    on_write_error: OnWriteError,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    redact: RedactArgs,
    /// Start a new file after this many bytes (e.g. 500MB).
    #[arg(long, value_parser = parse_size)]
    rotate_size: Option<u64>,
    /// Start a new file after this long (e.g. 1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    rotate_time: Option<Duration>,
    /// Body bytes kept at most per message; longer bodies are cut and
    /// marked (the proxy forwards them whole, and records an answer's length
    /// and hash).
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_body: u64,
    /// Proxy mode: TLS towards the upstream.
    #[command(flatten)]
    trust: TrustArgs,
    /// Proxy mode: terminate TLS for clients with this certificate chain
    /// (PEM); HTTP/2 and HTTP/1.1 by ALPN.
    #[arg(long, requires = "tls_key", requires = "listen")]
    tls_cert: Option<PathBuf>,
    /// Proxy mode: the private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Proxy mode: serve live Prometheus metrics (requests and latency per
    /// route of what the upstream answered) at http://HOST:PORT/metrics.
    #[arg(long, requires = "listen")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub(super) struct ImportArgs {
    /// The file: pcap or pcapng, HAR 1.2 (browser devtools, proxies) or
    /// GoReplay .gor.
    file: PathBuf,
    /// The file's format [default: by its name (.har, .gor), else pcap].
    #[arg(long, value_enum)]
    format: Option<super::formats::ImportFormat>,
    /// HAR and .gor: take the session key from this request header when
    /// present (default: HAR's connection id, else one session).
    #[arg(long)]
    session_header: Option<String>,
    /// Capture file to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    /// Server ports, to tell client from server on connections seen without their SYN.
    #[arg(long = "port", value_delimiter = ',')]
    ports: Vec<u16>,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    redact: RedactArgs,
    /// Body bytes kept at most per message; longer bodies are cut and marked incomplete.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_body: u64,
}

/// Redaction of what is recorded (docs/redaction.md).
#[derive(Debug, Args)]
struct RedactArgs {
    /// Redact with the `[redact]` table of this file: headers, JSONPath
    /// fields, query, form and cookie keys, detectors.
    #[arg(long)]
    redact: Option<PathBuf>,
    /// The redaction key (at least 16 bytes) [default: $TANDEM_REDACT_KEY].
    #[arg(long, requires = "redact")]
    redact_key_file: Option<PathBuf>,
}

impl RedactArgs {
    fn redactor(&self) -> anyhow::Result<Option<crate::redact::Redactor>> {
        let Some(rules) = &self.redact else {
            return Ok(None);
        };
        let key = crate::redact::Redactor::key(self.redact_key_file.as_deref())?;
        Ok(Some(crate::redact::Redactor::load(rules, key)?))
    }
}

/// `tandem redact`'s arguments.
#[derive(Debug, Args)]
pub(super) struct RedactCommandArgs {
    /// The capture to redact.
    capture: PathBuf,
    /// The redacted capture to write (.gz for gzip).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    redact: RedactArgs,
}

/// `tandem redact IN --out OUT`: an existing capture redacted; a count per
/// rule in its trailer and on the terminal. A line that cannot be read is
/// not copied (it may hold what should be redacted): named, counted, exit 2.
pub(super) fn redact(args: RedactCommandArgs) -> anyhow::Result<ExitCode> {
    crate::output::refuse_overwriting(&[&args.capture], &[&args.out])?;
    let mut redactor = args
        .redact
        .redactor()?
        .context("tandem redact needs --redact FILE")?;
    let mut reader = crate::capture::CaptureReader::open(&args.capture)?;
    let mut header = reader.header().clone();
    header.source = format!("{} (redacted)", header.source);
    let mut writer = crate::capture::CaptureWriter::create(&args.out, &header)?;
    let mut unreadable = 0u64;
    for exchange in reader.by_ref() {
        match exchange {
            Ok(mut exchange) => {
                redactor.apply(&mut exchange);
                writer.write(&exchange)?;
            }
            Err(e) => {
                eprintln!("tandem: {e}; not copied");
                unreadable += 1;
            }
        }
    }
    let counts = redactor.take_counts();
    let written = writer.finish_with(crate::capture::CaptureTrailer {
        redacted: counts.clone(),
    })?;
    println!(
        "wrote {written} exchanges to {}; redacted: {}",
        args.out.display(),
        redaction_counts(&counts)
    );
    if unreadable > 0 {
        eprintln!("tandem: {unreadable} lines could not be read and were not copied");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

/// `rule N, rule M`, or `nothing`.
pub(super) fn redaction_counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    match counts.is_empty() {
        true => "nothing".to_string(),
        false => counts
            .iter()
            .map(|(rule, n)| format!("{rule} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Which exchanges a recording keeps.
#[derive(Debug, Args)]
struct SelectionArgs {
    /// Keep only these methods, e.g. GET,POST.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Keep only request targets (path and query) matching this regex.
    #[arg(long)]
    path_regex: Option<regex::Regex>,
    /// Keep this percentage of sessions, each whole (0 < P <= 100).
    #[arg(long)]
    sample_percent: Option<f64>,
}

impl SelectionArgs {
    fn selection(self) -> anyhow::Result<Selection> {
        if let Some(p) = self.sample_percent {
            anyhow::ensure!(
                p > 0.0 && p <= 100.0,
                "--sample-percent must be in (0, 100], got {p}"
            );
        }
        Ok(Selection {
            methods: self
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            path: self.path_regex,
            sample_percent: self.sample_percent,
        })
    }
}

/// `16MiB`, `500MB`, `1g`, `4096`: a size in bytes.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 16MiB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    Ok((number * factor) as u64)
}

impl RecordArgs {
    fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.rotate_size,
            max_age: self.rotate_time,
        }
    }

    /// Packet mode, as opposed to proxy mode.
    pub(super) fn packet_mode(&self) -> bool {
        self.interface.is_some()
    }
}

/// `tandem record --listen --upstream`.
pub(super) async fn proxy(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let (Some(listen), Some(upstream)) = (args.listen, args.upstream.clone()) else {
        anyhow::bail!("record needs --listen and --upstream, or --interface and --port");
    };
    // Certificates are checked before the port is taken.
    let trust = args.trust.trust()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut config = ProxyConfig {
        session_header: args.session_header.clone(),
        timeout: args.timeout,
        header_timeout: args.header_timeout,
        on_write_error: args.on_write_error,
        drain: args.drain,
        max_body: args.max_body as usize,
        tls,
        ..ProxyConfig::new(listener, upstream)
    };
    config.client.insecure_tls = args.trust.insecure;
    config.client.trust = trust;
    if let Some(addr) = args.metrics_addr {
        let listener = super::metrics_listener(addr).await?;
        let metrics = crate::metrics::Metrics::new(crate::metrics::RunDescription {
            capture: args.out.display().to_string(),
            legacy: config.upstream.to_string(),
            new: String::new(),
        });
        tokio::spawn(metrics.clone().serve(listener, std::future::pending()));
        config.on_answered = Some(std::sync::Arc::new(
            move |exchange: &crate::capture::Exchange| metrics.recorded(exchange),
        ));
    }
    let rotation = args.rotation();
    let sink = Sink::create_with(
        &args.out,
        &config.source(),
        args.selection.selection()?,
        rotation,
        args.redact.redactor()?,
    )?;
    tracing::info!(
        "recording {}{} -> {} into {}",
        if config.tls.is_some() { "https://" } else { "" },
        listen,
        config.upstream,
        args.out.display()
    );
    let summary = record_proxy(config, sink, shutdown_signal()).await?;
    println!("{}", recorded_line(&summary, &args.out));
    if args.redact.redact.is_some() {
        println!("redacted: {}", redaction_counts(&summary.redacted));
    }
    Ok(write_failure(&summary))
}

/// What a proxy recording kept, and what it could not.
pub(super) fn recorded_line(
    summary: &crate::record::RecordSummary,
    out: &std::path::Path,
) -> String {
    let files = match summary.files.is_empty() {
        true => out.display().to_string(),
        false => joined(&summary.files),
    };
    format!(
        "recorded {} exchanges into {files} ({} without upstream answer, {} abandoned by the client, {} cut off at stop, \
         {} incomplete requests, {} malformed requests, {} left out by the selection)",
        summary.exchanges,
        summary.upstream_errors,
        summary.abandoned,
        summary.abandoned_at_stop,
        summary.incomplete_requests,
        summary.malformed_requests,
        summary.filtered
    )
}

/// Exit 2, naming the count, when the capture could not be written.
pub(super) fn write_failure(summary: &crate::record::RecordSummary) -> ExitCode {
    match &summary.write_error {
        Some(why) => {
            eprintln!(
                "tandem: the capture could not be written ({why}): {} exchanges were served but not recorded",
                summary.unrecorded
            );
            ExitCode::from(EXIT_BAD_INPUT)
        }
        None => ExitCode::SUCCESS,
    }
}

/// `tandem record --interface --port`.
pub(super) async fn packets(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let rotation = args.rotation();
    let config = LiveConfig {
        interface: args.interface.expect("packet mode has an interface"),
        port: args.port.expect("clap requires --port with --interface"),
        filter: args.filter,
        assembly: AssemblyOptions {
            max_body: args.max_body as usize,
            ..AssemblyOptions::default()
        },
    };
    let source = config.source();
    // Opened before the output is begun, as the proxy binds first: an
    // interface that cannot be captured on leaves an existing capture at
    // --out as it was.
    let live = tokio::task::spawn_blocking(move || LiveCapture::open(config)).await??;
    let sink = Sink::create_with(
        &args.out,
        &source,
        args.selection.selection()?,
        rotation,
        args.redact.redactor()?,
    )?;
    // Said once the ring is mapped and filtered, so that a script waiting
    // for it knows traffic from now on is kept.
    tracing::info!(
        "capturing {} port {} into {}",
        live.config().interface,
        live.config().port,
        args.out.display()
    );
    let recording = record_live(live, sink, shutdown_signal()).await?;
    report_packets(&recording)
}

/// `tandem import`.
pub(super) async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    // The input is checked before the output is begun; the output replaces
    // an existing file only when complete.
    crate::output::refuse_overwriting(&[&args.file], &[&args.out])?;
    let format = args
        .format
        .unwrap_or_else(|| super::formats::ImportFormat::of(&args.file));
    if format != super::formats::ImportFormat::Pcap {
        return super::formats::import(
            format,
            &args.file,
            &args.out,
            super::formats::ImportOptions {
                max_body: args.max_body as usize,
                session_header: args.session_header.clone(),
                selection: args.selection.selection()?,
                redactor: args.redact.redactor()?,
            },
        );
    }
    crate::record::check_pcap(&args.file)?;
    let config = ImportConfig {
        file: args.file,
        assembly: AssemblyOptions {
            max_body: args.max_body as usize,
            server_ports: args.ports,
            ..AssemblyOptions::default()
        },
    };
    let sink = Sink::create_with(
        &args.out,
        &config.source(),
        args.selection.selection()?,
        Rotation::default(),
        args.redact.redactor()?,
    )?;
    let recording = import_file(config, sink, shutdown_signal()).await?;
    report_packets(&recording)
}

/// Prints what a packet recording kept and what it did not, and why.
fn report_packets(recording: &PacketRecording) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    write!(out, "{}", recording.summary)?;
    let written = &recording.written;
    writeln!(
        out,
        "wrote {} exchanges ({} left out by --methods/--path-regex/--sample-percent) to {}",
        written.written,
        written.filtered,
        joined(&written.files)
    )?;
    if !written.redacted.is_empty() {
        writeln!(out, "redacted: {}", redaction_counts(&written.redacted))?;
    }
    if let Some(error) = &recording.stopped_by {
        eprintln!("tandem: {error}; everything before it was written");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    Ok(ExitCode::SUCCESS)
}

fn joined(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}
