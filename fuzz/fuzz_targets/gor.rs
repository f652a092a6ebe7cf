//! Any bytes as a GoReplay .gor file to import.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.gor");
    std::fs::write(&path, data).unwrap();
    let _ = tandem::record::gor::read(&path, 1 << 16);
});
