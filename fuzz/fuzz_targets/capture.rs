//! Any bytes as a capture file: the header checked, every line read as an
//! exchange and as an outline (what a replay reads), the trailer kept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem::capture::CaptureReader;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.jsonl");
    std::fs::write(&path, data).unwrap();
    if let Ok(reader) = CaptureReader::open(&path) {
        for exchange in reader.take(1_000) {
            let _ = exchange;
        }
    }
    if let Ok(mut reader) = CaptureReader::open(&path) {
        let mut n = 0;
        while let Some(outline) = reader.next_outline() {
            if let Ok(outline) = outline {
                let _ = outline.request();
                let _ = outline.response_text();
            }
            n += 1;
            if n == 1_000 {
                break;
            }
        }
        let _ = reader.trailer();
    }
});
