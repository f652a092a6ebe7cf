//! Replay throughput and pacing, against nginx on loopback, in one run:
//!
//! 1. wrk's requests/s against one target (the reference);
//! 2. tandem's requests/s against two targets, diffing on (the answers
//!    differ in key order and spacing, so both are parsed), asked for as
//!    many as wrk made in a run just before: what it achieves at
//!    saturation, as wrk's is measured, held against that wrk run; and
//!    where the CPU goes per request, wrk's, tandem's and nginx's, in user
//!    space and in the kernel, with the user time 0.8x wrk would leave;
//! 3. rate accuracy at fixed rates: achieved vs asked, p99 send lag, after
//!    the machine's own wake-up lag (a sleeping thread's, idle), and how
//!    much of its core each engine takes (the headroom left for hiccups);
//!    at 10,000 exchanges/s beside a bare pacer's (a thread that walks the
//!    same schedule and sends nothing: the floor this machine sets);
//! 4. peak memory over a run, and over a 10x longer one.
//!
//! 5. stateful: the demo's order flows (logins, created orders read, paid
//!    and cancelled) replayed at its stacks at saturation, with and without
//!    correlation, at a rate both sustain: what following each stack's ids
//!    and tokens costs, in exchanges per second of tandem's CPU time. The
//!    stacks run on one core and tandem on the other.
//!
//! Every run gives the share of the machine's CPU time its host stole (a
//! virtual machine's vCPUs paused while they had work; near none when the
//! machine idles, a quarter and more at times under load here); a pair of
//! runs at saturation the host took 10% or more from is taken again.
//!
//! Steps 2 and 3 run three times each (the machine is shared and noisy), and
//! their medians are held against the targets of issues 4 and 13; each run
//! twice, with an engine per core (tandem's default with stacks on other
//! machines) and with one engine, as wrk runs one thread (nginx shares the
//! two cores: a second engine takes CPU time from it; with stacks on
//! loopback tandem's default is one engine per two cores).
//!
//! 6. instructions: user-space instructions per request, tandem's and
//!    wrk's, counted under callgrind rather than timed, so that a change to
//!    the send path shows as a figure the host's noise does not move.
//!
//! Needs `.ci/setup --bench` (nginx, wrk, valgrind). Run: `cargo bench
//! --bench replay` (`-- saturation` for steps 1 and 2 alone, `-- stateful`
//! for step 5, `-- learn` for the CPU time of learning step 5's links
//! alone, `-- instructions` for step 6).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tandem::capture::{Body, CaptureHeader, CaptureWriter, Exchange, Header, Request};
use tandem::replay::MachineTime;
use tandem::report::Report;
use tandem::results::ResultsReader;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-bench");
    std::fs::create_dir_all(&dir)?;
    // `cargo bench --bench replay -- stateful`: that step alone.
    if std::env::args().any(|a| a == "stateful") {
        return stateful(&dir);
    }
    // `-- learn`: the time learning the stateful capture's links takes.
    if std::env::args().any(|a| a == "learn") {
        return learn(&dir);
    }
    // `-- saturation`: steps 1 and 2 alone; `-- instructions`: step 6.
    let only_saturation = std::env::args().any(|a| a == "saturation");
    let only_instructions = std::env::args().any(|a| a == "instructions");
    let (a, b) = (common::free_port()?, common::free_port()?);
    let nginx = common::nginx(&dir, &[a, b])?;
    let capture = capture(&dir.join("orders.jsonl"), 2_000)?;
    // The two files differ in key order and spacing (parsed and found
    // equal) and in their validators, which are noise here.
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[defaults]\nignore_headers = [\"etag\", \"last-modified\"]\n",
    )?;
    let (legacy, new) = (
        format!("http://127.0.0.1:{a}"),
        format!("http://127.0.0.1:{b}"),
    );
    let bench = Bench {
        capture,
        rules,
        legacy: legacy.clone(),
        new,
        nginx: nginx.0.id(),
    };
    if only_instructions {
        return instructions(&bench, &dir);
    }

    let mut reference = bench.wrk(&format!("{legacy}/orders.json"))?;
    for _ in 1..TAKES {
        if reference.steal < HOST_PAUSED {
            break;
        }
        reference = bench.wrk(&format!("{legacy}/orders.json"))?;
    }
    let wrk = reference.rate;
    println!(
        "wrk, one target, 1 thread, 32 connections: {wrk:.0} requests/s; CPU per request: \
         wrk {}, nginx {:.1} µs; the host stole {:.0}% of the machine's CPU time",
        reference.cpu,
        reference.nginx_us,
        reference.steal * 100.0
    );

    // tandem's throughput as wrk's is measured, at saturation: asked for
    // as many requests/s as wrk made in a run just before (two per
    // exchange), what it achieves. Asked for wrk's first rate, a run after a
    // slow first wrk run was held to that rate (none dropped) and its ratio
    // to a faster wrk run beside it said nothing of tandem. Asked for 1.5x,
    // what it dropped as late cost more than the headroom gained (one
    // engine 0.68x-0.76x at 26.1 µs of CPU per request sent, an engine per
    // core 0.44x-0.49x; in the bench run before, asked for the first wrk
    // run's rate, 0.70x-0.73x at 22.6 µs and 0.62x-0.72x).
    // Twice: with tandem's default of an engine per core, and with one
    // engine, as wrk runs one thread. nginx shares the two cores: a second
    // engine takes its CPU time from nginx as much as it adds sends.
    println!(
        "\ntandem, two targets, diffing on, asked the requests/s of a wrk run just before \
         each (two requests per exchange; what is late by --max-lag 1s is dropped), 5 s, \
         three runs each way, alternating:"
    );
    let mut ratios = [Vec::new(), Vec::new()];
    let mut costs = [Vec::new(), Vec::new()];
    for run in 1..=3 {
        for (way, engines) in Engines::BOTH.iter().enumerate() {
            for take in 1..=TAKES {
                // Each run is held against a wrk run just before it: the
                // machine drifts over the minute the runs take, and a ratio
                // of two measures taken together cancels most of the drift.
                let paired = bench.wrk(&format!("{legacy}/orders.json"))?;
                let (paired, wrk_steal) = (paired.rate, paired.steal);
                let out = dir.join(format!("full-{run}-{way}"));
                let sample = bench.sample(&out, paired / 2.0, "5s", *engines)?;
                let paused = wrk_steal >= HOST_PAUSED || sample.steal >= HOST_PAUSED;
                let again = paused && take < TAKES;
                println!(
                    "  {:<16} achieved {:.0} requests/s ({:.2}x wrk's {paired:.0} just before) \
                     in exchanges sent to both stacks, {:.0} requests/s sent in all ({:.2}x), \
                     {} matched, {} mismatched, {} dropped (later than --max-lag 1s), {} \
                     errors; the host stole {:.0}% of the machine's CPU time (wrk's run: \
                     {:.0}%){}",
                    engines.name(),
                    sample.achieved * 2.0,
                    sample.achieved * 2.0 / paired,
                    sample.requests,
                    sample.requests / paired,
                    sample.report.summary.matched,
                    sample.report.summary.mismatched,
                    sample.report.summary.dropped,
                    sample.report.summary.errors,
                    sample.steal * 100.0,
                    wrk_steal * 100.0,
                    match (again, paused) {
                        (true, _) => ": the host paused a run, taken again",
                        (false, true) => ": the host paused a run, counted (third take)",
                        (false, false) => "",
                    }
                );
                if !again {
                    ratios[way].push(sample.achieved * 2.0 / paired);
                    costs[way].push((sample.cpu, sample.nginx_us));
                    break;
                }
            }
        }
    }
    let ratios = ratios.map(median);
    budget(&reference, &costs);

    if only_saturation {
        return Ok(());
    }
    let machine = wake_lag(std::time::Duration::from_secs(5));
    println!(
        "\nthe machine itself, idle: a thread sleeping 200 µs at a time ({} wake-ups in 5 s) \
         woke up late by p99 {}, at most {}, {} times by 1 ms or more",
        machine.n,
        tandem::latency::human(machine.p99_us),
        tandem::latency::human(machine.max_us),
        machine.over_1ms
    );
    println!("\nrate accuracy (5 s each, three runs each way; two requests per exchange)");
    println!(
        "{:>12} {:>16} {:>12} {:>14} {:>10} {:>30} {:>12} {:>13} {:>13} {:>18}",
        "exchanges/s",
        "engines",
        "requests/s",
        "achieved req/s",
        "error",
        "p99 lag (3 runs)",
        "p99 median",
        "engine busy",
        "report says",
        "host stole"
    );
    let mut within = [Vec::new(), Vec::new()];
    let mut lag_at_10k = [Vec::new(), Vec::new()];
    let mut bare_at_10k = Vec::new();
    for rate in [1_000.0, 5_000.0, 10_000.0, 20_000.0] {
        let mut runs = [Vec::new(), Vec::new()];
        for run in 1..=3 {
            if rate == 10_000.0 {
                bare_at_10k.push(BarePacer::run(rate, std::time::Duration::from_secs(5)));
            }
            for (way, engines) in Engines::BOTH.iter().enumerate() {
                let out = dir.join(format!("rate-{rate}-{run}-{way}"));
                runs[way].push(bench.sample(&out, rate, "5s", *engines)?);
            }
        }
        for (way, engines) in Engines::BOTH.iter().enumerate() {
            let runs = &runs[way];
            let achieved = median(runs.iter().map(|r| r.achieved).collect());
            let lags: Vec<u64> = runs.iter().map(|r| r.report.send_lag.legacy.p99).collect();
            let error = (achieved - rate) / rate * 100.0;
            let shown: Vec<String> = lags.iter().map(|l| tandem::latency::human(*l)).collect();
            let p99 = median(lags.iter().map(|l| *l as f64).collect()) as u64;
            // How much of its core each engine needs at this rate: the
            // headroom left for the machine's own hiccups.
            let busy = median(runs.iter().map(|r| r.engines_busy).collect());
            // What the report tells its reader, from the engines' own
            // account (with their waits for a core): the bench's CPU
            // figure beside it checks it.
            let told = median(runs.iter().map(|r| r.busiest_told()).collect());
            let stolen: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}%", r.steal * 100.0))
                .collect();
            println!(
                "{rate:>12.0} {:>16} {:>12.0} {:>14.0} {error:>9.2}% {:>30} {:>12} {:>12.0}% \
                 {:>12.0}% {:>18}",
                engines.name(),
                rate * 2.0,
                achieved * 2.0,
                shown.join(" / "),
                tandem::latency::human(p99),
                busy * 100.0,
                told * 100.0,
                stolen.join(" / "),
            );
            if rate * 2.0 <= 20_000.0 {
                within[way].push((error.abs() <= 1.0, p99 < 1_000));
            }
            if rate == 10_000.0 {
                lag_at_10k[way] = lags;
            }
        }
        if rate == 10_000.0 {
            let bare = &bare_at_10k;
            let shown: Vec<String> = bare
                .iter()
                .map(|b| tandem::latency::human(b.p99_us))
                .collect();
            let stolen: Vec<String> = bare
                .iter()
                .map(|b| format!("{:.0}%", b.steal * 100.0))
                .collect();
            let p99 = median(bare.iter().map(|b| b.p99_us as f64).collect()) as u64;
            println!(
                "{rate:>12.0} {:>16} {:>12} {:>14} {:>10} {:>30} {:>12} {:>13} {:>13} {:>18}",
                "bare pacer",
                "-",
                "-",
                "-",
                shown.join(" / "),
                tandem::latency::human(p99),
                "-",
                "-",
                stolen.join(" / "),
            );
        }
    }
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    for (way, engines) in Engines::BOTH.iter().enumerate() {
        println!(
            "\n{}: targets (medians): total requests/s at least 0.5x wrk: {}; rate within 1% \
             up to 20,000 requests/s: {}; p99 send lag under 1 ms up to 20,000 requests/s: {}",
            engines.name(),
            yes(ratios[way] >= 0.5),
            yes(within[way].iter().all(|w| w.0)),
            yes(within[way].iter().all(|w| w.1)),
        );
        // Issue 13's, stricter: 0.8x wrk, and the lag bound in every run.
        println!(
            "{}: targets of issue 13: total requests/s at least 0.8x wrk (median {:.2}x): {}; \
             p99 send lag under 1 ms at 10,000 exchanges/s in every run: {} (the bare \
             pacer beside those runs, sending nothing: {})",
            engines.name(),
            ratios[way],
            yes(ratios[way] >= 0.8),
            yes(lag_at_10k[way].iter().all(|&l| l < 1_000)),
            yes(bare_at_10k.iter().all(|b| b.p99_us < 1_000)),
        );
    }

    println!("\nmemory at 2,000 exchanges/s");
    let mut peaks = Vec::new();
    for duration in ["3s", "30s"] {
        let out = dir.join(format!("mem-{duration}"));
        let run = bench.replay(&out, 2_000.0, duration, Engines::PerCore)?;
        println!("{duration:>5}: peak {:.1} MB", run.peak_kb as f64 / 1024.0);
        peaks.push(run.peak_kb as f64);
    }
    // The peak includes building the report at the end; what a longer run
    // adds is the ratio.
    println!("  10x longer run: {:.2}x the peak", peaks[1] / peaks[0]);
    stateful(&dir)?;
    instructions(&bench, &dir)
}

/// A pair of runs at saturation (wrk's, then tandem's) of which the host
/// took this share of the machine's CPU time or more from either is taken
/// again, at most twice, as is the first wrk run: a ratio to a run the
/// host paused tells how busy the host was, not how fast tandem is (in the
/// seventeenth bench run, an engine per core made "1.00x" a wrk run the host
/// took 34% from). The capacity search re-runs a failed step on the same
/// threshold.
const HOST_PAUSED: f64 = 0.10;
const TAKES: usize = 3;

/// Step 6: user-space instructions per request under callgrind, wrk's
/// against one target and tandem's against two with diffing on (one
/// engine, at 300 exchanges/s, which it keeps under valgrind). Each is the
/// difference between a shorter and a longer run over the requests between
/// them, which leaves out start-up and, for tandem, the first pass over
/// the capture (parsed once, then kept). Counted, not timed: runs of one
/// build gave tandem's engine within 1% of each other and wrk within 2%
/// (the runtime's wake-ups still vary a little), where the runs at
/// saturation above spread by tens of percent. Kernel time (the TCP work on
/// loopback) is not in it.
fn instructions(bench: &Bench, dir: &Path) -> anyhow::Result<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("\ninstructions per request: valgrind not found (.ci/setup --bench), skipped");
        return Ok(());
    }
    println!(
        "\ninstructions per request in user space (callgrind; a longer run less a shorter \
         one, over the requests between them):"
    );
    let url = format!("{}/orders.json", bench.legacy);
    let mut wrk = Vec::new();
    for seconds in [2, 5] {
        let out = dir.join(format!("callgrind-wrk-{seconds}"));
        let duration = format!("-d{seconds}s");
        let counted = callgrind(
            &out,
            Command::new("wrk").args(["-t1", "-c32", &duration, &url]),
        )?;
        let requests = wrk_requests(&counted.stdout)?;
        wrk.push((
            counted.threads.iter().map(|t| t.instructions).sum(),
            requests,
        ));
    }
    let wrk = per_request(wrk[0], wrk[1]);
    println!("  wrk, one target                 {wrk:>8.0}");
    // The capture holds 2,000 exchanges: both runs go past the first pass.
    let (mut engine, mut process) = (Vec::new(), Vec::new());
    for seconds in [8, 14] {
        let out = dir.join(format!("callgrind-tandem-{seconds}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(["-q", "replay"])
            .arg(&bench.capture)
            .args(["--legacy", &bench.legacy, "--new", &bench.new])
            .args(["--rate", "300", "--duration", &format!("{seconds}s")])
            .arg("--rules")
            .arg(&bench.rules)
            .args([
                "--max-lag",
                "1s",
                "--timeout",
                "5s",
                "--threads",
                "1",
                "--out",
            ])
            .arg(out.join("run"));
        let counted = callgrind(&out, &command)?;
        let report = Report::load(&out.join("run").join("report.json"))?;
        if report.summary.dropped > 0 {
            println!(
                "  ({} exchanges of the {seconds} s run were dropped as late under valgrind: \
                 the figures below count less work than was asked)",
                report.summary.dropped
            );
        }
        let requests = 2 * report.summary.total;
        let of_engine = counted
            .threads
            .iter()
            .filter(|t| t.runs("tandem::replay::dispatch::Dispatcher::run"))
            .map(|t| t.instructions)
            .sum();
        engine.push((of_engine, requests));
        process.push((
            counted.threads.iter().map(|t| t.instructions).sum(),
            requests,
        ));
    }
    let engine = per_request(engine[0], engine[1]);
    let rest = per_request(process[0], process[1]) - engine;
    println!(
        "  tandem, engine thread           {engine:>8.0}  ({:.1}x wrk's): pacing, sends, \
         pairing",
        engine / wrk
    );
    // The report's series seal each stack's second once a second (its
    // histograms compressed) whatever the rate: at 300 exchanges/s that
    // weighs far more per request than under load.
    println!(
        "  tandem, its other threads       {rest:>8.0}  judging, results.jsonl, the report's \
         series (sealed once a second, which weighs more at 300/s than under load)"
    );
    Ok(())
}

/// Instructions per request between two runs, each (instructions, requests).
fn per_request(short: (u64, u64), long: (u64, u64)) -> f64 {
    (long.0 as f64 - short.0 as f64) / (long.1 as f64 - short.1 as f64).max(1.0)
}

/// What callgrind counted of one run: each thread's instructions, and the
/// program's standard output.
struct Counted {
    threads: Vec<ThreadCount>,
    stdout: String,
}

struct ThreadCount {
    instructions: u64,
    /// The profile itself, to tell the threads apart by what they ran.
    profile: String,
}

impl ThreadCount {
    fn runs(&self, function: &str) -> bool {
        self.profile.contains(function)
    }
}

/// Runs `command` under callgrind, its profiles (one per thread) in `out`.
fn callgrind(out: &Path, command: &Command) -> anyhow::Result<Counted> {
    // Profiles of an earlier bench run would be counted with this one's.
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let mut valgrind = Command::new("valgrind");
    valgrind
        .args(["--tool=callgrind", "--separate-threads=yes"])
        .arg(format!(
            "--callgrind-out-file={}/callgrind.%p",
            out.display()
        ))
        .arg(command.get_program())
        .args(command.get_args());
    let output = valgrind.output()?;
    anyhow::ensure!(
        output.status.success(),
        "valgrind {:?}: {}",
        command.get_program(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("callgrind."))
        {
            continue;
        }
        let profile = std::fs::read_to_string(&path)?;
        // callgrind leaves an empty file for the process beside one per
        // thread.
        if profile.is_empty() {
            continue;
        }
        let instructions = profile
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{}: no summary line", path.display()))?;
        threads.push(ThreadCount {
            instructions,
            profile,
        });
    }
    Ok(Counted {
        threads,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    })
}

/// Step 5: the demo's stateful flows at its stacks, with and without
/// correlation, at a rate both ways sustain: what following each stack's
/// ids and tokens costs tandem in CPU time per exchange. The rate tandem
/// can carry is set by its replay threads (the engines, which send, and
/// the collector, which judges): their CPU time per exchange is what the
/// target is held against. Learning the links is a pause before the first
/// send, shown beside it with tandem's whole CPU time. Not measured as
/// exchanges/s past saturation: there most of tandem's work is dropping
/// what is late (185,000 of the 200,000 jobs asked at 40,000/s), and
/// single runs of one setting spread from 4,300 to 10,300 exchanges/s,
/// far more than what is measured.
///
/// Twice: with ids the stacks derive from the request (`Ids::Replayable`),
/// so that the recorded token and ids are good on both stacks and
/// `--no-correlate` asks the stacks for the same work as correlation does,
/// which is what the target is held against; then with the ids each stack
/// issues, as the demo runs, where `--no-correlate` gets cheap 401s.
fn stateful(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    use tandem::demo::Ids;
    // The stacks (this process's runtime, started below) on core 0, tandem
    // on core 1, so that neither's CPU time is spent waiting on the other.
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
        && common::pin_to(0).is_ok();
    let runtime = tokio::runtime::Runtime::new()?;
    let asked = 4_000.0;
    println!(
        "\nstateful (the demo's flows at its stacks, in this process{}), {asked:.0} \
         exchanges/s, 5 s, five runs each way, alternating",
        if pinned {
            "; stacks on core 0, tandem on core 1"
        } else {
            ", sharing the cores with tandem"
        }
    );
    let mut costs = Vec::new();
    for ids in [Ids::Replayable, Ids::Issued] {
        let options = tandem::demo::DemoOptions {
            requests: 20_000,
            rate: 5_000.0,
            users: 64,
            capture: dir.join(format!("stateful-{ids:?}.jsonl")),
            ..Default::default()
        };
        runtime.block_on(tandem::demo::record_with(&options, ids))?;
        let stacks = runtime.block_on(async {
            anyhow::Ok((
                tandem::demo::start_with(tandem::demo::Flavor::Legacy, ids).await?,
                tandem::demo::start_with(tandem::demo::Flavor::New, ids).await?,
            ))
        })?;
        println!("  ids {ids:?}:");
        // Runs alternate between the two ways, so that the machine's drift
        // (it is shared and noisy) falls on both alike.
        let ways = [
            ("correlation", &[][..]),
            ("--no-correlate", &["--no-correlate"][..]),
        ];
        // Per way: replay threads' and whole process's CPU µs per exchange,
        // and the CPU time outside the replay threads (learning, reading
        // the capture's header, writing the report), in ms.
        let mut replay_us = [Vec::new(), Vec::new()];
        let mut whole_us = [Vec::new(), Vec::new()];
        let mut before_ms = [Vec::new(), Vec::new()];
        for run in 1..=5 {
            for (way, (name, flags)) in ways.iter().enumerate() {
                let out = dir.join(format!("stateful-{ids:?}-{run}-{way}"));
                let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
                command
                    .args(["-q", "replay"])
                    .arg(&options.capture)
                    .args(["--legacy", &stacks.0.url(), "--new", &stacks.1.url()])
                    .args(["--rate", &asked.to_string(), "--duration", "5s"])
                    .args(["--rules", "scenarios/demo.rules.toml"])
                    .args(["--max-lag", "1s", "--timeout", "5s", "--out"])
                    .arg(&out)
                    .args(*flags);
                if pinned {
                    // SAFETY: only a system call between fork and exec.
                    unsafe { command.pre_exec(|| common::pin_to(1)) };
                }
                // SAFETY: sync takes no arguments and only flushes file system buffers.
                unsafe { libc::sync() };
                let measured = common::measure(&mut command)?;
                let both = sends(&out)?.0;
                let exchanges = both.n.max(1) as f64;
                let replay = measured.cpu_of("tandem-engine") + measured.cpu_of("tandem-collect");
                replay_us[way].push(replay.as_micros() as f64 / exchanges);
                whole_us[way].push(measured.cpu.as_micros() as f64 / exchanges);
                before_ms[way].push(measured.cpu.saturating_sub(replay).as_millis() as f64);
                let report = Report::load(&out.join("report.json"))?;
                let fidelity = report.fidelity.map_or(0.0, |f| f.rate);
                let mut outside: Vec<_> = measured
                    .threads
                    .iter()
                    .filter(|(name, _)| {
                        !name.starts_with("tandem-engine") && !name.starts_with("tandem-collect")
                    })
                    .collect();
                outside.sort_by_key(|(_, cpu)| std::cmp::Reverse(**cpu));
                let outside: Vec<String> = outside
                    .iter()
                    .take(3)
                    .map(|(name, cpu)| format!("{name} {} ms", cpu.as_millis()))
                    .collect();
                println!(
                    "    {name:<15} achieved {:.0} exchanges/s ({} dropped); CPU: replay threads \
                     {:.0} µs/exchange, whole process {:.0} µs/exchange, {:.0} ms outside the \
                     replay threads ({}); fidelity {:.1}%, {} mismatched, peak memory {:.1} MB",
                    both.rate(),
                    report.summary.dropped,
                    replay_us[way][run - 1],
                    whole_us[way][run - 1],
                    before_ms[way][run - 1],
                    outside.join(", "),
                    fidelity * 100.0,
                    report.summary.mismatched,
                    measured.peak_kb as f64 / 1024.0
                );
                std::fs::remove_file(out.join("results.jsonl"))?;
            }
        }
        let [replay, whole, before] = [replay_us, whole_us, before_ms].map(|w| w.map(median));
        // Exchanges a CPU-second carries, with correlation, as a share of
        // those it carries without, less one.
        let cost = 1.0 - replay[1] / replay[0];
        println!(
            "    medians: replay threads {:.0} and {:.0} µs/exchange: correlation costs {:.1}% of \
             the exchanges/s they carry; whole process {:.0} and {:.0} µs/exchange ({:.1}%), \
             of which outside the replay threads {:.0} and {:.0} ms (learning the links is \
             the difference)",
            replay[0],
            replay[1],
            cost * 100.0,
            whole[0],
            whole[1],
            (1.0 - whole[1] / whole[0]) * 100.0,
            before[0],
            before[1],
        );
        costs.push(cost);
        runtime.block_on(async {
            stacks.0.stop().await;
            stacks.1.stop().await;
        });
    }
    println!(
        "  target: correlation costs at most 10% of the exchanges/s tandem's replay threads \
         carry, on equal work at the stacks (ids Replayable): {:.1}%, {}. With issued ids \
         ({:.1}%) --no-correlate gets 401 for nearly everything, cheaper for the differ, so \
         that gap is not correlation's alone.",
        costs[0] * 100.0,
        if costs[0] <= 0.10 { "met" } else { "NOT met" },
        costs[1] * 100.0,
    );
    Ok(())
}

/// Learning the links of the stateful step's capture (20,000 exchanges),
/// in this process: wall time of the best of seven, per exchange. The
/// replay pays it once, before its first send.
fn learn(dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let options = tandem::demo::DemoOptions {
        requests: 20_000,
        rate: 5_000.0,
        users: 64,
        capture: dir.join("learn.jsonl"),
        ..Default::default()
    };
    runtime.block_on(tandem::demo::record_with(
        &options,
        tandem::demo::Ids::Issued,
    ))?;
    let written = tandem::correlate::Written::default();
    let mut times = Vec::new();
    let mut links = 0;
    for _ in 0..7 {
        let started = thread_cpu();
        let correlation = tandem::correlate::learn(&options.capture, &written)?;
        times.push(thread_cpu() - started);
        links = correlation.links.len();
    }
    // The first is what a replay pays (its maps grow from nothing, pages
    // come fresh from the kernel); the best is the code's own cost.
    let best = times.iter().min().copied().unwrap_or_default();
    println!(
        "learning the links of 20,000 exchanges: {} links; CPU time: first {:.0} ms, best of \
         seven {:.0} ms ({:.1} µs/exchange)",
        links,
        times[0].as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e6 / 20_000.0
    );
    Ok(())
}

/// This thread's CPU time (user and system): unlike wall time, not
/// lengthened by other work on a shared machine.
fn thread_cpu() -> std::time::Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    std::time::Duration::from_micros(us(usage.ru_utime) + us(usage.ru_stime))
}

/// A capture of `n` GETs of the JSON file, each its own session.
fn capture(path: &Path, n: u64) -> anyhow::Result<PathBuf> {
    let mut w = CaptureWriter::create(path, &CaptureHeader::new("bench"))?;
    for i in 0..n {
        w.write(&Exchange {
            id: i + 1,
            offset_us: i * 1_000,
            session: format!("s{i}"),
            request: Request {
                method: "GET".into(),
                target: "/orders.json".into(),
                version: "HTTP/1.1".into(),
                headers: vec![Header("accept".into(), "application/json".into())],
                body: Body::default(),
            },
            response: None,
            error: None,
            incomplete: None,
        })?;
    }
    w.finish()?;
    Ok(path.to_path_buf())
}

/// The capture, rules and targets every tandem step of the bench uses.
struct Bench {
    capture: PathBuf,
    rules: PathBuf,
    legacy: String,
    new: String,
    /// nginx's master process: its workers' CPU time is read around runs.
    nginx: u32,
}

/// CPU time per request, µs: in user space and in the kernel.
#[derive(Clone, Copy, Default)]
struct Cpu {
    user_us: f64,
    kernel_us: f64,
}

impl Cpu {
    fn per_request(run: &common::Run, requests: u64) -> Cpu {
        let per = |d: std::time::Duration| d.as_micros() as f64 / requests.max(1) as f64;
        Cpu {
            user_us: per(run.cpu.saturating_sub(run.kernel)),
            kernel_us: per(run.kernel),
        }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} µs ({:.1} user, {:.1} kernel)",
            self.user_us + self.kernel_us,
            self.user_us,
            self.kernel_us
        )
    }
}

/// wrk's run: its rate, and the CPU time per request it and nginx took.
struct Reference {
    rate: f64,
    cpu: Cpu,
    nginx_us: f64,
    /// Of the machine's CPU time over the run, the share its host stole.
    steal: f64,
}

/// One replay's achieved exchanges/s and report.
struct Sample {
    /// Exchanges/s sent to every stack.
    achieved: f64,
    /// Requests/s sent, every stack's counted (each stack keeps its own
    /// pace, so past saturation one may send what another dropped).
    requests: f64,
    report: Report,
    /// tandem's CPU time per request sent (the whole process: sends,
    /// diffing, results), and nginx's.
    cpu: Cpu,
    nginx_us: f64,
    /// The engine threads' CPU time over the span of the sends, per
    /// engine: how busy each was (1.0: a whole core).
    engines_busy: f64,
    /// Of the machine's CPU time over the run, the share its host stole.
    steal: f64,
}

impl Sample {
    /// The busiest engine's busy share as the report gives it (CPU time
    /// and waits for a core over the span of its sends).
    fn busiest_told(&self) -> f64 {
        self.report
            .generator
            .as_ref()
            .map_or(0.0, |g| g.most_busy())
    }
}

/// How many replay engines a run has.
#[derive(Clone, Copy)]
enum Engines {
    /// One per core (`--threads` the core count): tandem's default with
    /// stacks on other machines.
    PerCore,
    /// One, as wrk runs one thread (`--threads 1`); on two cores, also
    /// tandem's default with a stack on loopback, as here.
    One,
}

impl Engines {
    const BOTH: [Engines; 2] = [Engines::PerCore, Engines::One];

    fn count(self) -> usize {
        match self {
            Engines::PerCore => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Engines::One => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engines::PerCore => "engine per core",
            Engines::One => "one engine",
        }
    }
}

impl Bench {
    /// Runs `tandem replay` at `rate` exchanges/s for `duration`.
    fn replay(
        &self,
        out: &Path,
        rate: f64,
        duration: &str,
        engines: Engines,
    ) -> anyhow::Result<common::Run> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command
            .args(["-q", "replay"])
            .arg(&self.capture)
            .args(["--legacy", &self.legacy, "--new", &self.new])
            .args(["--rate", &rate.to_string(), "--duration", duration])
            .arg("--rules")
            .arg(&self.rules)
            .args(["--max-lag", "1s", "--timeout", "5s", "--out"])
            .arg(out);
        // Given either way: with the stacks on loopback, tandem's default
        // is one engine per two cores.
        command.args(["--threads", &engines.count().to_string()]);
        common::measure(&mut command)
    }

    /// As [`Bench::replay`], after letting the previous run's results reach
    /// the disk, so that their writeback does not load this run.
    fn sample(
        &self,
        out: &Path,
        rate: f64,
        duration: &str,
        engines: Engines,
    ) -> anyhow::Result<Sample> {
        // SAFETY: sync takes no arguments and only flushes file system buffers.
        unsafe { libc::sync() };
        std::thread::sleep(std::time::Duration::from_millis(500));
        let nginx = common::children_cpu(self.nginx);
        let before = MachineTime::now();
        let run = self.replay(out, rate, duration, engines)?;
        let steal = MachineTime::now().stolen_since(before);
        let nginx = common::children_cpu(self.nginx).saturating_sub(nginx);
        let (both, all) = sends(out)?;
        let report = Report::load(&out.join("report.json"))?;
        std::fs::remove_file(out.join("results.jsonl"))?;
        let engines_busy = run.cpu_of("tandem-engine").as_secs_f64()
            / all.seconds().max(1e-3)
            / engines.count() as f64;
        Ok(Sample {
            achieved: both.rate(),
            requests: all.rate(),
            report,
            cpu: Cpu::per_request(&run, all.n),
            nginx_us: nginx.as_micros() as f64 / all.n.max(1) as f64,
            engines_busy,
            steal,
        })
    }

    /// wrk against one target, 1 thread, 32 connections, 5 s: its
    /// requests/s, and its and nginx's CPU time per request.
    fn wrk(&self, url: &str) -> anyhow::Result<Reference> {
        let nginx = common::children_cpu(self.nginx);
        let before = MachineTime::now();
        let run = common::measure(Command::new("wrk").args(["-t1", "-c32", "-d5s", url]))?;
        let steal = MachineTime::now().stolen_since(before);
        let nginx = common::children_cpu(self.nginx).saturating_sub(nginx);
        let field = |prefix: &str| {
            run.stdout.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            })
        };
        let rate = field("Requests/sec:")
            .ok_or_else(|| anyhow::anyhow!("wrk printed no rate: {}", run.stdout))?;
        let requests = wrk_requests(&run.stdout)?;
        Ok(Reference {
            rate,
            cpu: Cpu::per_request(&run, requests),
            nginx_us: nginx.as_micros() as f64 / requests.max(1) as f64,
            steal,
        })
    }
}

/// How many requests wrk made, from its `N requests in 5.00s, ...` line.
fn wrk_requests(stdout: &str) -> anyhow::Result<u64> {
    stdout
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("wrk printed no count: {stdout}"))
}

/// Where a run at saturation spends the machine's CPU per request, beside
/// wrk's, and what 0.8x wrk would leave tandem: on these cores, with
/// nginx's and tandem's own kernel time per request as measured (the TCP
/// work on loopback, which any client pays, and which wrk's kernel time
/// shows), the user-space time per request tandem could spend at most.
fn budget(reference: &Reference, costs: &[Vec<(Cpu, f64)>; 2]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "  CPU per request sent at saturation (medians of the runs above; tandem's includes \
         what it spent on the jobs it dropped as late):"
    );
    for (way, engines) in Engines::BOTH.iter().enumerate() {
        let runs = &costs[way];
        let cpu = Cpu {
            user_us: median(runs.iter().map(|c| c.0.user_us).collect()),
            kernel_us: median(runs.iter().map(|c| c.0.kernel_us).collect()),
        };
        let nginx_us = median(runs.iter().map(|c| c.1).collect());
        let at = 0.8 * reference.rate;
        let budget = cores * 1e6 / at - nginx_us - cpu.kernel_us;
        println!(
            "    {:<16} tandem {cpu}, nginx {nginx_us:.1} µs; at 0.8x wrk ({at:.0} requests/s) \
             {cores:.0} cores leave tandem at most {budget:.1} µs of user time per request \
             (it spent {:.1}); wrk spent {:.1}",
            engines.name(),
            cpu.user_us,
            reference.cpu.user_us,
        );
    }
}

/// How late a thread's sleeps end on this machine, when nothing else of
/// the bench runs: the floor under any send lag, which a virtual machine's
/// host sets (its vCPUs are paused at times, idle or not).
struct WakeLag {
    n: usize,
    p99_us: u64,
    max_us: u64,
    over_1ms: usize,
}

/// Sleeps of 200 µs for `span`, with the timer slack the replay engines
/// ask for, each one's overshoot measured; on a thread of its own, whose
/// slack the processes the bench starts later do not inherit.
fn wake_lag(span: std::time::Duration) -> WakeLag {
    use std::time::{Duration, Instant};
    let sleeper = std::thread::spawn(move || {
        tandem::replay::schedule::precise_sleeps();
        let interval = Duration::from_micros(200);
        let start = Instant::now();
        let mut late = Vec::new();
        while start.elapsed() < span {
            let due = Instant::now() + interval;
            std::thread::sleep(interval);
            late.push(Instant::now().saturating_duration_since(due).as_micros() as u64);
        }
        late
    });
    let mut late = sleeper.join().expect("the sleeper thread does not panic");
    late.sort_unstable();
    WakeLag {
        n: late.len(),
        p99_us: late[late.len() * 99 / 100],
        max_us: late[late.len() - 1],
        over_1ms: late.iter().filter(|&&l| l >= 1_000).count(),
    }
}

/// The floor under tandem's send lag on this machine: a thread that walks
/// the schedule of a replay at a fixed rate and sends nothing. It sleeps to
/// each slot as the engines do (with their timer slack) and counts how late
/// it reached the slot, as a replay's send lag counts; a pause of the
/// thread (the host stealing its vCPU, another thread on its core) makes
/// every slot in the pause late, as it does a replay's sends.
struct BarePacer {
    p99_us: u64,
    /// Of the machine's CPU time over the walk, the share its host stole.
    steal: f64,
}

impl BarePacer {
    fn run(per_second: f64, span: std::time::Duration) -> BarePacer {
        use std::time::{Duration, Instant};
        let before = MachineTime::now();
        let walker = std::thread::spawn(move || {
            tandem::replay::schedule::precise_sleeps();
            let slots = (per_second * span.as_secs_f64()) as u64;
            let start = Instant::now();
            let late: Vec<u64> = (0..slots)
                .map(|slot| {
                    let due = start + Duration::from_secs_f64(slot as f64 / per_second);
                    let now = Instant::now();
                    if now < due {
                        std::thread::sleep(due - now);
                    }
                    Instant::now().saturating_duration_since(due).as_micros() as u64
                })
                .collect();
            late
        });
        let mut late = walker.join().expect("the pacer thread does not panic");
        late.sort_unstable();
        BarePacer {
            p99_us: late[late.len() * 99 / 100],
            steal: MachineTime::now().stolen_since(before),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a run sent, each over the time from its first actual send to its
/// last (what the harness dropped is not counted): exchanges sent to both
/// targets, and requests sent in all (each stack keeps its own pace, so
/// past saturation one may send what the other dropped).
fn sends(out: &Path) -> anyhow::Result<(Span, Span)> {
    let mut results = ResultsReader::open(&out.join("results.jsonl"))?;
    let mut both = Span::default();
    let mut all = Span::default();
    while let Some(r) = results.next_result() {
        let r = r?;
        if !r.legacy.was_dropped() && !r.new.was_dropped() {
            both.add(r.scheduled_us + r.legacy.lag_us);
        }
        for a in [&r.legacy, &r.new].into_iter().filter(|a| !a.was_dropped()) {
            all.add(r.scheduled_us + a.lag_us);
        }
    }
    Ok((both, all))
}

/// Sends counted between the first and the last.
struct Span {
    first: u64,
    last: u64,
    n: u64,
}

impl Default for Span {
    fn default() -> Span {
        Span {
            first: u64::MAX,
            last: 0,
            n: 0,
        }
    }
}

impl Span {
    fn add(&mut self, at_us: u64) {
        self.first = self.first.min(at_us);
        self.last = self.last.max(at_us);
        self.n += 1;
    }

    fn rate(&self) -> f64 {
        self.n.saturating_sub(1) as f64 / self.seconds()
    }

    /// From the first send to the last.
    fn seconds(&self) -> f64 {
        self.last.saturating_sub(self.first) as f64 / 1e6
    }
}
