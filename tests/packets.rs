//! The packet recorder on traffic captured here, on loopback, by tcpdump and
//! tshark, and live through libpcap.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tandem::capture::{header_value, CaptureReader, Exchange};
use tandem::record::packets::{AssemblyOptions, PacketSummary};
use tandem::record::{
    import_file, record_live, ImportConfig, LiveCapture, LiveConfig, Rotation, Selection, Sink,
};

/// Captures run one at a time: several sniffers on one loopback at once
/// compete for CPU and buffers and lose packets, which is not what these
/// tests are about.
static SNIFFING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    SNIFFING.lock().await
}

/// The requests every capture test sends: small, large (many segments),
/// binary, with queries.
fn requests() -> Vec<(&'static str, String, Bytes)> {
    (0..24u32)
        .map(|i| match i % 4 {
            0 => ("GET", format!("/items/{i}?q=a%20b"), Bytes::new()),
            1 => (
                "POST",
                format!("/items/{i}"),
                Bytes::from(format!("{{\"n\":{i}}}")),
            ),
            2 => (
                "PUT",
                format!("/blobs/{i}"),
                Bytes::from(vec![(i % 251) as u8; 200_000]),
            ),
            _ => (
                "DELETE",
                format!("/items/{i}"),
                Bytes::from(vec![0u8, 255, 7]),
            ),
        })
        .collect()
}

/// Sends the requests to `base` over a few keep-alive connections.
async fn send_all(base: &str) {
    let client = tandem::http::client(Duration::from_secs(5));
    for (method, target, body) in requests() {
        let seen = common::send(
            &client,
            &format!("{base}{target}"),
            method,
            &[("x-test", "1")],
            body,
        )
        .await;
        assert_eq!(seen.status, 200);
    }
}

fn import(path: &Path, ports: Vec<u16>) -> (Vec<Exchange>, PacketSummary) {
    let out = path.with_extension("jsonl");
    let sink = Sink::create(&out, "test", Selection::default(), Rotation::default()).unwrap();
    let config = ImportConfig {
        file: path.to_path_buf(),
        assembly: AssemblyOptions {
            server_ports: ports,
            ..AssemblyOptions::default()
        },
    };
    let recording = common::block_on(import_file(config, sink, std::future::pending())).unwrap();
    assert!(recording.stopped_by.is_none(), "{:?}", recording.stopped_by);
    let exchanges = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (exchanges, recording.summary)
}

/// Every request sent is in the capture, byte for byte, with the echo's answer.
fn assert_echoed(exchanges: &[Exchange], summary: &PacketSummary) {
    assert_eq!(exchanges.len(), requests().len(), "{summary}");
    for (method, target, body) in requests() {
        let e = exchanges
            .iter()
            .find(|e| e.request.target == target)
            .unwrap_or_else(|| panic!("{target} missing\n{summary}"));
        assert_eq!(e.request.method, method);
        same_bytes(
            e.request.body.bytes(),
            &body,
            &format!("{target}: request body\n{summary}"),
        );
        assert_eq!(header_value(&e.request.headers, "x-test"), Some("1"));
        assert!(e.incomplete.is_none(), "{target}: {:?}", e.incomplete);
        let r = e.response.as_ref().unwrap();
        assert_eq!(r.status, 200);
        same_bytes(
            r.body.bytes(),
            &body,
            &format!("{target}: echoed body\n{summary}"),
        );
        assert_eq!(header_value(&r.headers, "x-echo-method"), Some(method));
    }
    for pair in exchanges.windows(2) {
        assert!(pair[1].offset_us >= pair[0].offset_us);
    }
    assert_eq!(summary.complete, requests().len() as u64, "{summary}");
    assert_eq!(summary.lost_bytes, 0, "{summary}");
}

/// Equal bytes, or a short account of where they differ.
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes, expected {}, first difference at {at}",
            got.len(),
            want.len()
        );
    }
}

async fn capture_echo(program: &str, args: &[&str], file: &Path, server: &common::Echo) {
    let port = server.addr.port().to_string();
    let filter = format!("tcp port {port}");
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["-w", file.to_str().unwrap()]);
    if program == "tshark" {
        full.extend(["-B", "64", "-f", &filter]);
    } else {
        full.extend(["--immediate-mode", "-B", "65536", "-U", "-s", "0", &filter]);
    }
    let url = server.url();
    sniff(program, &full, || send_all(&url)).await;
}

/// Sends `traffic` while `program` captures it (into the file its `args`
/// name). A sniffer the kernel dropped packets for (on a loaded host) has
/// not seen everything sent: what tandem makes of its file proves nothing
/// then, so the capture is taken again, at most three times.
async fn sniff<F, Fut>(program: &str, args: &[&str], traffic: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..3 {
        let sniffer = common::Sniffer::start(program, args);
        traffic().await;
        let end = sniffer.stop();
        eprintln!("{program} said:\n{}", end.said);
        if end.dropped() == 0 {
            return;
        }
    }
    panic!("{program} lost packets in three captures out of three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpdump_on_loopback_ethernet_link_type() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let echo = common::Echo::start().await;
    let file = dir.path().join("lo.pcap");
    capture_echo("tcpdump", &["-i", "lo"], &file, &echo).await;
    let (exchanges, summary) = import(&file, vec![]);
    assert_echoed(&exchanges, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcpdump_on_any_linux_cooked_link_type() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let echo = common::Echo::start().await;
    let file = dir.path().join("any.pcap");
    capture_echo("tcpdump", &["-i", "any"], &file, &echo).await;
    let linktype = pcap::Capture::from_file(&file).unwrap().get_datalink().0;
    assert!(
        linktype == 113 || linktype == 276,
        "linux cooked, got {linktype}"
    );
    let (exchanges, summary) = import(&file, vec![]);
    assert_echoed(&exchanges, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_pcapng_file() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let echo = common::Echo::start().await;
    let file = dir.path().join("lo.pcapng");
    capture_echo("tshark", &["-i", "lo", "-q"], &file, &echo).await;
    let magic = std::fs::read(&file).unwrap();
    assert_eq!(&magic[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "a pcapng file");
    let (exchanges, summary) = import(&file, vec![]);
    assert_echoed(&exchanges, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // The echo server, on ::1 this time.
    let echo = common::Echo::start_on(addr).await;
    let file = dir.path().join("v6.pcap");
    capture_echo("tcpdump", &["-i", "lo"], &file, &echo).await;
    let (exchanges, summary) = import(&file, vec![]);
    assert_echoed(&exchanges, &summary);
    assert!(
        exchanges[0].session.starts_with("[::1]:"),
        "{}",
        exchanges[0].session
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_with_trailers_pipelined() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let server = common::chunked_server().await;
    let file = dir.path().join("chunked.pcap");
    let filter = format!("tcp port {}", server.port());
    let args = [
        "-i",
        "lo",
        "--immediate-mode",
        "-B",
        "65536",
        "-U",
        "-s",
        "0",
        "-w",
        file.to_str().unwrap(),
        &filter,
    ];
    sniff("tcpdump", &args, || three_pipelined(server)).await;
    let (exchanges, summary) = import(&file, vec![]);
    let targets: Vec<&str> = exchanges
        .iter()
        .map(|e| e.request.target.as_str())
        .collect();
    assert_eq!(targets, ["/one", "/two", "/three"], "{summary}");
    let one = exchanges[0].response.as_ref().unwrap();
    assert_eq!(one.body.bytes().as_ref(), b"chunk-one|chunk-two|/one");
    assert_eq!(
        header_value(&one.headers, "x-check"),
        Some("done"),
        "the trailer is kept"
    );
    // The server (wrongly) sent a body after HEAD: framing follows the
    // method, so that body is not taken as the next answer's head.
    assert!(exchanges[2].response.as_ref().unwrap().body.is_empty());
}

/// Three pipelined requests to `server` in one write, then all three
/// answers read.
async fn three_pipelined(server: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let pipelined = "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nHEAD /three HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(5).filter(|w| w == b"0\r\nx-").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_packet_costs_only_its_exchange() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let echo = common::Echo::start().await;
    let file = dir.path().join("lo.pcap");
    capture_echo("tcpdump", &["-i", "lo"], &file, &echo).await;
    // Delete one data packet from the middle of a 200 kB PUT body.
    let (whole, whole_summary) = import(&file, vec![]);
    assert_eq!(
        whole.len(),
        requests().len(),
        "the capture before the cut:\n{whole_summary}"
    );
    let big = largest_packet(&file);
    let cut = dir.path().join("cut.pcap");
    let status = std::process::Command::new("editcap")
        .args([
            file.to_str().unwrap(),
            cut.to_str().unwrap(),
            &big.to_string(),
        ])
        .status()
        .expect("editcap (wireshark-common): run .ci/setup");
    assert!(status.success());
    let (exchanges, summary) = import(&cut, vec![]);
    assert!(summary.lost_bytes > 0, "{summary}");
    // The loss costs one exchange at most, and that one is accounted for:
    // marked incomplete when its head survived; when the lost packet held a
    // request head, its answer is counted as an answer without a request;
    // when it held a response head, the request is recorded unanswered.
    let marked = exchanges.iter().filter(|e| e.incomplete.is_some()).count() as u64;
    let wanted = requests().len() as u64;
    assert_eq!(summary.complete, wanted - 1, "{summary}");
    assert_eq!(
        marked + summary.orphan_responses + summary.unanswered,
        1,
        "{summary}"
    );
    assert_eq!(
        exchanges.len() as u64 + summary.orphan_responses,
        wanted,
        "{summary}"
    );
    for e in exchanges.iter().filter(|e| e.incomplete.is_some()) {
        assert!(
            e.incomplete.as_deref().unwrap().contains("lost"),
            "{:?}",
            e.incomplete
        );
    }
}

/// The number (from 1) of the largest packet of a capture.
fn largest_packet(file: &Path) -> usize {
    let mut capture = pcap::Capture::from_file(file).unwrap();
    let (mut best, mut size, mut n) = (0, 0, 0);
    while let Ok(packet) = capture.next_packet() {
        n += 1;
        if packet.header.len > size {
            (best, size) = (n, packet.header.len);
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_capture_on_loopback() {
    let _one = one_at_a_time().await;
    if unsafe_is_not_root() {
        eprintln!("skipped: live capture needs root or CAP_NET_RAW");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let echo = common::Echo::start().await;
    let out = dir.path().join("live.jsonl.gz");
    let config = LiveConfig {
        interface: "lo".into(),
        port: echo.addr.port(),
        filter: None,
        assembly: AssemblyOptions::default(),
    };
    let sink = Sink::create(&out, "live", Selection::default(), Rotation::default()).unwrap();
    // Traffic starts once the capture is open, not after a guessed delay:
    // CI once caught nothing after 500 ms guessed, most likely the capture
    // opening later than that on a loaded host.
    let live = tokio::task::spawn_blocking(move || LiveCapture::open(config))
        .await
        .unwrap()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let recorder = tokio::spawn(record_live(live, sink, async {
        let _ = stopped.await;
    }));
    send_all(&echo.url()).await;
    // Loopback hands each packet to the capture as it is sent; the reader
    // drains what the kernel holds before it stops.
    let _ = stop.send(());
    let recording = recorder.await.unwrap().unwrap();
    let written = &recording.written;
    let summary = &recording.summary;
    assert_eq!(recording.summary.kernel_dropped, Some(0));
    assert_eq!(written.written, requests().len() as u64, "{summary}");
    let exchanges: Vec<Exchange> = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_echoed(&exchanges, &recording.summary);
}

fn unsafe_is_not_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        .unwrap_or(true)
}

#[test]
fn selection_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap.jsonl");
    let selection = Selection {
        methods: vec!["GET".into()],
        path: Some(regex::Regex::new("^/keep").unwrap()),
        sample_percent: None,
    };
    let rotation = Rotation {
        max_bytes: Some(2_000),
        max_age: None,
    };
    let mut sink = Sink::create(&out, "test", selection, rotation).unwrap();
    let produced = (1..=60u64)
        .map(|i| {
            let method = if i % 3 == 0 { "POST" } else { "GET" };
            let target = if i % 2 == 0 {
                format!("/keep/{i}")
            } else {
                format!("/drop/{i}")
            };
            (i, Some(exchange(i, method, &target)))
        })
        .rev() // finished out of order
        .collect();
    sink.take(produced).unwrap();
    let summary = sink.finish().unwrap();
    // Even i not divisible by 3: kept.
    let kept = (1..=60).filter(|i| i % 2 == 0 && i % 3 != 0).count() as u64;
    assert_eq!((summary.written, summary.filtered), (kept, 60 - kept));
    assert!(summary.files.len() > 1, "rotated: {:?}", summary.files);
    let mut ids = Vec::new();
    for file in &summary.files {
        assert!(
            file.to_string_lossy().contains("cap.0"),
            "{}",
            file.display()
        );
        for e in CaptureReader::open(file).unwrap() {
            let e = e.unwrap();
            assert!(e.request.target.starts_with("/keep"));
            ids.push(e.id);
        }
    }
    assert_eq!(
        ids,
        (1..=kept).collect::<Vec<_>>(),
        "renumbered in arrival order across files"
    );
}

fn exchange(i: u64, method: &str, target: &str) -> Exchange {
    common::exchange(
        i,
        i * 10,
        &format!("127.0.0.11:{}", 40000 + i),
        method,
        target,
        &[],
    )
}

#[tokio::test]
async fn sampling_keeps_whole_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.jsonl");
    let selection = Selection {
        sample_percent: Some(30.0),
        ..Selection::default()
    };
    let mut sink = Sink::create(&out, "test", selection, Rotation::default()).unwrap();
    // 200 sessions of 5 requests each.
    let produced = (0..1000u64)
        .map(|i| {
            let mut e = exchange(i + 1, "GET", "/x");
            e.session = format!("127.1.{}.{}:5000", i % 200 / 100, i % 200);
            (i + 1, Some(e))
        })
        .collect();
    sink.take(produced).unwrap();
    sink.finish().unwrap();
    let mut per_session = std::collections::HashMap::<String, usize>::new();
    for e in CaptureReader::open(&out).unwrap() {
        *per_session.entry(e.unwrap().session).or_default() += 1;
    }
    assert!(per_session.values().all(|&n| n == 5), "sessions kept whole");
    assert!(
        (35..=85).contains(&per_session.len()),
        "about 30% of 200: {}",
        per_session.len()
    );
    let _: SocketAddr = "127.0.0.1:1".parse().unwrap();
}
