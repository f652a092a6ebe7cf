//! The capture file format: round trips, gzip, and errors that name the line.

use bytes::Bytes;
use tandem::capture::{
    Body, CaptureHeader, CaptureReader, CaptureWriter, Exchange, Header, Request, Response,
};
use tandem::jsonl::LineError;

fn exchange(id: u64, body: Bytes) -> Exchange {
    Exchange {
        id,
        offset_us: id * 1500,
        session: format!("127.0.0.{}:4242", id % 3 + 1),
        request: Request {
            method: "POST".into(),
            target: format!("/api/orders/{id}?a=1"),
            version: "HTTP/1.1".into(),
            headers: vec![Header(
                "content-type".into(),
                "application/octet-stream".into(),
            )],
            body: Body(body.clone()),
        },
        response: (id % 5 != 0).then(|| Response {
            status: 200,
            headers: vec![Header("x".into(), "ü".into())],
            body: Body(body),
            latency_us: 812,
            truncated: None,
        }),
        error: (id % 5 == 0).then(|| "upstream: refused".to_string()),
        incomplete: (id % 7 == 0).then(|| "3 bytes lost from the capture".to_string()),
    }
}

fn exchanges() -> Vec<Exchange> {
    (1..=500)
        .map(|i| {
            let body = match i % 3 {
                0 => Bytes::from(format!("{{\"i\":{i}}}")),
                1 => Bytes::from(vec![0xde, 0xad, 0xbe, 0xef, i as u8]),
                _ => Bytes::new(),
            };
            exchange(i, body)
        })
        .collect()
}

fn write(path: &std::path::Path, items: &[Exchange]) {
    let mut writer = CaptureWriter::create(path, &CaptureHeader::new("test")).unwrap();
    for e in items {
        writer.write(e).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), items.len() as u64);
}

#[test]
fn gzip_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("c.jsonl");
    let gz = dir.path().join("c.jsonl.gz");
    let items = exchanges();
    write(&plain, &items);
    write(&gz, &items);
    let raw = std::fs::read(&gz).unwrap();
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "a .gz capture is gzip");
    assert!(raw.len() < std::fs::metadata(&plain).unwrap().len() as usize);
    for path in [&plain, &gz] {
        let reader = CaptureReader::open(path).unwrap();
        assert_eq!(reader.header().source, "test");
        let back: Vec<Exchange> = reader.map(Result::unwrap).collect();
        assert_eq!(back, items);
    }
    // The reader goes by content, not by name.
    let renamed = dir.path().join("gzip-without-suffix");
    std::fs::copy(&gz, &renamed).unwrap();
    assert_eq!(CaptureReader::open(&renamed).unwrap().count(), 500);
}

#[test]
fn a_corrupt_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    write(&path, &exchanges()[..3]);
    let mut text = std::fs::read_to_string(&path).unwrap();
    // Line 5: an exchange cut short; line 6: a good one after it.
    let good = serde_json::to_string(&exchange(9, Bytes::from_static(b"ok"))).unwrap();
    text.push_str(&good[..good.len() / 2]);
    text.push('\n');
    text.push_str(&good);
    text.push('\n');
    std::fs::write(&path, text).unwrap();

    let results: Vec<_> = CaptureReader::open(&path).unwrap().collect();
    assert_eq!(results.len(), 5);
    assert!(
        matches!(&results[3], Err(LineError::Malformed { line: 5, .. })),
        "{:?}",
        results[3]
    );
    let error = results[3].as_ref().unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: line 5:", path.display())),
        "{error}"
    );
    assert!(error.contains("truncated"), "{error}");
    assert_eq!(
        results[4].as_ref().unwrap().id,
        9,
        "reading goes on after a bad line"
    );
}

#[test]
fn a_truncated_gzip_file_names_the_line_reached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.jsonl.gz");
    write(&path, &exchanges());
    let raw = std::fs::read(&path).unwrap();
    std::fs::write(&path, &raw[..raw.len() / 2]).unwrap();
    let results: Vec<_> = CaptureReader::open(&path).unwrap().collect();
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(last, LineError::Read { .. }), "{last:?}");
    let error = last.to_string();
    assert!(error.contains("cut.jsonl.gz: line "), "{error}");
    assert!(results.iter().filter(|r| r.is_ok()).count() > 10);
}

#[test]
fn headers_of_other_formats_and_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v9.jsonl");
    let cases = [
        (
            r#"{"format":"tandem-capture","version":9,"started_at_unix_us":0,"source":""}"#,
            "version 9 is not supported",
        ),
        (
            r#"{"format":"har","version":1,"started_at_unix_us":0,"source":""}"#,
            "format is \"har\"",
        ),
        ("", "empty file"),
        (
            "not json",
            "line 1: expected the tandem-capture header line",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        let error = CaptureReader::open(&path).err().unwrap().to_string();
        assert!(error.contains(expected), "{error}");
        assert!(error.contains("v9.jsonl"), "{error}");
    }
    let missing = CaptureReader::open(dir.path().join("nope")).err().unwrap();
    assert!(matches!(missing, LineError::Open { .. }), "{missing:?}");
    assert!(
        missing.to_string().contains("nope: cannot open"),
        "{missing}"
    );
}

#[test]
fn the_shipped_sample_capture_reads() {
    let reader = CaptureReader::open("captures/sample.jsonl").unwrap();
    assert_eq!(reader.header().format, "tandem-capture");
    let exchanges: Vec<Exchange> = reader.map(Result::unwrap).collect();
    assert_eq!(exchanges.len(), 48);
    assert!(exchanges.iter().all(|e| e.response.is_some()));
}
