//! Any bytes as a HAR file to import.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.har");
    std::fs::write(&path, data).unwrap();
    let _ = tandem::record::har::read(&path);
});
