//! Bodies and headers a file states once: a results file holds, for most
//! exchanges, bodies it already holds (legacy's and new's answers alike
//! when they match, the same resource read again and again), and headers
//! it already holds (the same content type, server and date on answer after
//! answer). Writing each out, JSON-escaped, was a fifth to a third of the
//! collector's time at saturation for bodies (two profiles); once bodies
//! were repeated, escaping strings still cost it about 8,200 instructions
//! an exchange, most of them in header lists.
//!
//! A writer keeps the last bodies and headers it wrote in full, in a table
//! of each ([`BODY_SLOTS`], [`HEADER_SLOTS`]); one equal to a kept one is
//! written as a reference to it: `{"same": N}` for a body, `N` for a
//! header. One that later lines may repeat is written with its number,
//! `{"text": "...", "keep": N}` or `["name", "value", N]`, and a reader
//! keeps it in the same slot (`N % slots`), so both sides hold a bounded
//! number of bounded values, and a file is read in one pass, any prefix of
//! it (a crash's partial file) whole.
//!
//! A line that cannot be read (a damaged file) takes with it what it kept
//! past the damage, so the lines that repeat it cannot be read either: a
//! value is repeated only within [`REACH`] lines of the line that wrote it
//! in full, which bounds that loss. Every such line is an error naming it.
//! (A line that is not UTF-8 loses only the values its bad bytes are in:
//! the results reader parses it again with them replaced and
//! [`Repeats::forget_replaced`] drops those.)
//!
//! The tables in use are the calling thread's, set by [`with`] for the
//! length of one line: serde gives a `Serialize` no other context.

use std::cell::RefCell;
use std::hash::BuildHasher;

use bytes::Bytes;

use super::Header;

/// Bodies held at once, on each side.
pub const BODY_SLOTS: usize = 256;
/// Shorter bodies are written out: a reference would save little.
pub const MIN_KEPT: usize = 48;
/// Longer bodies are written out and not kept: a bound on memory.
pub const MAX_KEPT: usize = 64 << 10;
/// Headers held at once, on each side. Every header is kept, those that
/// never repeat (request ids) too, so the table turns over every few hundred
/// lines; one that repeats is then written out once more.
pub const HEADER_SLOTS: usize = 1024;
/// Longer headers (name and value) are written out and not kept.
pub const MAX_KEPT_HEADER: usize = 1 << 10;
/// Lines after the one that wrote a value in full within which it is
/// repeated; past them it is written in full again.
pub const REACH: u64 = 1024;

/// One side's kept bodies and headers: a writer's, which finds repeats, or
/// a reader's, which resolves them.
#[derive(Default)]
pub struct Repeats {
    bodies: Table<Bytes>,
    headers: Table<Header>,
    /// A writer's: the number of the header written at each place of the
    /// last lines (the first header of a line, the second...). Lines have
    /// one shape (the request's headers, then each answer's), and most
    /// headers are where they were a line before: checking that place
    /// first costs a comparison, where finding every header by its hash
    /// cost 1,832 instructions a request against the 2,547 its repeats
    /// saved from escaping (1,150 with this place checked first).
    at_place: Vec<u64>,
    /// The headers written so far on this line.
    place: usize,
    /// The line being written or read.
    line: u64,
}

/// Kept values of one kind, each in slot `number % slots`.
struct Table<T> {
    slots: Vec<Option<Kept<T>>>,
    /// A writer's: values by hash, to the number they were kept under.
    by_hash: foldhash::HashMap<u64, u64>,
    next: u64,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            by_hash: Default::default(),
            next: 0,
        }
    }
}

struct Kept<T> {
    number: u64,
    hash: u64,
    /// A writer's: the line that wrote it in full.
    line: u64,
    value: T,
}

/// How a writer writes a body or a header.
pub enum Noted {
    /// In full.
    Plain,
    /// In full, with this number, for later lines to repeat.
    Keep(u64),
    /// As a repeat of the value kept under this number.
    Same(u64),
}

thread_local! {
    static TABLE: RefCell<Option<Repeats>> = const { RefCell::new(None) };
}

/// Runs `f` (the writing or reading of one line) with `table` as this
/// thread's table of kept values. `line` is the line's number (counted from
/// any start, the same for writer and reader), named in a reader's errors.
pub fn with<R>(table: &mut Repeats, line: u64, f: impl FnOnce() -> R) -> R {
    table.line = line;
    table.place = 0;
    let taken = std::mem::take(table);
    TABLE.with_borrow_mut(|t| *t = Some(taken));
    let result = f();
    *table = TABLE
        .with_borrow_mut(Option::take)
        .expect("set above; f does not nest a table");
    result
}

fn hash_of(value: impl std::hash::Hash) -> u64 {
    foldhash::fast::FixedState::default().hash_one(value)
}

/// A writer's choice for `body`: written out plainly when no table is set.
pub fn note(body: &Bytes) -> Noted {
    if !(MIN_KEPT..=MAX_KEPT).contains(&body.len()) {
        return Noted::Plain;
    }
    TABLE.with_borrow_mut(|t| {
        t.as_mut().map_or(Noted::Plain, |t| {
            let line = t.line;
            t.bodies.note(line, BODY_SLOTS, hash_of(&body[..]), body)
        })
    })
}

/// A writer's choice for `header`: written out plainly when no table is set.
pub fn note_header(header: &Header) -> Noted {
    if header.0.len() + header.1.len() > MAX_KEPT_HEADER {
        return Noted::Plain;
    }
    TABLE.with_borrow_mut(|t| t.as_mut().map_or(Noted::Plain, |t| t.note_header(header)))
}

/// A reader keeps `body` under `number` (no table set: nothing to keep).
pub fn keep(number: u64, body: &Bytes) {
    TABLE.with_borrow_mut(|t| {
        if let Some(t) = t {
            let line = t.line;
            t.bodies.keep(line, BODY_SLOTS, number, body.clone());
        }
    })
}

/// A reader keeps `header` under `number`; an error where no table is set
/// (a capture, whose headers are pairs).
pub fn keep_header(number: u64, header: &Header) -> Result<(), String> {
    TABLE.with_borrow_mut(|t| {
        let Some(t) = t else {
            return Err(format!(
                "header: [{:?}, {:?}, {number}] is a header of a results file, where a capture's \
                 is [name, value]",
                header.0, header.1
            ));
        };
        let line = t.line;
        t.headers.keep(line, HEADER_SLOTS, number, header.clone());
        Ok(())
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
        t.bodies.get(BODY_SLOTS, number).cloned().ok_or_else(|| {
            format!(
                "body: {{\"same\": {number}}} repeats body {number}, which no line before \
                 line {} kept (that line could not be read, or the file was edited)",
                t.line
            )
        })
    })
}

/// The header kept under `number`, for a reader.
pub fn same_header(number: u64) -> Result<Header, String> {
    TABLE.with_borrow_mut(|t| {
        let Some(t) = t else {
            return Err(format!(
                "header: {number} repeats a header of an earlier line; read this file with a \
                 results reader"
            ));
        };
        t.headers.get(HEADER_SLOTS, number).cloned().ok_or_else(|| {
            format!(
                "header: {number} repeats header {number}, which no line before line {} kept \
                 (that line could not be read, or the file was edited)",
                t.line
            )
        })
    })
}

impl Repeats {
    /// A reader's: forgets what `line` kept with a U+FFFD in it, the mark
    /// of a byte that was not UTF-8 and was replaced.
    pub fn forget_replaced(&mut self, line: u64) {
        const MARK: &[u8] = "\u{FFFD}".as_bytes();
        let marked = |bytes: &[u8]| bytes.windows(MARK.len()).any(|w| w == MARK);
        self.bodies.forget(line, |body| marked(body));
        self.headers
            .forget(line, |h| marked(h.0.as_bytes()) || marked(h.1.as_bytes()));
    }

    fn note_header(&mut self, header: &Header) -> Noted {
        let place = self.place;
        self.place += 1;
        if let Some(&number) = self.at_place.get(place) {
            if self.headers.held(self.line, HEADER_SLOTS, number) == Some(header) {
                return Noted::Same(number);
            }
        }
        let hash = hash_of((header.0.as_str(), header.1.as_str()));
        let noted = self.headers.note(self.line, HEADER_SLOTS, hash, header);
        if let Noted::Same(number) | Noted::Keep(number) = noted {
            if place >= self.at_place.len() {
                self.at_place.resize(place + 1, u64::MAX);
            }
            self.at_place[place] = number;
        }
        noted
    }
}

impl<T: PartialEq + Clone> Table<T> {
    /// A writer's: the value kept under `number`, if a line may still
    /// repeat it.
    fn held(&self, line: u64, slots: usize, number: u64) -> Option<&T> {
        let kept = self.slots.get((number % slots as u64) as usize)?.as_ref()?;
        (kept.number == number && line.saturating_sub(kept.line) < REACH).then_some(&kept.value)
    }

    fn slot(&mut self, slots: usize, number: u64) -> usize {
        if self.slots.is_empty() {
            self.slots.resize_with(slots, || None);
        }
        (number % slots as u64) as usize
    }

    fn get(&mut self, slots: usize, number: u64) -> Option<&T> {
        let slot = self.slot(slots, number);
        match &self.slots[slot] {
            Some(kept) if kept.number == number => Some(&kept.value),
            _ => None,
        }
    }

    fn forget(&mut self, line: u64, damaged: impl Fn(&T) -> bool) {
        for slot in &mut self.slots {
            if slot
                .as_ref()
                .is_some_and(|k| k.line == line && damaged(&k.value))
            {
                *slot = None;
            }
        }
    }

    fn keep(&mut self, line: u64, slots: usize, number: u64, value: T) {
        let slot = self.slot(slots, number);
        self.slots[slot] = Some(Kept {
            number,
            hash: 0,
            line,
            value,
        });
    }

    fn note(&mut self, line: u64, slots: usize, hash: u64, value: &T) -> Noted {
        if let Some(&number) = self.by_hash.get(&hash) {
            let slot = self.slot(slots, number);
            if let Some(kept) = &self.slots[slot] {
                let near = line.saturating_sub(kept.line) < REACH;
                if kept.number == number && near && kept.value == *value {
                    return Noted::Same(number);
                }
            }
        }
        let number = self.next;
        self.next += 1;
        let slot = self.slot(slots, number);
        if let Some(old) = self.slots[slot].take() {
            if self.by_hash.get(&old.hash) == Some(&old.number) {
                self.by_hash.remove(&old.hash);
            }
        }
        self.by_hash.insert(hash, number);
        self.slots[slot] = Some(Kept {
            number,
            hash,
            line,
            value: value.clone(),
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

    fn header(name: &str, value: &str) -> Header {
        Header(name.into(), value.into())
    }

    #[test]
    fn a_repeated_header_is_written_once_and_read_back_whole() {
        let json = header("content-type", "application/json");
        let id = |n: u32| header("x-request-id", &format!("{n:016x}"));
        let mut writer = Repeats::default();
        let first = with(&mut writer, 0, || {
            serde_json::to_string(&[json.clone(), id(1), json.clone()]).unwrap()
        });
        assert_eq!(
            first,
            r#"[["content-type","application/json",0],["x-request-id","0000000000000001",1],0]"#
        );
        let second = with(&mut writer, 1, || {
            serde_json::to_string(&[id(2), json.clone()]).unwrap()
        });
        assert_eq!(second, r#"[["x-request-id","0000000000000002",2],0]"#);
        // Without a table (a capture), a header is a plain pair.
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"["content-type","application/json"]"#
        );

        let mut reader = Repeats::default();
        let read = |reader: &mut Repeats, line, text: &str| {
            with(reader, line, || serde_json::from_str::<Vec<Header>>(text))
        };
        let expected = vec![json.clone(), id(1), json.clone()];
        assert_eq!(read(&mut reader, 2, &first).unwrap(), expected);
        assert_eq!(read(&mut reader, 3, &second).unwrap(), vec![id(2), json]);
        let error = read(&mut Repeats::default(), 9, "[5]").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("which no line before line 9 kept"),
            "{error}"
        );
        let error = serde_json::from_str::<Header>("5").unwrap_err();
        assert!(error.to_string().contains("results reader"), "{error}");
        let error = serde_json::from_str::<Header>(r#"["a","b",5]"#).unwrap_err();
        assert!(
            error.to_string().contains("a header of a results file"),
            "{error}"
        );
        for bad in [r#"["a"]"#, r#"["a","b",1,2]"#] {
            assert!(serde_json::from_str::<Header>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_too_long_to_keep_is_written_out() {
        let long = header("cookie", &"c".repeat(MAX_KEPT_HEADER));
        let mut writer = Repeats::default();
        let text = with(&mut writer, 0, || {
            serde_json::to_string(&[long.clone(), long.clone()]).unwrap()
        });
        let plain = serde_json::to_string(&long).unwrap();
        assert_eq!(text, format!("[{plain},{plain}]"));
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
        let bodies: Vec<Body> = (0..=BODY_SLOTS)
            .map(|i| Body::from(format!("{i:060}").as_str()))
            .collect();
        for body in &bodies {
            write(&mut writer, &[body]);
        }
        // Body 0's slot now holds body BODY_SLOTS: body 0 is written out again.
        let again = write(&mut writer, &[&bodies[0]]);
        assert!(again.contains("\"keep\""), "{again}");
        let last = write(&mut writer, &[&bodies[BODY_SLOTS]]);
        assert!(last.contains("\"same\""), "{last}");
        // Nor is a body repeated past REACH lines from where it was written.
        let far = write_at(&mut writer, REACH, &[&bodies[BODY_SLOTS]]);
        assert!(far.contains("\"keep\""), "{far}");
        let near = write_at(&mut writer, REACH + 1, &[&bodies[BODY_SLOTS]]);
        assert!(near.contains("\"same\""), "{near}");
    }
}
