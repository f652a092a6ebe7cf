//! One direction of a connection through the HTTP/1 parser, fed in pieces
//! as a capture delivers them, with a hole where the first byte says.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tandem::record::packets::http1::{Parser, Side};

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let side = if control & 1 == 0 { Side::Request } else { Side::Response };
    let mut parser = Parser::new(side, 1 << 16);
    if side == Side::Response {
        parser.expect_response_to(if control & 2 == 0 { "GET" } else { "HEAD" }, control & 4 != 0);
    }
    let (mut out, mut trouble) = (Vec::new(), Vec::new());
    let piece = usize::from(control >> 3).max(1);
    for (i, chunk) in bytes.chunks(piece).enumerate() {
        if i == 3 && control & 0x80 != 0 {
            parser.gap(chunk.len() as u64, &mut out, &mut trouble);
            continue;
        }
        parser.feed(chunk, i as u64, &mut out, &mut trouble);
    }
    parser.close(control & 0x40 != 0, &mut out, &mut trouble);
});
