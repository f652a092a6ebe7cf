//! Zeek's HTTP test traces (../shared/conformance/zeek-http): every trace
//! imports without crash or hang, and every transaction Zeek's baseline
//! expects is in the capture with the same method, uri and status code (and
//! body lengths where the trace holds the whole body), except the rows in
//! docs/conformance.md's allow-list, each with its reason. The allow-list is
//! checked too: a listed row that tandem now finds must be taken off it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tandem::capture::header_value;
use tandem::capture::{CaptureReader, Exchange};
use tandem::record::packets::{AssemblyOptions, PacketSummary};
use tandem::record::{import_file, ImportConfig, Rotation, Selection, Sink};

/// Rows tandem does not reproduce, with why: (case, trans_depth, method,
/// uri, reason). Kept in step with docs/conformance.md.
const ALLOWED: &[(&str, &str, &str, &str, &str)] = &[
    ("http-methods", "1", "-", "-", NOT_A_REQUEST),
    ("http-09", "2", "-", "-", ZEEK_EMPTY_09),
    ("no-version", "2", "-", "-", ZEEK_EMPTY_09),
];

/// The client sent no request line (`OPTIONSHTTP/1.1`, `OPTIONS` alone, a
/// method that is not a token): nothing to replay. tandem counts the bytes
/// as an unparseable request head and the server's answer as an answer
/// without a request.
const NOT_A_REQUEST: &str = "not a request line";
/// Zeek opens an empty second transaction on HTTP/0.9 connections after the
/// answer; no bytes of the trace belong to it.
const ZEEK_EMPTY_09: &str = "empty Zeek transaction";

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/zeek-http");
    assert!(
        dir.join("MANIFEST.tsv").exists(),
        "the Zeek conformance corpus is missing at {} (shared/ sits beside the repository)",
        dir.display()
    );
    dir
}

/// One baseline row: column name to value, `-` meaning unset.
type Row = std::collections::HashMap<String, String>;

fn baseline(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(fields) = line.strip_prefix("#fields\t") {
            columns = Some(fields.split('\t').map(str::to_string).collect());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        // Baselines without a #fields line have their column names as the first row.
        let Some(names) = &columns else {
            columns = Some(line.split('\t').map(str::to_string).collect());
            continue;
        };
        rows.push(
            names
                .iter()
                .cloned()
                .zip(line.split('\t').map(str::to_string))
                .collect(),
        );
    }
    rows
}

fn import(trace: &Path) -> (Vec<Exchange>, PacketSummary) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.jsonl");
    let (tx, rx) = mpsc::channel();
    let trace_path = trace.to_path_buf();
    let out_path = out.clone();
    std::thread::spawn(move || {
        let sink =
            Sink::create(&out_path, "test", Selection::default(), Rotation::default()).unwrap();
        let config = ImportConfig {
            file: trace_path,
            assembly: AssemblyOptions::default(),
        };
        let recording = block_on(import_file(config, sink, std::future::pending())).unwrap();
        let _ = tx.send(recording.summary);
    });
    let summary = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{}: import crashed or hung", trace.display()));
    let exchanges = CaptureReader::open(&out)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (exchanges, summary)
}

fn unset(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|v| *v != "-")
}

/// Why `row` has no matching exchange, or None when one matches.
fn mismatch(row: &Row, exchanges: &[Exchange]) -> Option<String> {
    let method = unset(row.get("method")).unwrap_or("");
    let uri = match unset(row.get("uri")) {
        Some("(empty)") => "",
        Some(uri) => uri,
        None => "",
    };
    let candidates: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| e.request.method == method && e.request.target == uri)
        .collect();
    if candidates.is_empty() {
        return Some(format!("no exchange {method} {uri:?}"));
    }
    let status = unset(row.get("status_code"));
    let found = candidates.iter().any(|e| {
        let status_ok = match (status, &e.response) {
            (None, None) => true,
            (None, Some(_)) => row.get("status_code").is_none(),
            (Some(s), Some(r)) => r.status.to_string() == s,
            (Some(_), None) => false,
        };
        status_ok && body_lengths_match(row, e)
    });
    (!found).then(|| {
        let seen: Vec<String> = candidates
            .iter()
            .map(|e| {
                let r = e.response.as_ref();
                format!(
                    "status {:?} req {} resp {:?} incomplete {:?}",
                    r.map(|r| r.status),
                    e.request.body.bytes().len(),
                    r.map(|r| r.body.bytes().len()),
                    e.incomplete
                )
            })
            .collect();
        format!("{method} {uri:?}: expected status {status:?}, saw {seen:?}")
    })
}

/// Body lengths agree where the capture holds the whole body.
fn body_lengths_match(row: &Row, e: &Exchange) -> bool {
    if e.incomplete.is_some() {
        return true;
    }
    let len = |name: &str| unset(row.get(name)).and_then(|v| v.parse::<usize>().ok());
    let request_ok = len("request_body_len").is_none_or(|n| n == e.request.body.bytes().len());
    // Zeek counts response bodies after content decoding.
    let response_ok = match (len("response_body_len"), &e.response) {
        (Some(n), Some(r)) => match header_value(&r.headers, "content-encoding") {
            Some(coding) => tandem::encoding::decode(coding, r.body.bytes(), 1 << 30)
                .is_ok_and(|d| d.len() == n),
            None => n == r.body.bytes().len(),
        },
        _ => true,
    };
    request_ok && response_ok
}

#[test]
fn every_zeek_trace_imports_and_every_baseline_row_is_found() {
    let corpus = corpus();
    let manifest = std::fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut stale = Vec::new();
    let mut checked = 0;
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (case, trace, base) = (cols[0], cols[1], cols[2]);
        let (exchanges, summary) = import(&corpus.join(trace));
        for row in baseline(&corpus.join(base)) {
            checked += 1;
            let depth = row.get("trans_depth").map_or("", String::as_str);
            let method = row.get("method").map_or("", String::as_str);
            let uri = row.get("uri").map_or("", String::as_str);
            let allowed = ALLOWED
                .iter()
                .find(|a| a.0 == case && a.1 == depth && a.2 == method && a.3 == uri);
            match (mismatch(&row, &exchanges), allowed) {
                (Some(why), None) => failures.push(format!("{case}: {why}\n{summary}")),
                (Some(_), Some(a)) if a.4 == NOT_A_REQUEST => {
                    // Not dropped silently: counted and said why.
                    assert!(
                        summary.orphan_responses > 0,
                        "{case}: answers without a request are not counted"
                    );
                    assert!(
                        summary
                            .bytes_skipped
                            .contains_key("unparseable request head"),
                        "{case}: {:?}",
                        summary.bytes_skipped
                    );
                }
                (None, Some(a)) => stale.push(format!(
                    "{case}: {} {} is found now: take it off the allow-list",
                    a.2, a.3
                )),
                _ => {}
            }
        }
    }
    assert!(checked > 80, "only {checked} baseline rows read");
    assert!(
        failures.is_empty(),
        "{} rows not reproduced:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(future)
}
