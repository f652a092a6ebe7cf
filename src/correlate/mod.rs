//! Correlation: following the ids and tokens each stack hands out.
//!
//! A recorded order flow creates what it later reads: a login's token, a
//! cart's id, an order's id. Replayed as recorded, every later request
//! carries the recording's values, which neither stack issued, and both
//! answer 401 or 404. This module learns, from the capture alone, which
//! *places* of answers feed which places of later requests ([`learn`]),
//! and at replay each stack's own values are read from its own answers and
//! written into its own dependent requests ([`Bindings`]). The judge uses
//! the same links to treat two values that stand for the same recorded one
//! as equal (legacy's order 1042 and new's 7409284110012416001 are "the
//! same order").
//!
//! An answer produces a value when the value was not in its own request (an
//! answer that echoes the user name or the order id it was asked for
//! produces nothing). A short value counts only as coming from an answer of
//! the same session; a long token (one login's, used by many connections)
//! from any earlier answer. A link is kept for a consumer place when, for
//! at least three requests, its values came from that producer place and
//! vary from use to use like ids, each carried by one session or few (a
//! quantity that happens to equal an earlier answer's does not; small
//! numbers must hold almost everywhere), or are long tokens; of several
//! producer places feeding one consumer place, the one that fed it most. A value a request carried at a place
//! before any answer produced it is no link there (data that existed before
//! the recording). `[[correlate]]` rules in the rules file add
//! links learning cannot see.

mod bindings;
pub mod places;
mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bindings::Bindings;
pub use places::Place;

use crate::capture::CaptureReader;
use crate::diff::rules::{RoutePattern, RulesFile};
use crate::route::Route;

/// A link kept by learning fed at least this many requests...
const MIN_HITS: u64 = 3;
/// ... and this share of its consumer place's values that some earlier
/// answer produced (values nobody produced, such as reads of data older
/// than the recording, do not count: reads of orders the traffic created,
/// among reads of older ones, are a link).
const MIN_SHARE: f64 = 0.05;
/// A value shared by every use (one login for many connections) is still
/// followed when it is at least this long: a token, not a constant.
const LONG_TOKEN: usize = 16;
/// An id is used at most this many times on average by the requests that
/// follow it; a short value used more often is taken for a coincidence.
const IDS_USED_AT_MOST: u64 = 10;
/// Earlier producers remembered per value.
const PRODUCERS_KEPT: usize = 4;

/// `[[correlate]]`: a link learning cannot see (too few exchanges, a value
/// that looks constant).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateRule {
    /// Route pattern of the answers that produce the value, e.g. `"POST /api/login"`.
    pub producer: String,
    /// Where the value sits in their answers, e.g. `"$.token"`.
    pub from: Place,
    /// Route pattern of the requests that carry it, e.g. `"* /api/**"`.
    pub consumer: String,
    /// Where it sits in those requests, e.g. `"bearer"`.
    pub to: Place,
}

/// `[[time_shift]]`: a request field holding an absolute time, moved by the
/// time between the recording and the replay (a booking "for tomorrow"
/// stays for tomorrow).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeShift {
    /// Route pattern of the requests, e.g. `"POST /api/bookings"`.
    pub route: String,
    /// Where the time sits in them: an RFC 3339 string, or Unix seconds or
    /// milliseconds (a number or a string of digits).
    pub place: Place,
}

/// The rules of a rules file this stage reads.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// `[[correlate]]`.
    pub correlate: Vec<CorrelateRule>,
    /// `[[time_shift]]`.
    pub time_shift: Vec<TimeShift>,
}

/// One place of answers feeding one place of later requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Producer route, `METHOD /template`.
    pub producer: String,
    /// Where the value sits in the producer's answer.
    pub from: Place,
    /// Consumer route.
    pub consumer: String,
    /// Where it sits in the consumer's request.
    pub to: Place,
    /// Consumer requests whose value came from this producer place.
    pub hits: u64,
    /// Consumer requests whose value at that place some earlier answer
    /// produced.
    pub occurrences: u64,
    /// Written as a `[[correlate]]` rule rather than learned.
    pub written: bool,
}

/// A value a request carries that an earlier answer produced.
#[derive(Debug, Clone)]
pub struct Use {
    /// Where it sits in the request.
    pub place: Place,
    /// The recorded value, as matched (see [`places::key_of`]).
    pub recorded: String,
    /// The exchange whose answer produced it.
    pub producer: u64,
}

/// What learning found: the links, and per exchange what it produces and
/// consumes.
#[derive(Default)]
pub struct Correlation {
    /// The links in force, most used first.
    pub links: Vec<Link>,
    /// `[[correlate]]` rules that matched nothing, by how they are written.
    pub unused_rules: Vec<String>,
    produces: HashMap<u64, Vec<(Place, String)>>,
    consumes: HashMap<u64, Vec<Use>>,
    /// Per producer, how many times later requests use each value it
    /// produced.
    uses: HashMap<u64, Vec<(String, u32)>>,
    sessions: HashMap<u64, String>,
    /// Per producer route, the places of its answers that links follow.
    producer_places: HashMap<Route, Vec<Place>>,
    /// `[[time_shift]]` rules, and when the capture began (µs since the
    /// epoch): times move by the replay's start minus this.
    time_shifts: Vec<(RoutePattern, Place)>,
    recorded_at_us: u64,
}

impl std::fmt::Debug for Correlation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlation")
            .field("links", &self.links.len())
            .field("producers", &self.produces.len())
            .field("consumers", &self.consumes.len())
            .finish()
    }
}

impl Correlation {
    /// What exchange `id`'s answer produces that later requests use.
    pub fn produced_by(&self, id: u64) -> &[(Place, String)] {
        self.produces.get(&id).map_or(&[], Vec::as_slice)
    }

    /// How many times later requests use `recorded`, as exchange
    /// `producer`'s answer produced it.
    pub fn uses_of(&self, producer: u64, recorded: &str) -> u32 {
        self.uses
            .get(&producer)
            .and_then(|uses| uses.iter().find(|(v, _)| v == recorded))
            .map_or(0, |(_, n)| *n)
    }

    /// What exchange `id`'s request uses of earlier answers.
    pub fn used_by(&self, id: u64) -> &[Use] {
        self.consumes.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The session of a producing exchange.
    pub fn session_of(&self, id: u64) -> Option<&str> {
        self.sessions.get(&id).map(String::as_str)
    }

    /// The places of `route`'s answers that links follow.
    pub fn produced_at(&self, route: &Route) -> &[Place] {
        self.producer_places.get(route).map_or(&[], Vec::as_slice)
    }

    /// True when nothing is correlated or shifted.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.time_shifts.is_empty()
    }

    /// True when `[[time_shift]]` rules are in force.
    pub fn shifts_times(&self) -> bool {
        !self.time_shifts.is_empty()
    }

    /// The places of `route`'s requests that hold absolute times.
    pub fn times_in<'a>(&'a self, route: &'a Route) -> impl Iterator<Item = &'a Place> + 'a {
        self.time_shifts
            .iter()
            .filter(move |(pattern, _)| pattern.matches(route))
            .map(|(_, place)| place)
    }

    /// When the capture began, µs since the epoch.
    pub fn recorded_at_us(&self) -> u64 {
        self.recorded_at_us
    }

    /// The links as `[[correlate]]` rules, for review (`--write-rules`).
    pub fn as_rules(&self) -> Vec<CorrelateRule> {
        self.links
            .iter()
            .map(|l| CorrelateRule {
                producer: l.producer.clone(),
                from: l.from.clone(),
                consumer: l.consumer.clone(),
                to: l.to.clone(),
            })
            .collect()
    }
}

/// The `[[correlate]]` and `[[time_shift]]` rules of a rules file; errors
/// name the file and line.
pub fn rules_in(path: &Path) -> anyhow::Result<Written> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read rules file: {e}", path.display()))?;
    let file: RulesFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid rules file: {e}", path.display()))?;
    let patterns = file
        .correlate
        .iter()
        .flat_map(|r| [&r.producer, &r.consumer])
        .chain(file.time_shift.iter().map(|t| &t.route));
    for pattern in patterns {
        RoutePattern::parse(pattern)
            .map_err(|e| anyhow::anyhow!("{}: rule pattern {pattern:?}: {e}", path.display()))?;
    }
    Ok(Written {
        correlate: file.correlate,
        time_shift: file.time_shift,
    })
}

/// A value, place, route or session of the capture, by its number: learning
/// keys its maps by these, not by the texts.
type Id = u32;

/// Texts numbered in the order first seen.
#[derive(Default)]
struct Numbered {
    ids: foldhash::HashMap<Arc<str>, Id>,
    texts: Vec<Arc<str>>,
}

impl Numbered {
    /// The number of `text`, and whether it is new.
    fn id(&mut self, text: &str) -> (Id, bool) {
        if let Some(&id) = self.ids.get(text) {
            return (id, false);
        }
        let id = self.texts.len() as Id;
        let text: Arc<str> = Arc::from(text);
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        (id, true)
    }

    fn text(&self, id: Id) -> &Arc<str> {
        &self.texts[id as usize]
    }
}

/// A value by two 64-bit hashes of its text, with seeds of its own: learning
/// sees every value of the capture but follows few, and keeping all of them
/// as text, only to look them up, cost an allocation and a copy per
/// distinct value. Two values of a capture of ten million share a
/// fingerprint with a chance under 10^-24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Fingerprint(u64, u64);

struct Fingerprints(
    foldhash::fast::RandomState,
    foldhash::fast::SeedableRandomState,
);

/// The second hash's shared seed, unlike the first's (the process's random
/// one), so that the two hashes are not one function twice.
static SECOND_SEED: foldhash::SharedSeed = foldhash::SharedSeed::from_u64(0x7461_6e64_656d_2121);

impl Fingerprints {
    fn new() -> Fingerprints {
        Fingerprints(
            foldhash::fast::RandomState::default(),
            foldhash::fast::SeedableRandomState::with_seed(rand::random(), &SECOND_SEED),
        )
    }

    fn of(&self, text: &str) -> Fingerprint {
        use std::hash::BuildHasher;
        Fingerprint(self.0.hash_one(text), self.1.hash_one(text))
    }
}

/// What learning has numbered, with the place and route each number stands for.
#[derive(Default)]
struct Names {
    /// The values requests used, as some earlier answer produced them.
    values: Numbered,
    sessions: Numbered,
    places: Numbered,
    place: Vec<Place>,
    routes: Numbered,
    route: Vec<Route>,
    /// Reused for the text of each place looked up.
    key: String,
}

impl Names {
    fn place(&mut self, spot: scan::Spot<'_>) -> Id {
        spot.write_key(&mut self.key);
        let (id, new) = self.places.id(&self.key);
        if new {
            self.place.push(spot.place());
        }
        id
    }

    fn route(&mut self, request: &crate::capture::Request) -> Id {
        let template = crate::route::template(&request.target);
        let (id, new) = self.routes.id(&format!("{} {template}", request.method));
        if new {
            self.route.push(Route::of(&request.method, &request.target));
        }
        id
    }
}

/// An answer that produced a value: exchange, session, route and place.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Producer {
    id: u64,
    session: Id,
    route: Id,
    place: Id,
}

/// The latest producers of one value, oldest first: a request carrying the
/// value keeps a copy, so it is a fixed array, not a vector.
#[derive(Debug, Clone, Copy, Default)]
struct Producers {
    kept: [Producer; PRODUCERS_KEPT],
    len: usize,
}

impl Producers {
    fn push(&mut self, producer: Producer) {
        if self.len == PRODUCERS_KEPT {
            self.kept.copy_within(1.., 0);
            self.len -= 1;
        }
        self.kept[self.len] = producer;
        self.len += 1;
    }

    fn latest(&self) -> impl Iterator<Item = &Producer> {
        self.kept[..self.len].iter().rev()
    }
}

/// Producer route and place, consumer route and place.
type LinkKey = (Id, Id, Id, Id);

/// At most this many sessions are told apart per value: past it, the
/// value is everyone's.
const SESSIONS_KEPT: usize = 8;

#[derive(Default)]
struct Candidate {
    hits: u64,
    /// Distinct values seen, up to [`DISTINCT_KEPT`], each with the
    /// sessions that carried it (an id is one session's; a quantity of 1
    /// is everyone's).
    values: foldhash::HashMap<Id, Sessions>,
    longest: usize,
    /// Some value was not a small number.
    beyond_small: bool,
}

/// The first sessions that carried a value.
#[derive(Default)]
struct Sessions {
    kept: [Id; SESSIONS_KEPT],
    len: usize,
}

impl Sessions {
    fn insert(&mut self, session: Id) {
        if self.len < SESSIONS_KEPT && !self.kept[..self.len].contains(&session) {
            self.kept[self.len] = session;
            self.len += 1;
        }
    }
}

impl Candidate {
    /// Sessions that carried each value, on average.
    fn sessions_per_value(&self) -> f64 {
        let total: usize = self.values.values().map(|s| s.len).sum();
        total as f64 / self.values.len().max(1) as f64
    }
}

/// Links whose every value is a small number need this share of every
/// value their consumer place carried: a product id or a quantity equals a
/// young auto-increment's id by chance.
const SMALL_SHARE: f64 = 0.8;

/// Up to three digits: the values quantities, counts and a young
/// auto-increment share.
fn is_small_number(text: &str) -> bool {
    text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An id is carried by the session that obtained it, or a few: past this
/// many sessions per value on average, equal values are chance.
const SESSIONS_PER_ID: f64 = 1.5;

/// Distinct values counted per candidate link, at most.
const DISTINCT_KEPT: usize = 100_000;

/// A request value some earlier answers produced, resolved to one of them
/// once the links are chosen.
struct Pending {
    consumer: u64,
    route: Id,
    session: Id,
    place: Id,
    value: Id,
    producers: Producers,
}

/// Learns the links of `capture`, with the written rules added. Reads the
/// whole capture once; lines that cannot be read are left out here (the
/// replay reports them).
pub fn learn(capture: &Path, written: &Written) -> anyhow::Result<Correlation> {
    let reader = CaptureReader::open(capture)?;
    let recorded_at_us = reader.header().started_at_unix_us;
    learn_exchanges(reader.flatten(), recorded_at_us, written)
}

/// Learns the links of `exchanges`, in recorded order, with the written
/// rules added: [`learn`] over a capture, or shadowing over what it served
/// in its warm-up. `recorded_at_us` is when they began (Unix µs).
pub fn learn_exchanges(
    exchanges: impl IntoIterator<Item = crate::capture::Exchange>,
    recorded_at_us: u64,
    written: &Written,
) -> anyhow::Result<Correlation> {
    let time_shifts = written
        .time_shift
        .iter()
        .map(|t| Ok((RoutePattern::parse(&t.route)?, t.place.clone())))
        .collect::<anyhow::Result<_>>()?;
    let mut learning = Learning::new(&written.correlate)?;
    for exchange in exchanges {
        learning.exchange(&exchange);
    }
    Ok(learning.into_correlation(time_shifts, recorded_at_us))
}

/// What learning has seen of the exchanges so far.
struct Learning<'r> {
    rules: &'r [CorrelateRule],
    patterns: Vec<(RoutePattern, RoutePattern)>,
    rule_used: Vec<bool>,
    names: Names,
    scanner: scan::Scanner,
    fingerprints: Fingerprints,
    /// Per value, its latest producers.
    produced: foldhash::HashMap<Fingerprint, Producers>,
    /// Values a consumer place carried before any answer produced them: no
    /// link there (the product id a client typed is not the cart id an
    /// answer later happens to share). Value, route, place.
    preexisting: foldhash::HashSet<(Fingerprint, Id, Id)>,
    /// Per consumer place (route, place): how many values it carried.
    carried: foldhash::HashMap<(Id, Id), u64>,
    candidates: foldhash::HashMap<LinkKey, Candidate>,
    pending: Vec<Pending>,
    /// The current exchange's values: place, value, and for a request's
    /// the value's text in `texts`.
    found: Vec<(Id, Fingerprint, std::ops::Range<usize>)>,
    texts: String,
    /// Values the current request carried: an answer holding one of them
    /// echoes it rather than issuing it.
    asked: foldhash::HashSet<Fingerprint>,
}

impl<'r> Learning<'r> {
    fn new(rules: &'r [CorrelateRule]) -> anyhow::Result<Learning<'r>> {
        let patterns = rules
            .iter()
            .map(|r| {
                Ok((
                    RoutePattern::parse(&r.producer)?,
                    RoutePattern::parse(&r.consumer)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Learning {
            rules,
            patterns,
            rule_used: vec![false; rules.len()],
            names: Names::default(),
            scanner: scan::Scanner::default(),
            fingerprints: Fingerprints::new(),
            produced: Default::default(),
            preexisting: Default::default(),
            carried: Default::default(),
            candidates: Default::default(),
            pending: Vec::new(),
            found: Vec::new(),
            texts: String::new(),
            asked: Default::default(),
        })
    }

    fn exchange(&mut self, exchange: &crate::capture::Exchange) {
        let route = self.names.route(&exchange.request);
        let session = self.names.sessions.id(&exchange.session).0;
        self.found.clear();
        self.asked.clear();
        self.texts.clear();
        let (names, found, texts) = (&mut self.names, &mut self.found, &mut self.texts);
        let fingerprints = &self.fingerprints;
        self.scanner.request(&exchange.request, &mut |spot, leaf| {
            let start = texts.len();
            texts.push_str(leaf.text);
            let text = start..texts.len();
            found.push((names.place(spot), fingerprints.of(leaf.text), text));
        });
        for i in 0..self.found.len() {
            let (place, value, _) = self.found[i];
            if exchange.response.is_some() {
                self.asked.insert(value);
            }
            self.consumed(exchange.id, (route, session, place), value, i);
        }
        let Some(response) = &exchange.response else {
            return;
        };
        self.found.clear();
        let (names, found) = (&mut self.names, &mut self.found);
        let fingerprints = &self.fingerprints;
        self.scanner
            .answer(&response.headers, &response.body, &mut |spot, leaf| {
                found.push((names.place(spot), fingerprints.of(leaf.text), 0..0));
            });
        for &(place, value, _) in &self.found {
            if self.asked.contains(&value) {
                // An echo of the request, not a value the stack issued.
                continue;
            }
            self.produced.entry(value).or_default().push(Producer {
                id: exchange.id,
                session,
                route,
                place,
            });
        }
    }

    /// Request `consumer` of `route` and `session` carried `value` at
    /// `place`, the request's `found`-th value.
    fn consumed(
        &mut self,
        consumer: u64,
        (route, session, place): (Id, Id, Id),
        value: Fingerprint,
        found: usize,
    ) {
        *self.carried.entry((route, place)).or_default() += 1;
        let here = (value, route, place);
        if self.preexisting.contains(&here) {
            return;
        }
        let Some(&producers) = self.produced.get(&value) else {
            self.preexisting.insert(here);
            return;
        };
        let text = &self.texts[self.found[found].2.clone()];
        // The latest producer of the same session; for a token, else the
        // latest of any (one session obtained it, others use it). A short
        // value another session produced is no evidence.
        let own = producers.latest().find(|p| p.session == session);
        let any = producers.latest().next();
        let Some(&producer) = own.or(any.filter(|_| text.len() >= LONG_TOKEN)) else {
            return;
        };
        let link: LinkKey = (producer.route, producer.place, route, place);
        let value = self.names.values.id(text).0;
        let candidate = self.candidates.entry(link).or_default();
        candidate.hits += 1;
        let text = self.names.values.text(value);
        candidate.longest = candidate.longest.max(text.len());
        candidate.beyond_small |= !is_small_number(text);
        if candidate.values.len() < DISTINCT_KEPT || candidate.values.contains_key(&value) {
            candidate.values.entry(value).or_default().insert(session);
        }
        self.mark_rules(&link);
        self.pending.push(Pending {
            consumer,
            route,
            session,
            place,
            value,
            producers,
        });
    }

    /// Marks the `[[correlate]]` rules `link` matches as used.
    fn mark_rules(&mut self, link: &LinkKey) {
        for (i, rule) in self.rules.iter().enumerate() {
            if !self.rule_used[i] && self.names.matches(rule, &self.patterns[i], link) {
                self.rule_used[i] = true;
            }
        }
    }

    fn into_correlation(
        self,
        time_shifts: Vec<(RoutePattern, Place)>,
        recorded_at_us: u64,
    ) -> Correlation {
        let kept = select_links(
            &self.candidates,
            &self.carried,
            self.rules,
            &self.patterns,
            &self.names,
        );
        let names = &self.names;
        let mut correlation = Correlation {
            time_shifts,
            recorded_at_us,
            unused_rules: self
                .rules
                .iter()
                .zip(&self.rule_used)
                .filter(|(_, used)| !**used)
                .map(|(r, _)| {
                    format!(
                        "[[correlate]] {} {} -> {} {}: matched no exchange",
                        r.producer, r.from, r.consumer, r.to
                    )
                })
                .collect(),
            ..Correlation::default()
        };
        let by_consumer: foldhash::HashMap<(Id, Id), LinkKey> =
            kept.iter().map(|(k, _)| ((k.2, k.3), *k)).collect();
        for p in &self.pending {
            let Some(link) = by_consumer.get(&(p.route, p.place)) else {
                continue;
            };
            // The latest producer at the link's place, of the same session first.
            let at_link = |q: &&Producer| q.route == link.0 && q.place == link.1;
            let Some(producer) = p
                .producers
                .latest()
                .filter(at_link)
                .find(|q| q.session == p.session)
                .or_else(|| p.producers.latest().find(at_link))
            else {
                continue;
            };
            correlation.record_use(names, p, producer, link.1);
        }
        let mut links: Vec<Link> = kept.into_iter().map(|(_, link)| link).collect();
        links.sort_by(|a, b| {
            b.hits
                .cmp(&a.hits)
                .then_with(|| (&a.consumer, &a.to).cmp(&(&b.consumer, &b.to)))
        });
        for link in &links {
            let Some(&id) = names.routes.ids.get(link.producer.as_str()) else {
                continue;
            };
            let route = names.route[id as usize].clone();
            let places = correlation.producer_places.entry(route).or_default();
            if !places.contains(&link.from) {
                places.push(link.from.clone());
            }
        }
        correlation.links = links;
        correlation
    }
}

impl Names {
    /// True when `rule` names `link`'s places and its routes match the rule's.
    fn matches(
        &self,
        rule: &CorrelateRule,
        (producer, consumer): &(RoutePattern, RoutePattern),
        link: &LinkKey,
    ) -> bool {
        rule.from == self.place[link.1 as usize]
            && rule.to == self.place[link.3 as usize]
            && producer.matches(&self.route[link.0 as usize])
            && consumer.matches(&self.route[link.2 as usize])
    }
}

impl Correlation {
    /// Request `p`'s value came from `producer`'s answer at place `from`.
    fn record_use(&mut self, names: &Names, p: &Pending, producer: &Producer, from: Id) {
        let recorded = names.values.text(p.value);
        let from = &names.place[from as usize];
        let produces = self.produces.entry(producer.id).or_default();
        if !produces
            .iter()
            .any(|(place, v)| place == from && **v == **recorded)
        {
            produces.push((from.clone(), recorded.to_string()));
        }
        self.sessions
            .entry(producer.id)
            .or_insert_with(|| names.sessions.text(producer.session).to_string());
        let uses = self.uses.entry(producer.id).or_default();
        match uses.iter_mut().find(|(v, _)| **v == **recorded) {
            Some((_, n)) => *n += 1,
            None => uses.push((recorded.to_string(), 1)),
        }
        self.consumes.entry(p.consumer).or_default().push(Use {
            place: names.place[p.place as usize].clone(),
            recorded: recorded.to_string(),
            producer: producer.id,
        });
    }
}

/// For each consumer place, the producer place that fed it most, when it
/// holds across most of its occurrences (or a rule names it).
fn select_links(
    candidates: &foldhash::HashMap<LinkKey, Candidate>,
    carried: &foldhash::HashMap<(Id, Id), u64>,
    rules: &[CorrelateRule],
    patterns: &[(RoutePattern, RoutePattern)],
    names: &Names,
) -> Vec<(LinkKey, Link)> {
    // A token is evidence wherever it is used: a login's token feeding the
    // bearer place of many routes is one link, even where one route alone
    // saw it too rarely to tell.
    let mut tokens: HashMap<(Id, Id, Id), u64> = HashMap::new();
    for (key, candidate) in candidates {
        if candidate.longest >= LONG_TOKEN {
            *tokens.entry((key.0, key.1, key.3)).or_default() += candidate.hits;
        }
    }
    // Where a producer's value feeds a request at one place every time, a
    // small number equal to it at another place of the same requests only
    // some of the time is chance (the cart id 1 in `cart_id` and a `qty`
    // of 1 beside it).
    let carried_at = |key: &LinkKey| carried.get(&(key.2, key.3)).copied().unwrap_or(0);
    let perfect: HashSet<(Id, Id, Id)> = candidates
        .iter()
        .filter(|(key, c)| c.hits >= MIN_HITS && c.hits == carried_at(key))
        .map(|(key, _)| (key.0, key.1, key.2))
        .collect();
    // Per consumer place, by its texts so that ties fall the same way
    // from run to run.
    let mut best: BTreeMap<(&str, &Place), (LinkKey, &Candidate, bool)> = BTreeMap::new();
    for (key, candidate) in candidates {
        let chance = !candidate.beyond_small
            && candidate.hits < carried_at(key)
            && perfect.contains(&(key.0, key.1, key.2));
        let written = rules
            .iter()
            .zip(patterns)
            .any(|(rule, patterns)| names.matches(rule, patterns, key));
        // Ids vary from use to use (a few uses each); a token may be used
        // many times, but is long; a small number reused everywhere is a
        // coincidence.
        let distinct = candidate.values.len() as u64;
        let varies = candidate.longest >= LONG_TOKEN
            || (distinct >= 2
                && distinct * IDS_USED_AT_MOST >= candidate.hits
                && candidate.sessions_per_value() <= SESSIONS_PER_ID);
        let long = candidate.longest >= LONG_TOKEN;
        let seen = carried_at(key);
        let token = long
            && tokens
                .get(&(key.0, key.1, key.3))
                .is_some_and(|&hits| hits >= MIN_HITS);
        // Small numbers (an auto-increment's first ids, quantities) equal
        // each other by chance: they must hold almost everywhere.
        let share = if candidate.beyond_small {
            MIN_SHARE
        } else {
            SMALL_SHARE
        };
        let learned = token
            || (!chance
                && candidate.hits >= MIN_HITS
                && candidate.hits as f64 >= share * seen as f64
                && varies);
        if !(learned || written) {
            continue;
        }
        let consumer = (&**names.routes.text(key.2), &names.place[key.3 as usize]);
        let slot = best.entry(consumer).or_insert((*key, candidate, written));
        let better = (written, candidate.hits, names.link_order(key))
            > (slot.2, slot.1.hits, names.link_order(&slot.0));
        if better {
            *slot = (*key, candidate, written);
        }
    }
    best.into_values()
        .map(|(key, candidate, written)| {
            let link = Link {
                producer: names.routes.text(key.0).to_string(),
                from: names.place[key.1 as usize].clone(),
                consumer: names.routes.text(key.2).to_string(),
                to: names.place[key.3 as usize].clone(),
                hits: candidate.hits,
                occurrences: carried_at(&key),
                written,
            };
            (key, link)
        })
        .collect()
}

impl Names {
    /// Of two producer places feeding one consumer place equally often, the
    /// one whose texts sort first wins: the same link every run.
    fn link_order(&self, key: &LinkKey) -> std::cmp::Reverse<(&str, &Place)> {
        std::cmp::Reverse((&**self.routes.text(key.0), &self.place[key.1 as usize]))
    }
}
