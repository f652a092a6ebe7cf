//! Side effects on loopback: two order stacks (real hyper servers) that
//! answer alike, each issuing its own order ids, and call their webhooks
//! (tandem's sinks) differently; the replay ties each call to its exchange
//! by the `traceparent` it passed on, and reports exactly the differences.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::json;
use tandem::cli::replay::{run as replay, ReplayJob};
use tandem::effects::{Collection, EffectSource, SmtpSink, WebhookSink};
use tokio::net::TcpListener;

/// How a stack misbehaves in its effects only.
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    /// Order ids from 1001, one `order.paid` per payment, currency `EUR`.
    Legacy,
    /// Snowflake-like ids above 2^53, `order.paid` sent twice, currency
    /// `eur` in `order.created`.
    New,
}

/// An order stack whose webhooks go to `hooks`; 600 ms after its
/// `requests`th request it also sends one `stack.idle` call, without a
/// traceparent and in no exchange's window, as services report on
/// themselves; and 1.3 s after the first exchange's order is created, an
/// `order.audited` call for it.
async fn order_stack(flavor: Flavor, hooks: String, requests: u64) -> String {
    let client = tandem::http::client(Duration::from_secs(5));
    let next = Arc::new(AtomicU64::new(match flavor {
        Flavor::Legacy => 1001,
        Flavor::New => 7_409_284_110_012_416_001,
    }));
    let served = Arc::new(AtomicU64::new(0));
    common::json_stack(move |path, trace| {
        let (client, hooks, next) = (client.clone(), hooks.clone(), next.clone());
        let nth = served.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            if nth == requests {
                let (client, hooks) = (client.clone(), hooks.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    call(&client, &hooks, None, json!({"type": "stack.idle"})).await
                });
            }
            let (answer, events) = match path.split('/').collect::<Vec<_>>()[..] {
                ["", "orders"] => {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    let first = trace.as_deref().and_then(tandem::effects::exchange_of);
                    if first == Some((0, 0, 1)) {
                        // An audit 1.3 s after the answer: later than the
                        // quiet period (1 s), so counted late.
                        let (client, hooks, trace) = (client.clone(), hooks.clone(), trace.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(1300)).await;
                            let audited = json!({"type": "order.audited", "order_id": id});
                            call(&client, &hooks, trace.as_deref(), audited).await
                        });
                    }
                    let currency = if flavor == Flavor::New { "eur" } else { "EUR" };
                    let created = json!({"type": "order.created", "order_id": id,
                                         "total_cents": 1250, "currency": currency});
                    (json!({"id": id, "status": "created"}), vec![created])
                }
                ["", "orders", id, "pay"] => {
                    let id: u64 = id.parse().unwrap_or(0);
                    let paid = json!({"type": "order.paid", "order_id": id});
                    let times = if flavor == Flavor::New { 2 } else { 1 };
                    (json!({"id": id, "status": "paid"}), vec![paid; times])
                }
                // Reads write nothing.
                _ => (json!({"status": "ok"}), vec![]),
            };
            // The calls go after the answer, as a queue's consumer would.
            tokio::spawn(async move {
                for event in events {
                    call(&client, &hooks, trace.as_deref(), event).await;
                }
            });
            answer
        }
    })
    .await
}

/// POSTs `event` to the hooks URL, passing `trace` on.
async fn call(
    client: &tandem::http::Client,
    hooks: &str,
    trace: Option<&str>,
    event: serde_json::Value,
) {
    let mut request = Request::post(format!("{hooks}/hooks"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(event.to_string())))
        .unwrap();
    if let Some(trace) = trace {
        request
            .headers_mut()
            .insert("traceparent", trace.parse().unwrap());
    }
    let answered = client.request(request).await.expect("the sink answers");
    assert_eq!(answered.status(), 200);
}

/// `sessions` sessions, all at once: create an order (recorded id
/// `500 + n`), pay it, read it.
fn order_flows(dir: &std::path::Path, sessions: u64) -> std::path::PathBuf {
    let mut exchanges = Vec::new();
    for n in 0..sessions {
        let session = format!("s{n}");
        let recorded_id = 500 + n;
        let mut create = common::exchange(n * 3 + 1, 0, &session, "POST", "/orders", &[]);
        create.response = Some(common::json_answer(
            json!({"id": recorded_id, "status": "created"}),
        ));
        let pay_path = format!("/orders/{recorded_id}/pay");
        let mut pay = common::exchange(n * 3 + 2, 10_000, &session, "POST", &pay_path, &[]);
        pay.response = Some(common::json_answer(
            json!({"id": recorded_id, "status": "paid"}),
        ));
        let mut read = common::exchange(n * 3 + 3, 20_000, &session, "GET", "/status", &[]);
        read.response = Some(common::json_answer(json!({"status": "ok"})));
        exchanges.extend([create, pay, read]);
    }
    common::write_capture(&dir.join("orders.jsonl"), exchanges)
}

/// 100 sessions at once: every call is tied to its own exchange, the new
/// stack's own order ids compare equal to legacy's through their answers,
/// and exactly the two planted differences are reported: `order.paid`
/// sent twice on every payment, the currency of every `order.created`.
/// Reads write nothing and show nothing; the untied idle calls match.
/// The gate on them fails the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_calls_are_tied_to_their_exchanges_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = [
        WebhookSink::start(0, listener().await, Default::default(), 1 << 20).unwrap(),
        WebhookSink::start(1, listener().await, Default::default(), 1 << 20).unwrap(),
    ];
    let capture = order_flows(dir.path(), 100);
    let out = dir.path().join("run");
    let hooks = [sinks[0].url(), sinks[1].url()];
    let legacy = order_stack(Flavor::Legacy, hooks[0].clone(), 300).await;
    let new = order_stack(Flavor::New, hooks[1].clone(), 300).await;
    let job = tandem::cli::replay::job_from_args([
        capture.to_str().unwrap(),
        "--legacy",
        &legacy,
        "--new",
        &new,
        "--gate",
        "effects.mismatched == 0",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    // The sinks are bound here, on ports of their own: `--legacy-webhook-
    // sink ADDR` binds the same way when the run starts (a port picked
    // free and bound later could be taken meanwhile by another test).
    let job = collecting(job, sinks, Duration::from_secs(1));
    let outcome = replay(&job, std::future::pending()).await.unwrap();
    let report = &outcome.report;
    assert_eq!(report.summary.total, 300);
    assert_eq!(report.summary.errors, 0, "{:?}", report.errors);
    // The answers are alike, each stack's own order ids followed and
    // settled: only the effects tell the stacks apart.
    assert_eq!(report.summary.matched, 300, "{:#?}", report.mismatch_groups);
    let effects = report.effects.as_ref().expect("effects judged");
    assert_eq!(effects.collected.legacy, 1 + 100 + 100 + 1);
    assert_eq!(effects.collected.new, 1 + 100 + 200 + 1);
    assert_eq!(effects.tied, 502, "every call but the idle ones");
    assert_eq!(effects.late, 2, "the audits, waited for and counted");
    assert_eq!(effects.untied, 2);
    assert_eq!(
        effects.exchanges, 200,
        "creates and payments; reads wrote nothing"
    );
    let groups: Vec<String> = effects
        .mismatch_groups
        .iter()
        .map(|g| format!("{} | {} | {} | {}", g.route, g.kind, g.what, g.count))
        .collect();
    assert_eq!(
        groups.len(),
        2,
        "exactly the planted differences, no id of either stack: {groups:#?}"
    );
    assert!(
        groups.contains(
            &"POST /orders/{id}/pay | webhook POST /hooks order.paid | count | 100".to_string()
        ),
        "{groups:#?}"
    );
    assert!(
        groups.contains(
            &"POST /orders | webhook POST /hooks order.created | value $.currency | 100"
                .to_string()
        ),
        "{groups:#?}"
    );
    assert_eq!(effects.mismatched, 200);
    assert_eq!(effects.matched, 0);
    let gate = &report.gates[0];
    assert!(!gate.passed, "{gate:?}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Side effects"), "{summary}");
    assert!(summary.contains("order.paid"), "{summary}");

    // The effects are kept in the run directory: `tandem diff` judges them
    // again as it judges the answers, here with the currency ignored on
    // the hook route, and the paid-twice difference alone is left.
    let rules = dir.path().join("currency.toml");
    std::fs::write(
        &rules,
        "[[route]]\nmatch = \"POST /hooks\"\nignore_paths = [\"$.currency\"]\n",
    )
    .unwrap();
    let rediff = |name: &str, extra: &[&str]| {
        let again = dir.path().join(name);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([
                "-q",
                "diff",
                out.to_str().unwrap(),
                "--out",
                again.to_str().unwrap(),
            ])
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success(), "{status}");
        tandem::report::Report::load(&again.join("report.json")).unwrap()
    };
    let same = rediff("again", &[]);
    let same = same.effects.expect("effects judged again");
    assert_eq!(
        (same.mismatched, same.tied, same.late, same.untied),
        (200, 502, 2, 2)
    );
    let lenient = rediff("lenient", &["--rules", rules.to_str().unwrap()]);
    let lenient = lenient.effects.expect("effects judged again");
    assert_eq!(lenient.mismatched, 100, "{:#?}", lenient.mismatch_groups);
    assert_eq!(lenient.mismatch_groups.len(), 1);
    assert_eq!(
        lenient.mismatch_groups[0].kind,
        "webhook POST /hooks order.paid"
    );

    // An effect that cannot be read fails the diff, naming file and line:
    // left out, it would read as one the stack never had.
    let file = out.join("effects.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"stack\":0,";
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let broken = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["-q", "diff", out.to_str().unwrap(), "--out"])
        .arg(dir.path().join("broken"))
        .output()
        .unwrap();
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains("effects.jsonl: line 3"), "{stderr}");
}

/// A real SMTP client: Python's smtplib in a process of its own, sending
/// each message written to it as a JSON line (a connection per message)
/// and saying when the sink has taken it; ended by PID when dropped.
struct Mailer {
    child: std::sync::Mutex<Option<tokio::process::Child>>,
    pipes: tokio::sync::Mutex<(
        tokio::process::ChildStdin,
        tokio::io::BufReader<tokio::process::ChildStdout>,
    )>,
}

const SMTPLIB: &str = r#"
import json, smtplib, sys
from email.message import EmailMessage
host, port = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
for line in sys.stdin:
    m = json.loads(line)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = m["from"], m["to"], m["subject"]
    msg.set_content(m["text"])
    # A local name given: smtplib would otherwise look one up in DNS.
    with smtplib.SMTP(host, port, local_hostname="stack.test") as smtp:
        smtp.send_message(msg)
    print("sent", flush=True)
"#;

impl Mailer {
    /// Starts the client and waits until it has loaded its modules.
    async fn start(smtp: std::net::SocketAddr) -> Mailer {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("python3")
            .args([
                "-u",
                "-c",
                SMTPLIB,
                &smtp.ip().to_string(),
                &smtp.port().to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut ready = String::new();
        stdout.read_line(&mut ready).await.unwrap();
        assert_eq!(ready.trim(), "ready");
        Mailer {
            child: std::sync::Mutex::new(Some(child)),
            pipes: tokio::sync::Mutex::new((stdin, stdout)),
        }
    }

    /// Sends `message` and returns once the sink has taken it.
    async fn send(&self, message: serde_json::Value) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let line = format!("{message}\n");
        let (stdin, stdout) = &mut *self.pipes.lock().await;
        stdin.write_all(line.as_bytes()).await.unwrap();
        let mut sent = String::new();
        stdout.read_line(&mut sent).await.unwrap();
        assert_eq!(sent.trim(), "sent");
    }
}

impl Drop for Mailer {
    fn drop(&mut self) {
        let child = self.child.lock().unwrap().take();
        if let Some(pid) = child.as_ref().and_then(tokio::process::Child::id) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// An order stack that mails each customer when an order is created
/// (through `mailer`, to tandem's SMTP sink), and mails nothing on reads.
/// Its mail names the order by the stack's own id; the new one writes the
/// total as `12.5` where legacy writes `12.50`.
async fn mailing_stack(flavor: Flavor, mailer: Arc<Mailer>) -> String {
    let next = Arc::new(AtomicU64::new(match flavor {
        Flavor::Legacy => 1001,
        Flavor::New => 7_409_284_110_012_416_001,
    }));
    common::json_stack(move |path, _| {
        let (mailer, next) = (mailer.clone(), next.clone());
        async move {
            if path != "/orders" {
                return json!({"status": "ok"});
            }
            let id = next.fetch_add(1, Ordering::Relaxed);
            let total = if flavor == Flavor::New {
                "12.5"
            } else {
                "12.50"
            };
            let mail = json!({
                "from": "shop@example.com", "to": "customer@example.com",
                "subject": format!("Order {id} confirmed"),
                "text": format!("Your order {id} is confirmed.\nTotal: {total} EUR\n"),
            });
            // Mailed before the answer, as a handler that confirms at once
            // does: the message comes while the create is in flight, however
            // long the mail client takes on a loaded machine (after the
            // answer, one that took over 150 ms came in the read's window).
            mailer.send(mail).await;
            json!({"id": id, "status": "created"})
        }
    })
    .await
}

/// Mail carries no `traceparent`: each message is tied to the one exchange
/// of its stack in flight when it came (sessions one after another, each
/// stack mailing before it answers the create), the
/// stacks' own order ids in subject and text compare equal through their
/// answers, and the one planted difference is found: the total's format
/// in every confirmation. Reads send no mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_tied_by_its_time_and_compared() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = [
        SmtpSink::start(0, listener().await).unwrap(),
        SmtpSink::start(1, listener().await).unwrap(),
    ];
    let smtp = [sinks[0].addr(), sinks[1].addr()];
    let mut exchanges = Vec::new();
    for n in 0..10u64 {
        let at = n * 300_000;
        let mut create = common::exchange(n * 2 + 1, at, &format!("s{n}"), "POST", "/orders", &[]);
        create.response = Some(common::json_answer(
            json!({"id": 500 + n, "status": "created"}),
        ));
        let mut read = common::exchange(
            n * 2 + 2,
            at + 150_000,
            &format!("s{n}"),
            "GET",
            "/status",
            &[],
        );
        read.response = Some(common::json_answer(json!({"status": "ok"})));
        exchanges.extend([create, read]);
    }
    let capture = common::write_capture(&dir.path().join("mail.jsonl"), exchanges);
    let mailers = [
        Arc::new(Mailer::start(smtp[0]).await),
        Arc::new(Mailer::start(smtp[1]).await),
    ];
    let legacy = mailing_stack(Flavor::Legacy, mailers[0].clone()).await;
    let new = mailing_stack(Flavor::New, mailers[1].clone()).await;
    let out = dir.path().join("run");
    let job = tandem::cli::replay::job_from_args([
        capture.to_str().unwrap(),
        "--legacy",
        &legacy,
        "--new",
        &new,
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let job = collecting(job, sinks, Duration::from_millis(500));
    let outcome = replay(&job, std::future::pending()).await.unwrap();
    let report = &outcome.report;
    assert_eq!(report.summary.errors, 0, "{:?}", report.errors);
    let effects = report.effects.as_ref().expect("effects judged");
    assert_eq!((effects.collected.legacy, effects.collected.new), (10, 10));
    assert_eq!(
        effects.by_window, 20,
        "every message tied by its time: {effects:#?}"
    );
    assert_eq!(effects.untied, 0);
    let groups: Vec<String> = effects
        .mismatch_groups
        .iter()
        .map(|g| format!("{} | {} | {} | {}", g.route, g.kind, g.what, g.count))
        .collect();
    assert_eq!(
        groups,
        ["POST /orders | mail Order {n} confirmed | value $.text | 10"],
        "the total's format, and no order id of either stack"
    );
    let example = &effects.mismatch_groups[0].examples[0];
    assert!(
        example
            .legacy
            .as_deref()
            .unwrap_or_default()
            .contains("12.50")
            && example
                .new
                .as_deref()
                .unwrap_or_default()
                .contains("12.5 EUR"),
        "{example:?}"
    );
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// `job`, collecting effects from `sinks`, already listening.
fn collecting<S: EffectSource + 'static>(
    mut job: ReplayJob,
    sinks: [S; 2],
    quiet: Duration,
) -> ReplayJob {
    job.effects = Some(Collection {
        sources: sinks
            .into_iter()
            .map(|s| Arc::new(s) as Arc<dyn EffectSource>)
            .collect(),
        webhook_sinks: Vec::new(),
        smtp_sinks: Vec::new(),
        databases: Vec::new(),
        schema_map: None,
        quiet,
    });
    job
}
