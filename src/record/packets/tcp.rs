//! TCP reassembly of one direction of a connection, by sequence number.
//!
//! Segments are put in order by their sequence numbers (never by ACKs):
//! retransmissions and overlaps are trimmed to the bytes not yet delivered,
//! segments that arrive early wait until the hole before them fills. When too
//! much waits, or the stream ends, the hole is declared a gap of known size
//! and delivery goes on, so a lost packet costs the message it hit and no
//! more. Sequence numbers wrap; positions are kept as 64-bit offsets.

use std::collections::BTreeMap;

/// Early bytes held at most, per direction, before a hole is given up on.
const MAX_WAITING: usize = 1 << 20;

/// What a stream delivers, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes, captured at the given time (µs).
    Data(&'a [u8], u64),
    /// This many bytes were never captured; time of the packet that showed it.
    Gap(u64, u64),
}

struct Early {
    data: Vec<u8>,
    wire_len: u32,
    ts: u64,
}

/// One direction's reassembly state.
#[derive(Default)]
pub struct Stream {
    /// Sequence number of the next byte to deliver, once known.
    next_seq: Option<u32>,
    /// The same position as a 64-bit offset from the first byte seen.
    next_pos: u64,
    /// Segments beyond a hole, by position.
    waiting: BTreeMap<u64, Early>,
    waiting_bytes: usize,
    /// Initial sequence number from a SYN, if seen.
    pub isn: Option<u32>,
    /// A FIN or RST was seen.
    pub closed: bool,
    /// Bytes given up as gaps.
    pub gap_bytes: u64,
    /// The furthest acknowledgment the receiver sent, and when.
    acked: Option<(u32, u64)>,
}

/// `a - b` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

impl Stream {
    /// A SYN with sequence number `seq` opens the stream.
    pub fn syn(&mut self, seq: u32) {
        self.isn = Some(seq);
        if self.next_seq.is_none() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// A segment: `data` as captured, `wire_len` its payload length on the
    /// wire (longer when the snap length cut it). Delivers what is now in
    /// order.
    pub fn segment(
        &mut self,
        seq: u32,
        data: &[u8],
        wire_len: u32,
        ts: u64,
        deliver: &mut dyn FnMut(Piece),
    ) {
        if wire_len == 0 {
            return;
        }
        let next_seq = *self.next_seq.get_or_insert(seq);
        let offset = seq_diff(seq, next_seq);
        let mut pos = self.next_pos as i64 + offset;
        let (mut data, mut wire_len) = (data, wire_len);
        if pos < 0 {
            // Starts before the first byte we picked up: keep only what follows.
            let cut = (-pos) as u64;
            if cut >= wire_len as u64 {
                return;
            }
            data = &data[(cut as usize).min(data.len())..];
            wire_len -= cut as u32;
            pos = 0;
        }
        let pos = pos as u64;
        if pos > self.next_pos {
            self.wait(pos, data, wire_len, ts);
            if self.waiting_bytes > MAX_WAITING {
                self.give_up_hole(deliver);
            }
            return;
        }
        self.deliver_at(pos, data, wire_len, ts, deliver);
        self.drain(deliver);
    }

    /// The receiver acknowledged up to `ack`. If that is past the start of
    /// data waiting beyond a hole, the receiver got the hole's bytes and the
    /// capture did not: the hole is a gap now, not after the wait limit.
    /// (Only with data waiting beyond it, so that an ACK captured ahead of a
    /// merely reordered segment declares nothing.)
    pub fn acknowledged(&mut self, ack: u32, ts: u64, deliver: &mut dyn FnMut(Piece)) {
        let Some(next_seq) = self.next_seq else {
            return;
        };
        if self.acked.is_none_or(|(a, _)| seq_diff(ack, a) > 0) {
            self.acked = Some((ack, ts));
        }
        let acked = self.next_pos as i64 + seq_diff(ack, next_seq);
        while let Some((&first, _)) = self.waiting.first_key_value() {
            if acked <= first as i64 {
                return;
            }
            self.give_up_hole(deliver);
        }
    }

    /// Declares as a gap every byte the receiver acknowledged that the
    /// capture does not hold. Called when the receiver's answer shows it had
    /// the whole message, so the missing tail was lost from the capture.
    pub fn gap_to_acknowledged(&mut self, deliver: &mut dyn FnMut(Piece)) {
        let (Some(next_seq), Some((ack, ts))) = (self.next_seq, self.acked) else {
            return;
        };
        let missing = seq_diff(ack, next_seq);
        if missing > 0 && self.waiting.is_empty() {
            self.gap_bytes += missing as u64;
            deliver(Piece::Gap(missing as u64, ts));
            self.advance_to(self.next_pos + missing as u64);
        }
        self.acknowledged(ack, ts, deliver);
    }

    /// The stream ends: whatever waits beyond a hole is delivered after a gap.
    pub fn finish(&mut self, deliver: &mut dyn FnMut(Piece)) {
        while !self.waiting.is_empty() {
            self.give_up_hole(deliver);
        }
    }

    fn wait(&mut self, pos: u64, data: &[u8], wire_len: u32, ts: u64) {
        let longer = self.waiting.get(&pos).is_none_or(|e| e.wire_len < wire_len);
        if longer {
            self.waiting_bytes += data.len();
            let early = Early {
                data: data.to_vec(),
                wire_len,
                ts,
            };
            if let Some(old) = self.waiting.insert(pos, early) {
                self.waiting_bytes -= old.data.len();
            }
        }
    }

    /// Delivers the part of a segment at `pos` (≤ next) that is new.
    fn deliver_at(
        &mut self,
        pos: u64,
        data: &[u8],
        wire_len: u32,
        ts: u64,
        deliver: &mut dyn FnMut(Piece),
    ) {
        let end = pos + wire_len as u64;
        if end <= self.next_pos {
            return; // a retransmission of delivered bytes
        }
        let skip = (self.next_pos - pos) as usize;
        if skip < data.len() {
            deliver(Piece::Data(&data[skip..], ts));
        }
        let captured_end = pos + data.len() as u64;
        let missing_from = captured_end.max(self.next_pos);
        if end > missing_from {
            self.gap_bytes += end - missing_from;
            deliver(Piece::Gap(end - missing_from, ts));
        }
        self.advance_to(end);
    }

    fn drain(&mut self, deliver: &mut dyn FnMut(Piece)) {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > self.next_pos {
                return;
            }
            let (pos, early) = entry.remove_entry();
            self.waiting_bytes -= early.data.len();
            self.deliver_at(pos, &early.data, early.wire_len, early.ts, deliver);
        }
    }

    fn give_up_hole(&mut self, deliver: &mut dyn FnMut(Piece)) {
        let Some((&pos, early)) = self.waiting.first_key_value() else {
            return;
        };
        if pos > self.next_pos {
            let missing = pos - self.next_pos;
            self.gap_bytes += missing;
            deliver(Piece::Gap(missing, early.ts));
            self.advance_to(pos);
        }
        self.drain(deliver);
    }

    fn advance_to(&mut self, pos: u64) {
        let step = pos - self.next_pos;
        self.next_pos = pos;
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(step as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(stream: &mut Stream, segments: &[(u32, &[u8])]) -> (Vec<u8>, u64) {
        let (mut bytes, mut gaps) = (Vec::new(), 0);
        for &(seq, data) in segments {
            stream.segment(seq, data, data.len() as u32, 0, &mut |p| match p {
                Piece::Data(d, _) => bytes.extend_from_slice(d),
                Piece::Gap(n, _) => gaps += n,
            });
        }
        stream.finish(&mut |p| match p {
            Piece::Data(d, _) => bytes.extend_from_slice(d),
            Piece::Gap(n, _) => gaps += n,
        });
        (bytes, gaps)
    }

    #[test]
    fn reorders_trims_overlaps_and_drops_duplicates() {
        let mut s = Stream::default();
        s.syn(1000);
        let segments: &[(u32, &[u8])] = &[
            (1007, b"world"),
            (1001, b"hello "),
            (1001, b"hello "),
            (1004, b"lo wo"),
            (1012, b"!"),
        ];
        assert_eq!(collect(&mut s, segments), (b"hello world!".to_vec(), 0));
    }

    #[test]
    fn wraps_around_sequence_space() {
        let mut s = Stream::default();
        s.syn(u32::MAX - 2);
        let segments: &[(u32, &[u8])] = &[(1, b"def"), (u32::MAX - 1, b"abc")];
        assert_eq!(collect(&mut s, segments), (b"abcdef".to_vec(), 0));
    }

    #[test]
    fn a_hole_that_never_fills_becomes_a_gap() {
        let mut s = Stream::default();
        let segments: &[(u32, &[u8])] = &[(50, b"abc"), (56, b"ghi")];
        assert_eq!(collect(&mut s, segments), (b"abcghi".to_vec(), 3));
        assert_eq!(s.gap_bytes, 3);
    }

    #[test]
    fn an_ack_past_waiting_data_turns_the_hole_into_a_gap() {
        let mut s = Stream::default();
        s.syn(0);
        let mut seen = Vec::new();
        s.segment(1, b"abc", 3, 0, &mut |p| seen.push(format!("{p:?}")));
        s.segment(7, b"ghi", 3, 0, &mut |p| seen.push(format!("{p:?}")));
        s.acknowledged(5, 0, &mut |p| seen.push(format!("{p:?}")));
        assert_eq!(
            seen.len(),
            1,
            "an ACK short of the waiting data proves nothing"
        );
        s.acknowledged(10, 0, &mut |p| seen.push(format!("{p:?}")));
        assert_eq!(seen[1..], ["Gap(3, 0)", "Data([103, 104, 105], 0)"]);
    }

    #[test]
    fn snap_length_cuts_are_gaps() {
        let mut s = Stream::default();
        let mut seen = Vec::new();
        s.segment(10, b"ab", 5, 0, &mut |p| seen.push(format!("{p:?}")));
        s.segment(15, b"cd", 2, 0, &mut |p| seen.push(format!("{p:?}")));
        assert_eq!(
            seen,
            ["Data([97, 98], 0)", "Gap(3, 0)", "Data([99, 100], 0)"]
        );
    }
}
