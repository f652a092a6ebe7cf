//! The replay schedule: constant rate, loops, amplification, session order,
//! limits. Assertions are on the schedule itself (scheduled times are
//! computed, not measured), so they hold on a slow machine.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::replay::ReplayPlan;
use tandem::results::{ErrorKind, ExchangeResult};

/// A capture of `sessions` x `per_session` GETs; session s's request k at
/// `offset(s, k)` µs, carrying `x-session` and `x-seq` headers.
fn capture(
    dir: &Path,
    sessions: u32,
    per_session: u32,
    offset: impl Fn(u32, u32) -> u64,
) -> PathBuf {
    let mut due: Vec<(u64, u32, u32)> = (0..sessions)
        .flat_map(|s| (0..per_session).map(move |k| (s, k)))
        .map(|(s, k)| (offset(s, k), s, k))
        .collect();
    due.sort();
    let exchanges = due.into_iter().enumerate().map(|(i, (at, s, k))| {
        let headers = [("x-session", format!("s{s}")), ("x-seq", k.to_string())];
        common::exchange(
            i as u64 + 1,
            at,
            &format!("s{s}"),
            "GET",
            &format!("/item/{i}"),
            &headers,
        )
    });
    common::write_capture(&dir.join("cap.jsonl"), exchanges)
}

fn results(out: &Path) -> Vec<ExchangeResult> {
    let mut all = common::read_results(out);
    all.sort_by_key(|r| r.scheduled_us);
    all
}

async fn target(delay: Duration) -> (String, std::sync::Arc<std::sync::Mutex<common::Seen2>>) {
    let (addr, seen) = common::tracking_server(delay).await;
    (format!("http://{addr}"), seen)
}

fn plan(capture: PathBuf, legacy: &str, new: &str, out: PathBuf) -> ReplayJob {
    ReplayJob::new(
        ReplayPlan::new(capture, legacy.parse().unwrap(), new.parse().unwrap()),
        out,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constant_rate_over_two_passes() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), 10, 5, |s, k| (s * 7 + k * 1000) as u64);
    let (url, _) = target(Duration::ZERO).await;
    let out = dir.path().join("run");
    let p = plan(cap, &url, &url, out.clone()).map_plan(|p| ReplayPlan {
        rate: Some(500.0),
        passes: 2,
        ordered_sessions: false,
        ..p
    });
    let report = replay(&p, std::future::pending()).await.unwrap().report;
    assert_eq!(report.summary.total, 100);
    let all = results(&out);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.scheduled_us, i as u64 * 2_000, "slot {i}");
    }
    assert_eq!(all.iter().filter(|r| r.pass == 1).count(), 50);
    assert_eq!(report.send_lag.legacy.count, 100);
    assert_eq!(report.latency_corrected.legacy.count, 100);
}

/// However the sessions split over the engines, the rate holds and the
/// schedule ends: one session on four engines (three hold none) at 200/s
/// for 1 s goes out slot after slot, and the replay ends at `--duration`.
/// Each engine used to pace its share at a quarter of the rate, and one with
/// no session read the capture again and again, never reaching the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_on_four_engines_keeps_the_rate_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), 1, 20, |_, k| k as u64 * 1_000);
    let (url, _) = target(Duration::ZERO).await;
    let out = dir.path().join("run");
    let p = plan(cap, &url, &url, out.clone()).map_plan(|p| ReplayPlan {
        rate: Some(200.0),
        duration: Some(Duration::from_secs(1)),
        threads: 4,
        ..p
    });
    let replayed =
        tokio::time::timeout(Duration::from_secs(30), replay(&p, std::future::pending()))
            .await
            .expect("the replay ends at --duration");
    let report = replayed.unwrap().report;
    // Slots 0 to 200, 5 ms apart: the last at 1 s.
    assert_eq!(report.summary.total, 201);
    let all = results(&out);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.scheduled_us, i as u64 * 5_000, "slot {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_timing_sped_up_looped_and_amplified() {
    let dir = tempfile::tempdir().unwrap();
    // 4 sessions, requests 40 ms apart: span 120 ms, mean gap 40 ms.
    let cap = capture(dir.path(), 1, 4, |_, k| 1_000_000 + k as u64 * 40_000);
    let (url, _) = target(Duration::ZERO).await;
    let out = dir.path().join("run");
    let p = plan(cap, &url, &url, out.clone()).map_plan(|p| ReplayPlan {
        speed: 4.0,
        passes: 2,
        amplify: 2,
        ordered_sessions: false,
        ..p
    });
    let report = replay(&p, std::future::pending()).await.unwrap().report;
    assert_eq!(
        report.summary.total, 16,
        "4 exchanges x 2 copies x 2 passes"
    );
    let at: HashMap<(u64, u32, u32), u64> = results(&out)
        .into_iter()
        .map(|r| ((r.id, r.pass, r.copy), r.scheduled_us))
        .collect();
    // Offsets from the first request, divided by the speed.
    assert_eq!(at[&(1, 0, 0)], 0);
    assert_eq!(at[&(2, 0, 0)], 10_000);
    // The copy goes halfway to the next request.
    assert_eq!(at[&(1, 0, 1)], 5_000);
    // Pass 2 starts one mean gap after pass 1's last request: (120 + 40) / 4 ms.
    for id in 1..=4 {
        assert_eq!(at[&(id, 1, 0)] - at[&(id, 0, 0)], 40_000, "exchange {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_in_order_one_request_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    // Two sessions of six requests, all due within 60 µs.
    let cap = capture(dir.path(), 2, 6, |s, k| (k * 10 + s) as u64);
    let (url, seen) = target(Duration::from_millis(30)).await;
    let out = dir.path().join("run");
    replay(
        &plan(cap.clone(), &url, &url, out.clone()),
        std::future::pending(),
    )
    .await
    .unwrap();
    {
        let seen = seen.lock().unwrap();
        for s in ["s0", "s1"] {
            assert_eq!(
                seen.most[s], 2,
                "{s}: one request at a time per target (two targets)"
            );
            // Each target sees 0..6 in order; the two targets interleave.
            let order = &seen.order[s];
            let mut expected: Vec<u32> = (0..6).flat_map(|k| [k, k]).collect();
            expected.sort();
            assert_eq!(order, &expected, "{s}");
        }
    }
    // The waits show: later requests of a session went out late.
    let all = results(&out);
    assert!(
        all.iter().any(|r| r.legacy.lag_us >= 100_000),
        "queued behind their session"
    );

    // Without session order, they overlap.
    let (url, seen) = target(Duration::from_millis(30)).await;
    let p = plan(cap, &url, &url, dir.path().join("unordered")).map_plan(|p| ReplayPlan {
        ordered_sessions: false,
        ..p
    });
    replay(&p, std::future::pending()).await.unwrap();
    assert!(seen.lock().unwrap().most["s0"] > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_go_out_in_time_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Ten sessions, one request each, all due at once; a slow target.
    let cap = capture(dir.path(), 10, 1, |s, _| s as u64);
    // Margins wide enough for a loaded machine: the first two go out well
    // within 150 ms; the others would wait 600 ms for a slot.
    let (url, _) = target(Duration::from_millis(600)).await;
    let p = plan(cap, &url, &url, dir.path().join("run")).map_plan(|p| ReplayPlan {
        max_in_flight: Some(2),
        max_lag: Some(Duration::from_millis(150)),
        ..p
    });
    let report = replay(&p, std::future::pending()).await.unwrap().report;
    // At most two slots: two go out (fewer only if the machine is so loaded
    // that even they miss the lag budget); every other one is dropped and
    // counted, apart from the target's errors.
    let s = &report.summary;
    assert_eq!(s.total, 10);
    assert!(s.matched <= 2 && s.dropped >= 8, "{s:?}");
    assert_eq!(s.matched + s.dropped, 10, "{s:?}");
    assert_eq!(s.errors, 0, "a drop is not the target's error");
    // Each stack keeps its own slots (and pace): each drops what it could
    // not send in time, and an exchange is dropped if any stack dropped it.
    let drops = |side: &std::collections::BTreeMap<ErrorKind, u64>| {
        side.get(&ErrorKind::Dropped).copied().unwrap_or(0)
    };
    let (legacy_drops, new_drops) = (drops(&report.errors.legacy), drops(&report.errors.new));
    assert!(legacy_drops >= 8 && new_drops >= 8, "{:?}", report.errors);
    assert!(
        legacy_drops.max(new_drops) <= s.dropped,
        "{:?}",
        report.errors
    );
    assert_eq!(
        report.send_lag.new.count,
        10 - new_drops,
        "only sent requests have a lag"
    );
    if s.matched > 0 {
        assert!(report.latency_corrected.new.p50 >= 600_000);
    }
}

/// `--max-in-flight` holds for the whole replay, not as a share per engine:
/// with every session on one of two engines, that engine may still use all
/// the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_is_shared_by_the_engines() {
    let dir = tempfile::tempdir().unwrap();
    // Ten sessions that all hash to engine 0 of 2, one request each, all
    // due at once; a slow target.
    let sessions: Vec<String> = (0..)
        .map(|i| format!("s{i}"))
        .filter(|s| tandem::capture::session_hash(s) % 2 == 0)
        .take(10)
        .collect();
    let exchanges = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| common::exchange(i as u64 + 1, 0, s, "GET", "/", &[]));
    let cap = common::write_capture(&dir.path().join("one-engine.jsonl"), exchanges);
    let (url, _) = target(Duration::from_millis(800)).await;
    let p = plan(cap, &url, &url, dir.path().join("run")).map_plan(|p| ReplayPlan {
        max_in_flight: Some(2),
        max_lag: Some(Duration::from_millis(300)),
        threads: 2,
        ..p
    });
    let report = replay(&p, std::future::pending()).await.unwrap().report;
    let s = &report.summary;
    // Split per engine, engine 0 would have had one slot: 1 matched, 9
    // dropped.
    assert_eq!((s.matched, s.dropped), (2, 8), "{s:?}");
}

/// Four sessions, a request every 10 ms each for 2 s, at a fast stack and a
/// stack answering in 50 ms, sessions in order: the fast one keeps the
/// recorded pace (its send lag small, its achieved rate the recorded one),
/// the slow one shows its own lag, every exchange is paired and judged,
/// and each stack gets every session's requests in order.
async fn one_stack_slow(slow_is_new: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), 4, 200, |s, k| {
        k as u64 * 10_000 + s as u64 * 2_500
    });
    let (fast, fast_seen) = target(Duration::ZERO).await;
    let (slow, slow_seen) = target(Duration::from_millis(50)).await;
    let (legacy, new) = if slow_is_new {
        (&fast, &slow)
    } else {
        (&slow, &fast)
    };
    let out = dir.path().join("run");
    let report = replay(&plan(cap, legacy, new, out.clone()), std::future::pending())
        .await
        .unwrap()
        .report;
    let s = &report.summary;
    assert_eq!(s.total, 800, "every exchange paired: {s:?}");
    assert_eq!(s.matched, 800, "and judged alike: {s:?}");
    let (fast_lag, slow_lag) = if slow_is_new {
        (&report.send_lag.legacy, &report.send_lag.new)
    } else {
        (&report.send_lag.new, &report.send_lag.legacy)
    };
    // Held back by the slow stack, each of the fast one's requests would
    // wait for a 50 ms answer; 20 ms leaves room for a loaded CI machine
    // (p99 5.3 and 6.2 ms seen there, with the test binaries side by side).
    assert!(
        fast_lag.p99 < 20_000,
        "the fast stack keeps its pace: {fast_lag:?}"
    );
    assert!(
        slow_lag.p99 > 100_000,
        "the slow one shows its own lag: {slow_lag:?}"
    );
    let load = report.load.as_ref().unwrap();
    let (fast_load, slow_load) = if slow_is_new {
        (&load.legacy, &load.new)
    } else {
        (&load.new, &load.legacy)
    };
    // 800 requests over 1.9975 s of schedule.
    let recorded = 799.0 / 1.9975;
    assert!(
        (fast_load.achieved_per_s - recorded).abs() <= 0.01 * recorded,
        "{fast_load:?}"
    );
    assert!(
        slow_load.fell_behind() && !fast_load.fell_behind(),
        "{load:?}"
    );
    for seen in [&fast_seen, &slow_seen] {
        let seen = seen.lock().unwrap();
        for (session, order) in &seen.order {
            assert_eq!(order, &(0..200).collect::<Vec<u32>>(), "{session} in order");
            assert_eq!(seen.most[session], 1, "{session} one at a time");
        }
    }
    // The report says one stack fell behind.
    let terminal = {
        let mut out = Vec::new();
        tandem::report::Render::render(&tandem::report::Terminal, &report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(terminal.contains("fell behind"), "{terminal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_new_stack_does_not_hold_back_legacy() {
    one_stack_slow(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_legacy_stack_does_not_hold_back_new() {
    one_stack_slow(false).await;
}

/// Answers waiting for their pair are bounded: with legacy far ahead of a
/// slow new stack, past the bound the new stack's late requests are
/// dropped and counted (and say why), legacy's are all sent, and every
/// exchange still has its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_waiting_for_their_pair_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), 2, 100, |s, k| {
        k as u64 * 5_000 + s as u64 * 1_000
    });
    let (fast, _) = target(Duration::ZERO).await;
    let (slow, _) = target(Duration::from_millis(100)).await;
    let out = dir.path().join("run");
    let job = plan(cap, &fast, &slow, out.clone()).map_plan(|p| ReplayPlan {
        max_unpaired: 10,
        threads: 1,
        ..p
    });
    let report = replay(&job, std::future::pending()).await.unwrap().report;
    assert_eq!(report.summary.total, 200, "every exchange has its result");
    let drops = |side: &std::collections::BTreeMap<ErrorKind, u64>| {
        side.get(&ErrorKind::Dropped).copied().unwrap_or(0)
    };
    assert_eq!(drops(&report.errors.legacy), 0, "{:?}", report.errors);
    assert!(drops(&report.errors.new) > 100, "{:?}", report.errors);
    let results = common::read_results(&out);
    assert!(results.iter().any(|r| r
        .new
        .error
        .as_ref()
        .is_some_and(|e| e.message.contains("far behind"))));
}

/// The report says how busy tandem's own engines were: at a rate any
/// machine sends with ease, well under the limit and no warning; asked far
/// more than one engine can send, saturated, and the report warns that its
/// send lag and corrected latency may be tandem's, not the stacks'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_tells_when_tandem_itself_was_the_limit() {
    use tandem::report::{Generator, Render, Terminal};
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), 50, 2, |s, k| (s * 10 + k * 1_000) as u64);
    let (url, _) = target(Duration::ZERO).await;
    let text = |report: &tandem::report::Report| {
        let mut out = Vec::new();
        Terminal.render(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let gate = tandem::gate::Gate::parse("busy", "engine.busy < 90%", None).unwrap();
    let mut easy =
        plan(cap.clone(), &url, &url, dir.path().join("easy")).map_plan(|p| ReplayPlan {
            rate: Some(100.0),
            duration: Some(Duration::from_secs(1)),
            threads: 2,
            ..p
        });
    easy.gates = vec![gate.clone()];
    let report = replay(&easy, std::future::pending()).await.unwrap().report;
    let generator = report.generator.clone().expect("the engines were measured");
    assert_eq!(generator.engines.len(), 2, "{generator:?}");
    for e in &generator.engines {
        // The span runs from the start to the engine's last job, at 1 s.
        assert!((900..5_000).contains(&e.span_ms), "{e:?}");
        assert!(e.busy < Generator::SATURATED, "{e:?}");
        // The machine's steal over the span: a share, whatever the host.
        assert!((0.0..=1.0).contains(&e.stolen), "{e:?}");
    }
    assert!(!generator.saturated());
    assert!(text(&report).contains("sent by 2 replay engines, the busiest"));
    assert!(!text(&report).contains("tandem's own limit"));
    assert!(report.passed(), "{:?}", report.gates);

    // 50,000 exchanges/s on one engine: far more than one sends (a release
    // build's at most 28,000-32,500/s in the benches on this machine, the
    // tests' debug build fewer), so the engine never idles; what it cannot
    // send within 50 ms is dropped.
    let mut flood = plan(cap, &url, &url, dir.path().join("flood")).map_plan(|p| ReplayPlan {
        rate: Some(50_000.0),
        duration: Some(Duration::from_secs(1)),
        threads: 1,
        max_lag: Some(Duration::from_millis(50)),
        ordered_sessions: false,
        ..p
    });
    flood.gates = vec![gate];
    let report = replay(&flood, std::future::pending()).await.unwrap().report;
    let generator = report.generator.clone().expect("the engine was measured");
    let busiest = generator.busiest().expect("one engine").clone();
    assert!(generator.saturated(), "{generator:?}");
    assert!(busiest.cpu_ms > 0 && busiest.busy < 1.1, "{busiest:?}");
    assert!(
        text(&report).contains("tandem's own limit may have been reached, 1 replay engine"),
        "{}",
        text(&report)
    );
    // A load test in CI can refuse a run whose generator was the limit.
    assert!(!report.passed(), "{:?}", report.gates);
    assert_eq!(report.gates[0].observed, Some(busiest.busy));
}
