//! Ethernet frames through the packet assembler: TCP reassembly, then the
//! HTTP/1 parser. Input: frames, each a 2-byte length then its bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem::record::packets::{Assembler, AssemblyOptions};

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(AssemblyOptions {
        max_body: 1 << 16,
        ..AssemblyOptions::default()
    });
    let mut rest = data;
    let mut ts = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, after) = rest[2..].split_at(len);
        ts += 1_000;
        // DLT_EN10MB and DLT_RAW (IPv4/IPv6 without link layer).
        assembler.frame(ts, if ts % 3_000 == 0 { 101 } else { 1 }, frame);
        let _ = assembler.take_produced();
        rest = after;
    }
    let _ = assembler.finish();
});
