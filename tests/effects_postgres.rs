//! Row changes as side effects: a real PostgreSQL (Debian's, installed by
//! `.ci/setup`, started here as the `postgres` user in a temporary data
//! directory with `wal_level=logical`) holds two databases, legacy's and
//! new's, with different schemas and id schemes; two order stacks (hyper
//! servers) write to them. tandem reads each database's changes through a
//! logical decoding slot and reports exactly the planted differences.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tandem::cli::replay::run as replay;

/// A PostgreSQL server of its own, ended by PID when dropped.
struct Postgres {
    child: Child,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (.ci/setup installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

/// The `postgres` user's uid and gid: the server refuses to run as root.
fn postgres_user() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

fn start_postgres(dir: &Path) -> Postgres {
    start_postgres_with(dir, false)
}

/// PostgreSQL in `dir`, with logical decoding unless `replica_only` (the
/// server's default `wal_level`).
fn start_postgres_with(dir: &Path, replica_only: bool) -> Postgres {
    let (uid, gid) = postgres_user();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for path in [dir, data.as_path()] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    let bin = bin_dir();
    let initdb = Command::new(bin.join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        initdb.status.success(),
        "{}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    let [port] = common::free_ports::<1>();
    let child = Command::new(bin.join("postgres"))
        .args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
        .args([
            "-k",
            dir.to_str().unwrap(),
            "-c",
            "listen_addresses=127.0.0.1",
        ])
        .args(match replica_only {
            true => ["-c", "wal_level=replica", "-c", "max_replication_slots=8"],
            false => ["-c", "wal_level=logical", "-c", "max_replication_slots=8"],
        })
        .args(["-c", "fsync=off"])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("postgres.log")).unwrap())
        .spawn()
        .unwrap();
    Postgres { child, port }
}

async fn connect(port: u16, database: &str) -> tokio_postgres::Client {
    let url = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    for _ in 0..200 {
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("PostgreSQL did not come up on port {port}");
}

/// The legacy schema: orders numbered from 1001, an event row per order,
/// a payment row per payment.
const LEGACY_SCHEMA: &str = "
    CREATE SEQUENCE order_ids START 1001;
    CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total_cents integer, status text);
    CREATE TABLE order_events (order_id bigint, event text);
    CREATE TABLE payments (order_id bigint PRIMARY KEY, amount_cents integer);";

/// The new schema, other names by design, snowflake-like ids.
const NEW_SCHEMA: &str = "
    CREATE SEQUENCE order_ids START 7409284110012416001;
    CREATE TABLE order_header (order_id bigint PRIMARY KEY, client text, total bigint, state text);
    CREATE TABLE payment (order_ref bigint PRIMARY KEY, amount bigint);";

/// What the test tells the mapping: new's names as legacy's.
const MAP: &str = "
[tables]
order_header = \"orders\"
payment = \"payments\"

[columns.order_header]
order_id = \"id\"
client = \"customer\"
total = \"total_cents\"
state = \"status\"

[columns.payment]
order_ref = \"order_id\"
amount = \"amount_cents\"
";

/// The legacy and the new order stack, each on a database of its own
/// schema on `pg`; their URLs.
async fn order_stacks(pg: &Postgres, settle_late: bool) -> (String, String) {
    let admin = connect(pg.port, "postgres").await;
    admin.batch_execute("CREATE DATABASE legacy").await.unwrap();
    admin.batch_execute("CREATE DATABASE new").await.unwrap();
    let (legacy_db, new_db) = (
        connect(pg.port, "legacy").await,
        connect(pg.port, "new").await,
    );
    legacy_db.batch_execute(LEGACY_SCHEMA).await.unwrap();
    new_db.batch_execute(NEW_SCHEMA).await.unwrap();
    (
        order_stack(false, legacy_db, settle_late).await,
        order_stack(true, new_db, settle_late).await,
    )
}

/// An order stack on its database. Planted in new: no `order_events` row
/// (a missing row), and a payment's amount one cent over (a wrong column).
async fn order_stack(new: bool, db: tokio_postgres::Client, settle_late: bool) -> String {
    let db = Arc::new(db);
    let settled = Arc::new(std::sync::atomic::AtomicBool::new(!settle_late));
    common::json_stack(move |path, _| {
        let (db, settled) = (db.clone(), settled.clone());
        async move {
            match path.split('/').collect::<Vec<_>>()[..] {
                ["", "orders"] => {
                    let id: i64 = db
                        .query_one("SELECT nextval('order_ids')", &[])
                        .await
                        .unwrap()
                        .get(0);
                    if new {
                        db.execute(
                            "INSERT INTO order_header VALUES ($1, 'c1', 1250, 'created')",
                            &[&id],
                        )
                        .await
                        .unwrap();
                    } else {
                        db.batch_execute(&format!(
                            "BEGIN; INSERT INTO orders VALUES ({id}, 'c1', 1250, 'created'); \
                                 INSERT INTO order_events VALUES ({id}, 'created'); COMMIT;"
                        ))
                        .await
                        .unwrap();
                    }
                    json!({"id": id, "status": "created"})
                }
                ["", "orders", id, "pay"] => {
                    let id: i64 = id.parse().unwrap_or(0);
                    let sql = if new {
                        format!(
                            "BEGIN; UPDATE order_header SET state = 'paid' WHERE order_id = {id}; \
                                 INSERT INTO payment VALUES ({id}, 1251); COMMIT;"
                        )
                    } else {
                        format!(
                            "BEGIN; UPDATE orders SET status = 'paid' WHERE id = {id}; \
                                 INSERT INTO payments VALUES ({id}, 1250); COMMIT;"
                        )
                    };
                    db.batch_execute(&sql).await.unwrap();
                    if !settled.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        // The first payment is settled by a batch job 1.3 s
                        // later: past the quiet period, and between the
                        // windows of the flows then running.
                        let (db, table, column, key) = match new {
                            true => (db.clone(), "order_header", "state", "order_id"),
                            false => (db.clone(), "orders", "status", "id"),
                        };
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(1300)).await;
                            let sql = format!(
                                "UPDATE {table} SET {column} = 'settled' WHERE {key} = {id}"
                            );
                            db.batch_execute(&sql).await.unwrap();
                        });
                    }
                    json!({"id": id, "status": "paid"})
                }
                // Reads write nothing.
                _ => {
                    db.query_one("SELECT 1", &[]).await.unwrap();
                    json!({"status": "ok"})
                }
            }
        }
    })
    .await
}

/// Eight flows one after another (create, pay 150 ms later, read 150 ms
/// after that): every row change is tied to its exchange by its commit
/// time, the stacks' ids compare equal through their answers, the mapping
/// makes the schemas meet, and exactly the planted differences are found:
/// the event row missing on new and the payment's amount. Reads show no
/// effect. A write 1.3 s after its answer is counted late. The slots are
/// dropped at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_of_two_schemas_are_compared() {
    let effects = order_flows(8, false).await;
    assert_eq!(
        effects.by_window, 56,
        "every row tied by its commit time: {effects:#?}"
    );
    // The late settlement of the first payment, on each stack: tied to the
    // payment by the order id it carries, waited for and counted late.
    assert_eq!((effects.by_id, effects.late), (2, 2), "{effects:#?}");
}

/// Forty flows at once: the rows' commit times fall in many exchanges'
/// windows, so each is tied by the order id it carries, to the latest
/// exchange sent before it whose answer holds that id (the create for the
/// order and its event, the payment for the update and the payment row):
/// the same differences, each where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_row_changes_are_tied_by_their_ids() {
    let effects = order_flows(40, true).await;
    assert_eq!(effects.untied, 0, "{effects:#?}");
    assert!(effects.by_id > 0, "{effects:#?}");
    assert_eq!(effects.by_window + effects.by_id, 280);
}

/// `sessions` order flows (one after another, or all at once) replayed at
/// the two stacks on a PostgreSQL of their own, with row changes compared;
/// checks what holds either way and returns the effects' report.
async fn order_flows(sessions: u64, at_once: bool) -> tandem::effects::EffectsReport {
    let dir = tempfile::tempdir().unwrap();
    let pg = start_postgres(dir.path());
    let (legacy, new) = order_stacks(&pg, !at_once).await;

    let mut exchanges = Vec::new();
    for n in 0..sessions {
        let at = if at_once { 0 } else { n * 500_000 };
        let (session, recorded) = (format!("s{n}"), 500 + n);
        let mut create = common::exchange(n * 3 + 1, at, &session, "POST", "/orders", &[]);
        create.response = Some(common::json_answer(
            json!({"id": recorded, "status": "created"}),
        ));
        let pay_path = format!("/orders/{recorded}/pay");
        let mut pay = common::exchange(n * 3 + 2, at + 150_000, &session, "POST", &pay_path, &[]);
        pay.response = Some(common::json_answer(
            json!({"id": recorded, "status": "paid"}),
        ));
        let mut read = common::exchange(n * 3 + 3, at + 300_000, &session, "GET", "/status", &[]);
        read.response = Some(common::json_answer(json!({"status": "ok"})));
        exchanges.extend([create, pay, read]);
    }
    let capture = common::write_capture(&dir.path().join("orders.jsonl"), exchanges);
    let map = dir.path().join("schema-map.toml");
    std::fs::write(&map, MAP).unwrap();
    let url = |db: &str| format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port);
    let out = dir.path().join("run");
    let job = tandem::cli::replay::job_from_args([
        capture.to_str().unwrap(),
        "--legacy",
        &legacy,
        "--new",
        &new,
        "--legacy-pg",
        &url("legacy"),
        "--new-pg",
        &url("new"),
        "--pg-map",
        map.to_str().unwrap(),
        "--effects-quiet",
        "500ms",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let outcome = replay(&job, std::future::pending()).await.unwrap();
    let report = &outcome.report;
    assert_eq!(report.summary.total, 3 * sessions);
    assert_eq!(
        report.summary.matched,
        3 * sessions,
        "the answers are alike: {:#?}",
        report.mismatch_groups
    );
    let effects = report.effects.clone().expect("effects judged");
    // Legacy: per flow an order and an event row, an update and a payment.
    let late = u64::from(!at_once);
    assert_eq!(
        (effects.collected.legacy, effects.collected.new),
        (4 * sessions + late, 3 * sessions + late)
    );
    assert_eq!(
        effects.exchanges,
        2 * sessions,
        "creates and payments; reads wrote nothing: {effects:#?}"
    );
    let groups: Vec<String> = effects
        .mismatch_groups
        .iter()
        .map(|g| format!("{} | {} | {} | {}", g.route, g.kind, g.what, g.count))
        .collect();
    assert_eq!(
        groups.len(),
        2,
        "the missing row and the wrong column, nothing else: {groups:#?}"
    );
    assert!(
        groups.contains(&format!(
            "POST /orders | row INSERT order_events | count | {sessions}"
        )),
        "{groups:#?}"
    );
    assert!(
        groups.contains(&format!(
            "POST /orders/{{id}}/pay | row INSERT payments | value $.row.amount_cents | {sessions}"
        )),
        "{groups:#?}"
    );
    // The slots are gone.
    let admin = connect(pg.port, "postgres").await;
    let slots: i64 = admin
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    effects
}

/// A database without logical decoding is refused before anything is sent,
/// saying what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_without_logical_decoding_is_refused_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let err = match tandem::effects::RowChanges::start(
        0,
        "postgres://postgres@127.0.0.1:1/nowhere",
        Default::default(),
    )
    .await
    {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cannot connect"), "{err}");
    // A real server with the default wal_level (replica).
    let pg = start_postgres_with(dir.path(), true);
    let port = pg.port;
    connect(pg.port, "postgres").await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let err = match tandem::effects::RowChanges::start(0, &url, Default::default()).await {
        Ok(_) => panic!("wal_level is replica"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("wal_level is replica") && err.contains("wal_level = logical"),
        "{err}"
    );
}

/// A replay stopped by SIGINT still drops its replication slots: a slot
/// left behind holds WAL on the server for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_drops_its_slots() {
    let dir = tempfile::tempdir().unwrap();
    let pg = start_postgres(dir.path());
    let (legacy, new) = order_stacks(&pg, false).await;
    // Reads once a second for a minute: stopped long before the end.
    let exchanges =
        (0..60u64).map(|n| common::exchange(n + 1, n * 1_000_000, "s", "GET", "/status", &[]));
    let capture = common::write_capture(&dir.path().join("reads.jsonl"), exchanges);
    let url = |db: &str| format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port);
    let mut replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "replay",
            capture.to_str().unwrap(),
            "--legacy",
            &legacy,
            "--new",
            &new,
        ])
        .args(["--legacy-pg", &url("legacy"), "--new-pg", &url("new")])
        .args(["--effects-quiet", "200ms", "--out"])
        .arg(dir.path().join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let slots = || async {
        let admin = connect(pg.port, "postgres").await;
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pg_replication_slots", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    let mut waited = 0;
    while slots().await < 2 {
        waited += 1;
        assert!(waited < 100, "the replay created its slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Mid-replay: once a result is in.
    common::wait_for_results(&dir.path().join("run"), 1, Duration::from_secs(20)).await;
    let pid = replay.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), replay.wait())
        .await
        .expect("the replay stopped")
        .unwrap();
    assert_eq!(status.code(), Some(3), "interrupted");
    assert_eq!(slots().await, 0, "slots dropped after the interruption");
}
