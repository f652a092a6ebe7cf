//! `tandem import` beside `tshark -r FILE -Y http.request` on the same pcap,
//! in the same run: throughput (MB/s, exchanges/s), exchanges found, and
//! each tool's peak memory.
//!
//! The pcap is made here on first use: tcpdump on loopback while wrk loads
//! nginx serving a JSON file (all on 127.0.0.1), until it reaches the asked
//! size. Needs `.ci/setup --bench` (nginx, wrk, tcpdump, tshark).
//!
//! Run: `cargo bench --bench import_vs_tshark [-- SIZE_MB]` (default 300).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{free_port, measure, Guard};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let size_mb: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("import-bench");
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join(format!("nginx-{size_mb}mb.pcap"));
    if !pcap.exists() {
        make_pcap(&dir, &pcap, size_mb)?;
    }
    let bytes = std::fs::metadata(&pcap)?.len();
    println!("input: {} ({:.0} MB)", pcap.display(), bytes as f64 / 1e6);

    // Both tools read from a warm page cache.
    std::io::copy(&mut std::fs::File::open(&pcap)?, &mut std::io::sink())?;
    let out = dir.join("bench.jsonl");
    // tandem runs three times (median shown; each run is short, so noisy),
    // each into a fresh file; tshark once (a long run averages itself).
    let mut runs = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(&out);
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(["-q", "import"])
            .arg(&pcap)
            .arg("--out")
            .arg(&out);
        runs.push(measure(&mut command)?);
    }
    runs.sort_by_key(|r| r.elapsed);
    let tandem = runs.swap_remove(1);
    let tandem_exchanges = tandem
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("wrote ")
                .and_then(|r| r.split(' ').next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let tshark = measure(Command::new("tshark").arg("-r").arg(&pcap).args([
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]))?;
    let tshark_requests = tshark
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;

    println!();
    println!(
        "{:<8} {:>10} {:>10} {:>14} {:>12} {:>12}",
        "", "seconds", "MB/s", "exchanges/s", "exchanges", "peak MB"
    );
    for (name, run, found) in [
        ("tandem", &tandem, tandem_exchanges),
        ("tshark", &tshark, tshark_requests),
    ] {
        let secs = run.elapsed.as_secs_f64();
        println!(
            "{name:<8} {secs:>10.2} {:>10.1} {:>14.0} {found:>12} {:>12.1}",
            bytes as f64 / 1e6 / secs,
            found as f64 / secs,
            run.peak_kb as f64 / 1024.0
        );
    }
    println!();
    println!(
        "tandem / tshark: {:.1}x throughput, {:.2}x peak memory, {} vs {} exchanges (tandem: median of 3)",
        tshark.elapsed.as_secs_f64() / tandem.elapsed.as_secs_f64(),
        tandem.peak_kb as f64 / tshark.peak_kb.max(1) as f64,
        tandem_exchanges,
        tshark_requests
    );
    Ok(())
}

/// tcpdump on lo while wrk loads nginx on 127.0.0.1, until the file is
/// `size_mb` large (wrk runs at most 120 s).
fn make_pcap(dir: &Path, pcap: &Path, size_mb: u64) -> anyhow::Result<()> {
    let port = free_port()?;
    let _nginx = common::nginx(dir, &[port])?;
    let partial = pcap.with_extension("partial");
    let tcpdump = Guard(
        Command::new("tcpdump")
            .args(["-i", "lo", "-B", "262144", "-s", "0", "-w"])
            .arg(&partial)
            .arg(format!("tcp port {port}"))
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://127.0.0.1:{port}/orders.json");
    let wrk = Guard(
        Command::new("wrk")
            .args(["-t2", "-c32", "-d120s", &url])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < size_mb * 1_000_000
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(wrk);
    std::thread::sleep(Duration::from_millis(300));
    drop(tcpdump);
    std::fs::rename(&partial, pcap)?;
    Ok(())
}
