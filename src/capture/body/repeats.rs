//! Bodies a file states once: a results file holds, for most exchanges,
//! bodies it already holds (legacy's and new's answers alike when they
//! match, the same resource read again and again), and writing each one
//! out, JSON-escaped, was a fifth to a third of the collector's time at
//! saturation (two profiles). A writer keeps
//! the last [`SLOTS`] bodies it wrote in full; a body equal to one of them
//! is written as `{"same": N}`. A body that later lines may repeat is
//! written with its number, `{"text": "...", "keep": N}`, and a reader
//! keeps it in the same slot (`N % SLOTS`), so both sides hold at most
//! [`SLOTS`] bodies of at most [`MAX_KEPT`] bytes, and a file is read in
//! one pass, any prefix of it (a crash's partial file) whole.
//!
//! A line that cannot be read (a damaged file) takes with it the bodies it
//! kept, so the lines that repeat them cannot be read either: a body is
//! repeated only within [`REACH`] lines of the line that wrote it in full,
//! which bounds that loss. Every such line is an error naming it.
//!
//! The table in use is the calling thread's, set by [`with`] for the
//! length of one line: serde gives a `Serialize` no other context.

use std::cell::RefCell;
use std::hash::BuildHasher;

use bytes::Bytes;

/// Bodies held at once, on each side.
pub const SLOTS: usize = 256;
/// Shorter bodies are written out: a reference would save little.
pub const MIN_KEPT: usize = 48;
/// Longer bodies are written out and not kept: a bound on memory.
pub const MAX_KEPT: usize = 64 << 10;
/// Lines after the one that wrote a body in full within which it is
/// repeated; past them it is written in full again.
pub const REACH: u64 = 1024;

/// One side's kept bodies: a writer's, which finds repeats, or a reader's,
/// which resolves them.
#[derive(Default)]
pub struct Repeats {
    slots: Vec<Option<Kept>>,
    /// A writer's: bodies by hash, to the number they were kept under.
    by_hash: foldhash::HashMap<u64, u64>,
    next: u64,
    /// The line being written or read.
    line: u64,
}

struct Kept {
    number: u64,
    hash: u64,
    /// A writer's: the line that wrote it in full.
    line: u64,
    bytes: Bytes,
}

/// How a writer writes a body.
pub enum Noted {
    /// In full.
    Plain,
    /// In full, with this number, for later lines to repeat.
    Keep(u64),
    /// As a repeat of the body kept under this number.
    Same(u64),
}

thread_local! {
    static TABLE: RefCell<Option<Repeats>> = const { RefCell::new(None) };
}

/// Runs `f` (the writing or reading of one line) with `table` as this
/// thread's table of kept bodies. `line` is the line's number (counted from
/// any start, the same for writer and reader), named in a reader's errors.
pub fn with<R>(table: &mut Repeats, line: u64, f: impl FnOnce() -> R) -> R {
    table.line = line;
    let taken = std::mem::take(table);
    TABLE.with_borrow_mut(|t| *t = Some(taken));
    let result = f();
    *table = TABLE
        .with_borrow_mut(Option::take)
        .expect("set above; f does not nest a table");
    result
}

/// A writer's choice for `body`: written out plainly when no table is set.
pub fn note(body: &Bytes) -> Noted {
    if !(MIN_KEPT..=MAX_KEPT).contains(&body.len()) {
        return Noted::Plain;
    }
    TABLE.with_borrow_mut(|t| t.as_mut().map_or(Noted::Plain, |t| t.note(body)))
}

/// A reader keeps `body` under `number` (no table set: nothing to keep).
pub fn keep(number: u64, body: &Bytes) {
    TABLE.with_borrow_mut(|t| {
        if let Some(t) = t {
            let slot = t.slot(number);
            t.slots[slot] = Some(Kept {
                number,
                hash: 0,
                line: t.line,
                bytes: body.clone(),
            });
        }
    })
}

/// The body kept under `number`, for a reader.
pub fn same(number: u64) -> Result<Bytes, String> {
    TABLE.with_borrow_mut(|t| {
        let Some(t) = t else {
            return Err(format!(
                "body: {{\"same\": {number}}} repeats a body of an earlier line; read this file \
                 with a results reader"
            ));
        };
        let slot = t.slot(number);
        match &t.slots[slot] {
            Some(kept) if kept.number == number => Ok(kept.bytes.clone()),
            _ => Err(format!(
                "body: {{\"same\": {number}}} repeats body {number}, which no line before \
                 line {} kept (that line could not be read, or the file was edited)",
                t.line
            )),
        }
    })
}

impl Repeats {
    fn slot(&mut self, number: u64) -> usize {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        (number % SLOTS as u64) as usize
    }

    fn note(&mut self, body: &Bytes) -> Noted {
        let hash = foldhash::fast::FixedState::default().hash_one(&body[..]);
        if let Some(&number) = self.by_hash.get(&hash) {
            let slot = self.slot(number);
            if let Some(kept) = &self.slots[slot] {
                let near = self.line.saturating_sub(kept.line) < REACH;
                if kept.number == number && near && kept.bytes == *body {
                    return Noted::Same(number);
                }
            }
        }
        let number = self.next;
        self.next += 1;
        let slot = self.slot(number);
        if let Some(old) = self.slots[slot].take() {
            if self.by_hash.get(&old.hash) == Some(&old.number) {
                self.by_hash.remove(&old.hash);
            }
        }
        self.by_hash.insert(hash, number);
        self.slots[slot] = Some(Kept {
            number,
            hash,
            line: self.line,
            bytes: body.clone(),
        });
        Noted::Keep(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Body;

    fn write(table: &mut Repeats, bodies: &[&Body]) -> String {
        write_at(table, 0, bodies)
    }

    fn write_at(table: &mut Repeats, line: u64, bodies: &[&Body]) -> String {
        with(table, line, || serde_json::to_string(bodies).unwrap())
    }

    fn read(table: &mut Repeats, line: u64, json: &str) -> Result<Vec<Body>, String> {
        with(table, line, || {
            serde_json::from_str(json).map_err(|e| e.to_string())
        })
    }

    #[test]
    fn a_repeated_body_is_written_once_and_read_back_whole() {
        let long = Body::from("x".repeat(100).as_str());
        let other = Body(Bytes::from(vec![0xff; 60]));
        let short = Body::from("short");
        let mut writer = Repeats::default();
        let first = write(&mut writer, &[&long, &long, &short, &other]);
        assert_eq!(first.matches(&"x".repeat(100)).count(), 1, "{first}");
        assert!(first.contains(r#"{"same":0}"#) && first.contains(r#""keep":1}"#));
        let second = write(&mut writer, &[&other, &long]);
        assert_eq!(second, r#"[{"same":1},{"same":0}]"#);

        let mut reader = Repeats::default();
        let expected = vec![long.clone(), long.clone(), short.clone(), other.clone()];
        assert_eq!(read(&mut reader, 2, &first).unwrap(), expected);
        assert_eq!(read(&mut reader, 3, &second).unwrap(), vec![other, long]);
    }

    #[test]
    fn a_repeat_of_a_body_no_line_kept_is_an_error_naming_the_line() {
        let mut reader = Repeats::default();
        let error = read(&mut reader, 7, r#"[{"same":3}]"#).unwrap_err();
        assert!(
            error.contains("which no line before line 7 kept"),
            "{error}"
        );
        // Without a table, the error says how to read the file.
        let error = serde_json::from_str::<Body>(r#"{"same":3}"#).unwrap_err();
        assert!(error.to_string().contains("results reader"), "{error}");
    }

    #[test]
    fn the_writer_forgets_what_the_reader_cannot_hold() {
        let mut writer = Repeats::default();
        let bodies: Vec<Body> = (0..=SLOTS)
            .map(|i| Body::from(format!("{i:060}").as_str()))
            .collect();
        for body in &bodies {
            write(&mut writer, &[body]);
        }
        // Body 0's slot now holds body SLOTS: body 0 is written out again.
        let again = write(&mut writer, &[&bodies[0]]);
        assert!(again.contains("\"keep\""), "{again}");
        let last = write(&mut writer, &[&bodies[SLOTS]]);
        assert!(last.contains("\"same\""), "{last}");
        // Nor is a body repeated past REACH lines from where it was written.
        let far = write_at(&mut writer, REACH, &[&bodies[SLOTS]]);
        assert!(far.contains("\"keep\""), "{far}");
        let near = write_at(&mut writer, REACH + 1, &[&bodies[SLOTS]]);
        assert!(near.contains("\"same\""), "{near}");
    }
}
