//! Scale-out: shards replay disjoint sets of whole sessions; their merged
//! report equals the single-process run on the same capture, and its
//! histograms are the exact merge of the shards'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::demo::{self, DemoOptions, DemoServer, Flavor};
use tandem::latency::Latency;
use tandem::replay::ReplayPlan;
use tandem::report::{merge::merge, Report};
use tandem::results::ResultsReader;

async fn stacks() -> (DemoServer, DemoServer) {
    (
        demo::start(Flavor::Legacy).await.unwrap(),
        demo::start(Flavor::New).await.unwrap(),
    )
}

fn plan(capture: &Path, legacy: &DemoServer, new: &DemoServer, out: PathBuf) -> ReplayJob {
    let job = ReplayJob::new(
        ReplayPlan {
            speed: 4.0,
            timeout: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            ..ReplayPlan::new(
                capture.to_path_buf(),
                legacy.url().parse().unwrap(),
                new.url().parse().unwrap(),
            )
        },
        out,
    );
    ReplayJob {
        rules: Some("scenarios/demo.rules.toml".into()),
        // The run lasts about a quarter of a second: several intervals.
        series_interval: Duration::from_millis(20),
        ..job
    }
}

fn groups(r: &Report) -> BTreeMap<String, u64> {
    r.mismatch_groups
        .iter()
        .map(|g| {
            (
                format!("{} {} {} {:?}", g.method, g.route, g.kind.as_str(), g.path),
                g.count,
            )
        })
        .collect()
}

fn routes(r: &Report) -> BTreeMap<String, (u64, u64, u64, u64)> {
    r.routes
        .iter()
        .map(|x| {
            (
                format!("{} {}", x.method, x.route),
                (x.total, x.matched, x.mismatched, x.errors),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_shards_equal_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        requests: 900,
        capture: dir.path().join("demo.jsonl.gz"),
        out_dir: dir.path().join("demo-run"),
        ..DemoOptions::default()
    };
    tandem::cli::demo::run(&options).await.unwrap();
    let capture = options.capture;

    // One process, fresh stacks.
    let (legacy, new) = stacks().await;
    let single = replay(
        &plan(&capture, &legacy, &new, dir.path().join("single")),
        std::future::pending(),
    )
    .await
    .unwrap()
    .report;
    legacy.stop().await;
    new.stop().await;

    // Three shards at once against other fresh stacks, as three pods would.
    let (legacy, new) = stacks().await;
    let shard = |i: u32| {
        let mut p = plan(
            &capture,
            &legacy,
            &new,
            dir.path().join(format!("shard-{i}")),
        );
        p.plan.shard = Some((i, 3));
        p
    };
    let (a, b, c) = (shard(0), shard(1), shard(2));
    let (ra, rb, rc) = tokio::join!(
        replay(&a, std::future::pending()),
        replay(&b, std::future::pending()),
        replay(&c, std::future::pending()),
    );
    legacy.stop().await;
    new.stop().await;
    let shards = vec![ra.unwrap().report, rb.unwrap().report, rc.unwrap().report];
    assert!(
        shards.iter().all(|s| s.summary.total > 0),
        "every shard got sessions"
    );
    // Each shard's engines, one shard after another: the busiest of them
    // tells whether any pod hit its own limit.
    let engines: Vec<_> = shards
        .iter()
        .flat_map(|s| {
            s.generator
                .as_ref()
                .expect("engines measured")
                .engines
                .clone()
        })
        .collect();
    let merged = merge(shards).unwrap();
    assert_eq!(merged.generator.as_ref().unwrap().engines, engines);

    assert_eq!(merged.summary, single.summary);
    assert_eq!(groups(&merged), groups(&single));
    assert_eq!(routes(&merged), routes(&single));
    assert_eq!(merged.errors, single.errors);
    assert_eq!(merged.latency.legacy.count, single.latency.legacy.count);
    assert_eq!(
        merged.latency_corrected.new.count,
        single.latency_corrected.new.count
    );

    // Interval by interval too: counts add up and histograms merge exactly.
    let (ms, ss) = (
        merged.series.as_ref().unwrap(),
        single.series.as_ref().unwrap(),
    );
    let counts = |s: &tandem::report::series::Series| -> Vec<_> {
        s.points
            .iter()
            .map(|p| {
                let stack = |x: &tandem::report::series::StackPoint| {
                    (
                        x.sent,
                        x.answered,
                        x.errors,
                        x.dropped,
                        x.latency.count,
                        x.lag.count,
                    )
                };
                (
                    p.at_ms,
                    p.total,
                    p.matched,
                    p.mismatched,
                    p.errors,
                    p.dropped,
                    stack(&p.legacy),
                    stack(&p.new),
                )
            })
            .collect()
    };
    assert_eq!(ms.interval_ms, 20);
    assert!(ms.points.len() > 1, "{} intervals", ms.points.len());
    assert_eq!(counts(ms), counts(ss));
    assert_eq!(
        ms.points.iter().map(|p| p.total).sum::<u64>(),
        merged.summary.total
    );

    // The merged histogram is exactly the histogram of every shard's raw
    // latencies, not an average of percentiles.
    let mut legacy_all = Latency::default();
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut results =
            ResultsReader::open(&dir.path().join(format!("shard-{i}/results.jsonl"))).unwrap();
        while let Some(r) = results.next_result() {
            let r = r.unwrap();
            ids.push(r.id);
            legacy_all.record(r.legacy.response.unwrap().latency_us);
        }
    }
    assert_eq!(merged.latency.legacy, legacy_all.summary());
    // Every exchange went out exactly once, across the shards.
    ids.sort();
    assert_eq!(ids, (1..=900).collect::<Vec<u64>>());
    merge_refusals(dir.path());
}

/// `tandem report merge` on the shard directories: what is not the shards
/// of one run is refused, each case with what is wrong; `--allow-partial`
/// merges what is there, marked partial.
fn merge_refusals(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["report", "merge"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let refused = |args: &[&str], why: &str| {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    refused(
        &["shard-0", "shard-1", "shard-0", "--out", "m"],
        "shard 0/3 is given twice: shard-0 and shard-0",
    );
    refused(&["shard-0", "shard-1", "--out", "m"], "shards 2/3 missing");
    refused(
        &["single", "shard-1", "--out", "m"],
        "single is a whole run, not a shard",
    );
    let edited = |name: &str, edit: fn(&mut Report)| {
        let mut report = Report::load(&dir.join("shard-2/report.json")).unwrap();
        edit(&mut report);
        report.write_files(&dir.join(name)).unwrap();
    };
    edited("other-count", |r| r.run.shard = Some((2, 4)));
    refused(
        &["shard-0", "shard-1", "other-count", "--out", "m"],
        "mixed shard counts",
    );
    edited("other-capture", |r| {
        r.run.capture_sha256 = Some("0".repeat(64));
    });
    refused(
        &["shard-0", "shard-1", "other-capture", "--out", "m"],
        "replayed another capture",
    );
    let (code, stderr) = run(&["shard-0", "shard-1", "--allow-partial", "--out", "m"]);
    assert_eq!(code, Some(0), "{stderr}");
    let merged = Report::load(&dir.join("m/report.json")).unwrap();
    assert_eq!(merged.partial.as_deref(), Some("shards 2/3 missing"));
    let summary = std::fs::read_to_string(dir.join("m/summary.md")).unwrap();
    assert!(
        summary.contains("partial merge: shards 2/3 missing"),
        "{summary}"
    );
    let (code, stderr) = run(&["shard-0", "shard-1", "shard-2", "--out", "all"]);
    assert_eq!(code, Some(0), "{stderr}");
    let all = Report::load(&dir.join("all/report.json")).unwrap();
    assert!(all.partial.is_none() && all.run.shard.is_none());
    assert_eq!(all.run.capture_sha256.as_ref().map(String::len), Some(64));
}

#[test]
fn a_shard_keeps_sessions_whole() {
    // The same hash splits sessions for shards and for sampling.
    let owner = |s: &str| tandem::capture::session_hash(s) % 4;
    assert_eq!(owner("u7"), owner("u7"));
    let spread: std::collections::BTreeSet<u64> =
        (0..64).map(|i| owner(&format!("u{i}"))).collect();
    assert_eq!(spread.len(), 4, "64 sessions reach all 4 shards");
}
