//! PostgreSQL row changes by logical decoding over plain SQL: a slot with
//! the built-in `test_decoding` plugin is created in each stack's database
//! before the replay, read (`pg_logical_slot_get_changes`) while it runs
//! and after, and dropped at the end. Each inserted, updated or deleted row
//! is an effect, timed by its transaction's commit.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

use super::{Effect, EffectSource, STACKS};
use crate::capture::Body;

/// Renames between the new schema and the legacy one, so that rows compare
/// (docs/effects.md): a TOML file of `[tables]` (new name = legacy name)
/// and `[columns.TABLE]` (the new table's column = legacy's column).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SchemaMap {
    /// New table name to legacy table name.
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Per new table, new column name to legacy column name.
    #[serde(default)]
    pub columns: BTreeMap<String, BTreeMap<String, String>>,
}

impl SchemaMap {
    /// Reads a mapping file; an error names it.
    pub fn load(path: &std::path::Path) -> anyhow::Result<SchemaMap> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the schema mapping", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: not a schema mapping", path.display()))
    }
}

/// One stack's database, watched through a logical decoding slot.
pub struct RowChanges {
    stack: usize,
    /// The URL without its password, for messages.
    shown: String,
    slot: String,
    client: Client,
    map: SchemaMap,
    kept: Mutex<(Vec<Effect>, Option<Instant>)>,
    /// Changes that could not be read, counted.
    unreadable: std::sync::atomic::AtomicU64,
}

impl RowChanges {
    /// Connects to `url` (a `postgres://` URL) and creates the slot. A
    /// database whose `wal_level` is not `logical` is an error saying so.
    pub async fn start(stack: usize, url: &str, map: SchemaMap) -> anyhow::Result<RowChanges> {
        let shown = without_password(url);
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("{shown}: cannot connect"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("PostgreSQL connection ended: {e}");
            }
        });
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .await
            .with_context(|| format!("{shown}: cannot set the session's time zone"))?;
        let level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .with_context(|| format!("{shown}: cannot read wal_level"))?
            .get(0);
        anyhow::ensure!(
            level == "logical",
            "{shown}: wal_level is {level}; row changes need logical decoding: set \
             wal_level = logical in postgresql.conf and restart the server"
        );
        let slot = format!("tandem_{}_{}", std::process::id(), STACKS[stack]);
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
                &[&slot],
            )
            .await
            .with_context(|| format!("{shown}: cannot create the replication slot {slot}"))?;
        tracing::info!("{shown}: reading row changes through slot {slot}");
        Ok(RowChanges {
            stack,
            shown,
            slot,
            client,
            map,
            kept: Mutex::new((Vec::new(), None)),
            unreadable: Default::default(),
        })
    }

    async fn read(&self) -> anyhow::Result<()> {
        let rows = self
            .client
            .query(
                "SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, \
                 'include-timestamp', 'on')",
                &[&self.slot],
            )
            .await
            .with_context(|| format!("{}: cannot read slot {}", self.shown, self.slot))?;
        let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let (effects, unreadable) = decode(self.stack, &lines, &self.map);
        if unreadable > 0 {
            tracing::warn!("{}: {unreadable} row changes could not be read", self.shown);
            self.unreadable
                .fetch_add(unreadable, std::sync::atomic::Ordering::Relaxed);
        }
        if !effects.is_empty() {
            let mut kept = self.kept.lock().expect("rows lock");
            kept.0.extend(effects);
            kept.1 = Some(Instant::now());
        }
        Ok(())
    }
}

impl EffectSource for RowChanges {
    fn describe(&self) -> String {
        format!("{} row changes of {}", STACKS[self.stack], self.shown)
    }

    fn stack(&self) -> usize {
        self.stack
    }

    fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut self.kept.lock().expect("rows lock").0)
    }

    fn last_at(&self) -> Option<Instant> {
        self.kept.lock().expect("rows lock").1
    }

    fn collect(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Err(e) = self.read().await {
                tracing::warn!("{e:#}");
            }
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let dropped = self
                .client
                .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
                .await;
            if let Err(e) = dropped {
                tracing::warn!(
                    "{}: could not drop slot {} (drop it by hand: SELECT \
                     pg_drop_replication_slot('{}')): {e}",
                    self.shown,
                    self.slot,
                    self.slot
                );
            }
        })
    }
}

fn without_password(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(uri) => match uri.authority().map(|a| a.as_str()) {
            Some(authority) if authority.contains('@') => {
                let host = authority.rsplit('@').next().unwrap_or_default();
                url.replace(authority, &format!("…@{host}"))
            }
            _ => url.to_string(),
        },
        Err(_) => "a PostgreSQL database".to_string(),
    }
}

/// `test_decoding` lines as effects: `BEGIN`, `table S.T: OP: cols…`,
/// `COMMIT xid (at TIME)`; each row change gets its transaction's commit
/// time. Returns the effects and how many lines could not be read.
fn decode(stack: usize, lines: &[String], map: &SchemaMap) -> (Vec<Effect>, u64) {
    let (mut effects, mut open, mut unreadable) = (Vec::new(), Vec::new(), 0);
    for line in lines {
        if line.starts_with("BEGIN") {
            open.clear();
        } else if let Some(rest) = line.strip_prefix("COMMIT") {
            let at = commit_time(rest).unwrap_or_else(now_unix_us);
            for mut effect in open.drain(..) {
                let effect: &mut Effect = &mut effect;
                effect.at_unix_us = at;
                effects.push(effect.clone());
            }
        } else if let Some(change) = line.strip_prefix("table ") {
            match row_change(stack, change, map) {
                Some(effect) => open.push(effect),
                None => unreadable += 1,
            }
        }
    }
    // A transaction still open at the read is read again, whole, next time:
    // pg_logical_slot_get_changes returns committed transactions only.
    (effects, unreadable + open.len() as u64)
}

/// `public.orders: INSERT: id[bigint]:1 status[text]:'paid'`.
fn row_change(stack: usize, change: &str, map: &SchemaMap) -> Option<Effect> {
    let (table, rest) = change.split_once(": ")?;
    let (op, columns) = rest
        .split_once(':')
        .map_or((rest, ""), |(o, c)| (o, c.trim()));
    let table = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
    let renamed = map.columns.get(table);
    let mut row = serde_json::Map::new();
    for (name, value) in columns_of(columns)? {
        let name = renamed.and_then(|r| r.get(&name)).cloned().unwrap_or(name);
        row.insert(name, value);
    }
    let table = map.tables.get(table).map_or(table, String::as_str);
    let body = json!({"table": table, "op": op, "row": row});
    Some(Effect {
        stack,
        kind: format!("row {op} {table}"),
        method: "ROW".to_string(),
        target: format!("/{table}"),
        at_unix_us: 0,
        exchange: None,
        headers: Vec::new(),
        body: Body(serde_json::to_vec(&body).ok()?.into()),
    })
}

/// `id[bigint]:1 name[text]:'it''s' paid[boolean]:true`, as names and JSON
/// values (integers as numbers, `null` as null, booleans, the rest as
/// text); `None` if it cannot be read.
fn columns_of(text: &str) -> Option<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    if rest.is_empty() || rest.starts_with('(') {
        // `(no-tuple-data)`: a delete without a replica identity.
        return Some(out);
    }
    while !rest.is_empty() {
        let open = rest.find('[')?;
        let name = rest[..open].to_string();
        let close = open + rest[open..].find("]:")?;
        let kind = &rest[open + 1..close];
        rest = &rest[close + 2..];
        let (raw, quoted, after) = if let Some(body) = rest.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = body.char_indices().peekable();
            let end = loop {
                let (i, c) = chars.next()?;
                if c == '\'' {
                    if matches!(chars.peek(), Some((_, '\''))) {
                        chars.next();
                        value.push('\'');
                        continue;
                    }
                    break i + 1;
                }
                value.push(c);
            };
            (value, true, &body[end..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (rest[..end].to_string(), false, &rest[end..])
        };
        out.push((name, value_of(kind, &raw, quoted)));
        rest = after.trim_start();
    }
    Some(out)
}

fn value_of(kind: &str, raw: &str, quoted: bool) -> Value {
    if !quoted && raw == "null" {
        return Value::Null;
    }
    let integer = matches!(kind, "smallint" | "integer" | "bigint");
    match (kind, integer) {
        (_, true) => raw
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_string())),
        ("boolean", _) => Value::Bool(raw == "true"),
        _ => Value::String(raw.to_string()),
    }
}

/// ` 529 (at 2026-12-01 22:30:00.123456+00)` as microseconds since the
/// Unix epoch (the session's time zone is UTC, set at connection).
fn commit_time(rest: &str) -> Option<u64> {
    let at = rest.split_once("(at ")?.1.trim_end_matches(')');
    let utc = at.strip_suffix("+00")?;
    let time = humantime::parse_rfc3339_weak(utc).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as u64)
}

fn now_unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decoding_lines_are_row_effects() {
        let map: SchemaMap = toml::from_str(
            "[tables]\norder_header = \"orders\"\n[columns.order_header]\ntotal = \"total_cents\"\n",
        )
        .unwrap();
        let lines = [
            "BEGIN 529",
            "table public.order_header: INSERT: id[bigint]:7409284110012416001 customer[text]:'it''s me' total[integer]:1250 paid[boolean]:false note[text]:null",
            "COMMIT 529 (at 2026-12-01 22:30:00.5+00)",
        ]
        .map(String::from);
        let (effects, unreadable) = decode(1, &lines, &map);
        assert_eq!(unreadable, 0);
        assert_eq!(effects.len(), 1);
        let e = &effects[0];
        assert_eq!(e.kind, "row INSERT orders");
        let body: Value = serde_json::from_slice(e.body.bytes()).unwrap();
        assert_eq!(body["row"]["id"], json!(7409284110012416001_i64));
        assert_eq!(body["row"]["customer"], "it's me");
        assert_eq!(body["row"]["total_cents"], 1250);
        assert_eq!(body["row"]["paid"], false);
        assert_eq!(body["row"]["note"], Value::Null);
        assert_eq!(e.at_unix_us, 1_796_164_200_500_000);
    }
}
