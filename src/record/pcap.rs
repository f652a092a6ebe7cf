//! Packet sources: a pcap or pcapng file (`tandem import`) and a live
//! interface (`tandem record --interface`), both through libpcap. Each is
//! an `async fn(source, sink, shutdown)` like the proxy (a live interface
//! is opened first, so that a caller knows when traffic is being kept);
//! libpcap's blocking reads run on a blocking thread, told to stop by a
//! flag the shutdown future sets.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use super::packets::{Assembler, AssemblyOptions, PacketSummary};
use super::sink::{Sink, SinkSummary};

/// What an import or live capture produced, and the error that ended it
/// early, if any (what was read before it is written all the same).
#[derive(Debug)]
pub struct PacketRecording {
    /// Counts by reason.
    pub summary: PacketSummary,
    /// What the sink wrote.
    pub written: SinkSummary,
    /// A read error (or the shutdown signal) that stopped the source,
    /// naming the file and packet.
    pub stopped_by: Option<String>,
}

/// A pcap or pcapng file to import.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// The file.
    pub file: PathBuf,
    /// How packets become exchanges.
    pub assembly: AssemblyOptions,
}

impl ImportConfig {
    /// The capture header's `source`.
    pub fn source(&self) -> String {
        format!("pcap file={}", self.file.display())
    }
}

/// Imports a pcap or pcapng file into `sink`, until its end or `shutdown`.
pub async fn import_file(
    config: ImportConfig,
    sink: Sink,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<PacketRecording> {
    blocking_until(shutdown, sink, move |sink, stop| {
        read_file(&config.file, config.assembly, sink, stop)
    })
    .await
}

/// A live interface opened for capture, its filter set: packets from the
/// moment [`LiveCapture::open`] returns are kept, so traffic can start then
/// (opening allocates the kernel's ring and can take a while on a loaded
/// host; a caller that guessed a delay lost the traffic sent before it).
pub struct LiveCapture {
    config: LiveConfig,
    handle: pcap::Capture<pcap::Active>,
}

impl LiveCapture {
    /// Opens `config.interface` and sets the filter on `config.port`. Blocks
    /// while libpcap lists interfaces and maps its ring. Needs root or
    /// CAP_NET_RAW.
    pub fn open(config: LiveConfig) -> anyhow::Result<Self> {
        let handle = open_live(&config)?;
        Ok(Self { config, handle })
    }

    /// What it listens to.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }
}

impl std::fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCapture")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Captures from an opened interface into `sink` until `shutdown`; the
/// packets the kernel holds when it comes are read first.
pub async fn record_live(
    live: LiveCapture,
    sink: Sink,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<PacketRecording> {
    blocking_until(shutdown, sink, move |sink, stop| {
        read_live(live, sink, stop)
    })
    .await
}

type Read = (PacketSummary, Option<String>);

/// Runs `read` on a blocking thread with a stop flag that `shutdown` sets,
/// then closes the sink.
async fn blocking_until(
    shutdown: impl Future<Output = ()>,
    mut sink: Sink,
    read: impl FnOnce(&mut Sink, &AtomicBool) -> anyhow::Result<Read> + Send + 'static,
) -> anyhow::Result<PacketRecording> {
    let stop = Arc::new(AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let read = read(&mut sink, &stop);
            (read, sink)
        })
    };
    tokio::pin!(reading);
    let joined = tokio::select! {
        joined = &mut reading => joined,
        () = shutdown => {
            stop.store(true, Ordering::Relaxed);
            reading.await
        }
    };
    let (read, sink) = joined.context("the packet reader panicked")?;
    let (summary, stopped_by) = read?;
    Ok(PacketRecording {
        summary,
        written: sink.finish()?,
        stopped_by,
    })
}

/// Opens `path` as a pcap or pcapng file and closes it again: checked
/// before an output is begun.
pub fn check_pcap(path: &Path) -> anyhow::Result<()> {
    open_file(path).map(drop)
}

fn open_file(path: &Path) -> anyhow::Result<pcap::Capture<pcap::Offline>> {
    pcap::Capture::from_file_with_precision(path, pcap::Precision::Micro).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a readable pcap or pcapng file: {e}",
            path.display()
        )
    })
}

fn read_file(
    path: &Path,
    options: AssemblyOptions,
    sink: &mut Sink,
    stop: &AtomicBool,
) -> anyhow::Result<Read> {
    let mut capture = open_file(path)?;
    let linktype = capture.get_datalink().0;
    let mut assembler = Assembler::new(options);
    let mut stopped_by = None;
    let mut number = 0u64;
    loop {
        let packet = match capture.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => {
                stopped_by = Some(format!("{}: packet {}: {e}", path.display(), number + 1));
                break;
            }
        };
        number += 1;
        let ts = timestamp_us(packet.header);
        assembler.frame(ts, linktype, packet.data);
        if number % 1024 == 0 {
            sink.take(assembler.take_produced())?;
            if stop.load(Ordering::Relaxed) {
                stopped_by = Some(format!(
                    "{}: stopped by a signal after packet {number}",
                    path.display()
                ));
                break;
            }
        }
    }
    let summary = assembler.finish();
    sink.take(assembler.take_produced())?;
    Ok((summary, stopped_by))
}

/// What a live capture listens to.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Interface name, e.g. `eth0` or `lo`.
    pub interface: String,
    /// The service's TCP port.
    pub port: u16,
    /// An extra BPF filter, and-ed with the port.
    pub filter: Option<String>,
    /// How packets become exchanges.
    pub assembly: AssemblyOptions,
}

impl LiveConfig {
    /// The capture header's `source`.
    pub fn source(&self) -> String {
        format!("pcap live interface={} port={}", self.interface, self.port)
    }
}

fn read_live(live: LiveCapture, sink: &mut Sink, stop: &AtomicBool) -> anyhow::Result<Read> {
    let LiveCapture {
        config,
        handle: mut capture,
    } = live;
    let linktype = capture.get_datalink().0;
    let mut assembly = config.assembly.clone();
    assembly.server_ports.push(config.port);
    let mut assembler = Assembler::new(assembly);
    let mut stopped_by = None;
    let mut last_flush = std::time::Instant::now();
    loop {
        match capture.next_packet() {
            Ok(packet) => {
                let ts = timestamp_us(packet.header);
                assembler.frame(ts, linktype, packet.data);
            }
            // Nothing to read: stop once drained, else wait a little.
            Err(pcap::Error::TimeoutExpired) if stop.load(Ordering::Relaxed) => break,
            Err(pcap::Error::TimeoutExpired) => {
                assembler.tick(now_us());
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => {
                stopped_by = Some(format!("{}: capture failed: {e}", config.interface));
                break;
            }
        }
        sink.take(assembler.take_produced())?;
        if last_flush.elapsed().as_millis() >= 100 {
            sink.flush()?;
            last_flush = std::time::Instant::now();
        }
    }
    if let Ok(stats) = capture.stats() {
        assembler.set_kernel_dropped(stats.dropped as u64 + stats.if_dropped as u64);
    }
    let summary = assembler.finish();
    sink.take(assembler.take_produced())?;
    Ok((summary, stopped_by))
}

fn open_live(config: &LiveConfig) -> anyhow::Result<pcap::Capture<pcap::Active>> {
    let device = pcap::Device::list()
        .context("cannot list capture interfaces")?
        .into_iter()
        .find(|d| d.name == config.interface);
    let Some(device) = device else {
        bail!("interface {:?} not found (see `ip link`)", config.interface);
    };
    let mut capture = pcap::Capture::from_device(device)?
        .snaplen(262_144)
        .promisc(false)
        // Immediate mode hands over each packet at once (otherwise the last
        // ones can sit in a ring block that is never retired). It ignores the
        // read timeout, so the handle is non-blocking and the loop polls.
        .immediate_mode(true)
        .buffer_size(64 << 20)
        .open()
        .and_then(|c| c.setnonblock())
        .with_context(|| {
            format!(
                "cannot capture on {}: run as root or grant CAP_NET_RAW (setcap cap_net_raw+ep $(which tandem))",
                config.interface
            )
        })?;
    let mut filter = format!("tcp port {}", config.port);
    if let Some(extra) = &config.filter {
        filter = format!("({filter}) and ({extra})");
    }
    capture
        .filter(&filter, true)
        .with_context(|| format!("invalid capture filter {filter:?}"))?;
    Ok(capture)
}

fn timestamp_us(header: &pcap::PacketHeader) -> u64 {
    (header.ts.tv_sec as u64).saturating_mul(1_000_000) + header.ts.tv_usec as u64
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}
