//! Effects of both stacks tied to their exchanges and compared: how many of
//! each kind each stack produced per exchange, and, pair by pair, their
//! bodies under the answers' rules, with the ids each stack issued mapped
//! to the place in its own answer that issued them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Effect, STACKS};
use crate::capture::{Body, Header, Response};
use crate::diff::rules::RuleSet;
use crate::diff::Differ;
use crate::results::ExchangeResult;
use crate::route::Route;

/// How long after its answer an exchange may still be the cause of an
/// effect that names none: effects sent once the answer is out (by a
/// queue's consumer, say) come a little after it; a longer slack would
/// make more windows overlap.
pub const WINDOW_SLACK: std::time::Duration = std::time::Duration::from_millis(100);

/// Examples kept per group.
const EXAMPLES: usize = 3;

/// What the stacks did besides answering, and where they differ: the
/// `effects` object of report.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectsReport {
    /// Where effects were collected.
    pub sources: Vec<String>,
    /// Effects collected, per stack.
    pub collected: EffectSides,
    /// Effects tied to the exchange that caused them.
    pub tied: u64,
    /// Of the tied, those tied by the time they arrived (the one exchange
    /// of their stack in flight then) rather than by a `traceparent`.
    #[serde(default)]
    pub by_window: u64,
    /// Of the tied, those tied by an id they carry: the latest exchange
    /// sent before them whose answer holds it.
    #[serde(default)]
    pub by_id: u64,
    /// Effects that could not be tied: compared as a whole, by kind.
    pub untied: u64,
    /// Tied effects that arrived more than the quiet period after their
    /// exchange's answer (still compared).
    pub late: u64,
    /// The quiet period, milliseconds.
    pub quiet_ms: u64,
    /// Exchanges that caused an effect on either stack.
    pub exchanges: u64,
    /// Of which every effect was alike on both stacks.
    pub matched: u64,
    /// Differences found: a kind produced a different number of times, a
    /// field of a pair that differs, untied effects of a kind in different
    /// numbers. What `effects.mismatched` gates on.
    pub mismatched: u64,
    /// The differences grouped by exchange route, effect kind and what
    /// differs, most frequent first.
    pub mismatch_groups: Vec<EffectGroup>,
}

/// A count per stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectSides {
    /// The legacy stack's.
    pub legacy: u64,
    /// The new stack's.
    pub new: u64,
}

/// One kind of difference in effects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectGroup {
    /// The route of the exchanges that caused them, or `(untied)`.
    pub route: String,
    /// The effect's kind, e.g. `webhook POST /hooks order.paid`.
    pub kind: String,
    /// What differs: `count` (produced a different number of times) or a
    /// mismatch kind and path of the bodies (`value $.total_cents`).
    pub what: String,
    /// Occurrences.
    pub count: u64,
    /// The first few.
    pub examples: Vec<EffectExample>,
}

/// One occurrence of an effect difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectExample {
    /// The exchange that caused it; absent for untied effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_id: Option<u64>,
    /// What legacy did: a count, a value or a body.
    pub legacy: Option<String>,
    /// What new did.
    pub new: Option<String>,
}

type Key = (u32, u32, u64);

impl EffectsReport {
    /// One line for people: `side effects: 24 by legacy, 25 by new (24
    /// tied to their exchange, 0 late); 1 difference`.
    pub fn describe(&self) -> String {
        format!(
            "side effects: {} by legacy, {} by new ({} tied to their exchange, {} untied, {} late); \
             {} exchanges caused some, {} alike; {} difference{}",
            self.collected.legacy,
            self.collected.new,
            self.tied,
            self.untied,
            self.late,
            self.exchanges,
            self.matched,
            self.mismatched,
            if self.mismatched == 1 { "" } else { "s" }
        )
    }

    /// Shards' effects as one run's: counts added up, groups merged by
    /// route, kind and what differs (the first examples kept); `None` when
    /// no shard collected any.
    pub fn merge<'a>(reports: impl Iterator<Item = &'a EffectsReport>) -> Option<EffectsReport> {
        let mut merged: Option<EffectsReport> = None;
        let mut groups = Groups::default();
        for r in reports {
            let m = merged.get_or_insert_with(|| EffectsReport {
                sources: r.sources.clone(),
                quiet_ms: r.quiet_ms,
                ..EffectsReport::default()
            });
            m.collected.legacy += r.collected.legacy;
            m.collected.new += r.collected.new;
            m.tied += r.tied;
            m.untied += r.untied;
            m.by_window += r.by_window;
            m.by_id += r.by_id;
            m.late += r.late;
            m.exchanges += r.exchanges;
            m.matched += r.matched;
            m.mismatched += r.mismatched;
            for g in &r.mismatch_groups {
                let key = (g.route.clone(), g.kind.clone(), g.what.clone());
                let (count, examples) = groups.by_key.entry(key).or_default();
                *count += g.count;
                let room = EXAMPLES.saturating_sub(examples.len());
                examples.extend(g.examples.iter().take(room).cloned());
            }
        }
        let mut merged = merged?;
        merged.mismatch_groups = groups.finish();
        Some(merged)
    }
}

/// An exchange's side of the comparison: its route, each stack's answer
/// body and when each stack's answer was complete.
struct Caused {
    route: Route,
    answers: [Option<Value>; 2],
    answered_unix_us: [u64; 2],
}

/// Ties `effects` to the exchanges of `results` (a run started at
/// `started_at_unix_us`) and compares them under `rules`; also returns the
/// rules that applied to no effect (a rule is unused only if the answers'
/// differ did not use it either).
pub fn judge<I: Iterator<Item = ExchangeResult>>(
    mut effects: Vec<Effect>,
    results: impl Fn() -> I,
    started_at_unix_us: u64,
    rules: RuleSet,
    quiet: std::time::Duration,
) -> (EffectsReport, Vec<String>) {
    let mut report = EffectsReport {
        quiet_ms: quiet.as_millis() as u64,
        ..EffectsReport::default()
    };
    for effect in &effects {
        match effect.stack {
            0 => report.collected.legacy += 1,
            _ => report.collected.new += 1,
        }
    }
    (report.by_window, report.by_id) =
        tie_untraced(&mut effects, results(), started_at_unix_us, quiet);
    let wanted: std::collections::HashSet<Key> =
        effects.iter().filter_map(|e| e.exchange).collect();
    let mut caused: HashMap<Key, Caused> = HashMap::new();
    for result in results() {
        let key = (result.pass, result.copy, result.id);
        if wanted.contains(&key) {
            caused.insert(key, caused_by(&result, started_at_unix_us));
        }
    }
    let mut tied: BTreeMap<Key, Vec<Effect>> = BTreeMap::new();
    let mut untied = Vec::new();
    for effect in effects {
        match effect.exchange.filter(|k| caused.contains_key(k)) {
            Some(key) => {
                report.tied += 1;
                let answered = caused[&key].answered_unix_us[effect.stack.min(1)];
                if effect.at_unix_us > answered + quiet.as_micros() as u64 {
                    report.late += 1;
                }
                tied.entry(key).or_default().push(effect);
            }
            None => untied.push(effect),
        }
    }
    report.untied = untied.len() as u64;
    let mut groups = Groups::default();
    let mut differ = Differ::new(rules);
    for (key, effects) in tied {
        report.exchanges += 1;
        let before = groups.found;
        compare_exchange(&caused[&key], key.2, effects, &mut differ, &mut groups);
        if groups.found == before {
            report.matched += 1;
        }
    }
    compare_untied(untied, &mut groups);
    report.mismatched = groups.found;
    report.mismatch_groups = groups.finish();
    (report, differ.unused_rules())
}

/// Ties each effect that names no exchange: first to the one exchange of
/// its stack in flight when it arrived (sent, to answered plus a short
/// slack: the quiet period, at most [`WINDOW_SLACK`]); failing that (none,
/// or several at once), to the latest exchange of its stack sent before it
/// arrived whose answer holds an id the effect carries (the exchange that
/// created or last touched that entity). Otherwise it stays untied.
/// Returns how many were tied by window and by id.
fn tie_untraced(
    effects: &mut [Effect],
    results: impl Iterator<Item = ExchangeResult>,
    started_at_unix_us: u64,
    quiet: std::time::Duration,
) -> (u64, u64) {
    if effects.iter().all(|e| e.exchange.is_some()) {
        return (0, 0);
    }
    let slack = quiet.min(WINDOW_SLACK).as_micros() as u64;
    // Only the ids some untraced effect carries are looked for in the
    // answers: the index stays the size of the effects, not of the run.
    let wanted: std::collections::HashSet<String> = effects
        .iter()
        .filter(|e| e.exchange.is_none())
        .flat_map(|e| ids_in(e.body.bytes(), true))
        .collect();
    // Per stack, each exchange's window, (from, to, exchange), and the
    // exchanges whose answer holds each id, (sent, exchange).
    let mut windows: [Vec<(u64, u64, Key)>; 2] = Default::default();
    let mut holders: [HashMap<String, Vec<(u64, Key)>>; 2] = Default::default();
    for result in results {
        let due = started_at_unix_us + result.scheduled_us;
        let key = (result.pass, result.copy, result.id);
        for (stack, attempt) in [&result.legacy, &result.new].into_iter().enumerate() {
            let Some(answer) = &attempt.response else {
                continue;
            };
            let sent = due + attempt.lag_us;
            windows[stack].push((sent, sent + answer.latency_us + slack, key));
            if wanted.is_empty() {
                continue;
            }
            for id in ids_in(answer.body.bytes(), false) {
                if wanted.contains(&id) {
                    holders[stack].entry(id).or_default().push((sent, key));
                }
            }
        }
    }
    for stack in &mut windows {
        stack.sort_unstable();
    }
    let longest: [u64; 2] = [0, 1].map(|s| windows[s].iter().map(|w| w.1 - w.0).max().unwrap_or(0));
    let (mut by_window, mut by_id) = (0, 0);
    for effect in effects.iter_mut().filter(|e| e.exchange.is_none()) {
        let (stack, at) = (effect.stack.min(1), effect.at_unix_us);
        let open = &windows[stack];
        let begun = open.partition_point(|w| w.0 <= at);
        let mut candidates = open[..begun]
            .iter()
            .rev()
            .take_while(|w| w.0 + longest[stack] >= at)
            .filter(|w| w.1 >= at);
        if let (Some(only), None) = (candidates.next(), candidates.next()) {
            effect.exchange = Some(only.2);
            by_window += 1;
            continue;
        }
        let latest = ids_in(effect.body.bytes(), true)
            .iter()
            .filter_map(|id| holders[stack].get(id))
            .flatten()
            .filter(|(sent, _)| *sent <= at)
            .max();
        if let Some((_, key)) = latest {
            effect.exchange = Some(*key);
            by_id += 1;
        }
    }
    (by_window, by_id)
}

/// The ids of a JSON body (see [`id_of`]); with `named`, only the values
/// of id fields (an effect's amount of 1250 is no reason to tie it to an
/// answer that mentions 1250). None if it is not JSON.
fn ids_in(body: &[u8], named: bool) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    leaves(&value, String::new(), &mut |path, leaf| {
        if named && !is_id_key(last_key(&path)) {
            return;
        }
        ids.extend(id_of(leaf));
    });
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn caused_by(result: &ExchangeResult, started_at_unix_us: u64) -> Caused {
    let due = started_at_unix_us + result.scheduled_us;
    let side = |a: &crate::results::Attempt| {
        let answer = a.response.as_ref();
        (
            answer.and_then(|r| serde_json::from_slice(r.body.bytes()).ok()),
            due + a.lag_us + answer.map_or(0, |r| r.latency_us),
        )
    };
    let (legacy, legacy_at) = side(&result.legacy);
    let (new, new_at) = side(&result.new);
    Caused {
        route: Route::of(&result.request.method, &result.request.target),
        answers: [legacy, new],
        answered_unix_us: [legacy_at, new_at],
    }
}

/// One exchange's effects: per kind, the numbers each stack produced, then
/// each pair's bodies in the order they came.
fn compare_exchange(
    caused: &Caused,
    id: u64,
    effects: Vec<Effect>,
    differ: &mut Differ,
    groups: &mut Groups,
) {
    let mut by_kind: BTreeMap<String, [Vec<Effect>; 2]> = BTreeMap::new();
    // The route whose rules apply to each kind's bodies: its call's.
    let mut by_kind_route: HashMap<String, Route> = HashMap::new();
    for effect in effects {
        let stack = effect.stack.min(1);
        by_kind_route
            .entry(effect.kind.clone())
            .or_insert_with(|| Route::of(&effect.method, &effect.target));
        by_kind.entry(effect.kind.clone()).or_default()[stack].push(effect);
    }
    let route = caused.route.to_string();
    for (kind, [mut legacy, mut new]) in by_kind {
        if legacy.len() != new.len() {
            groups.add(
                (&route, &kind, "count"),
                EffectExample {
                    exchange_id: Some(id),
                    legacy: Some(times(legacy.len())),
                    new: Some(times(new.len())),
                },
            );
        }
        // Order between entities is free (two rows written in either order
        // are alike); within one entity it is kept (created, then paid).
        let [legacy, new] = [&mut legacy, &mut new].map(|effects| {
            let mut sides: Vec<(String, u64, Response)> = effects
                .drain(..)
                .map(|e| {
                    let answer = caused.answers[e.stack.min(1)].as_ref();
                    let body = normalized(&e.body, answer);
                    (entity(&body), e.at_unix_us, as_response(body))
                })
                .collect();
            sides.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            sides
        });
        let effect_route = match by_kind_route.get(&kind) {
            Some(route) => route.clone(),
            None => continue,
        };
        for ((_, _, l), (_, _, n)) in legacy.iter().zip(&new) {
            for mismatch in differ.compare(&effect_route, l, n) {
                let what = match mismatch.group_path() {
                    Some(path) => format!("{} {path}", mismatch.kind.as_str()),
                    None => mismatch.kind.as_str().to_string(),
                };
                groups.add(
                    (&route, &kind, &what),
                    EffectExample {
                        exchange_id: Some(id),
                        legacy: mismatch.legacy,
                        new: mismatch.new,
                    },
                );
            }
        }
    }
}

/// Effects tied to no exchange: each kind's numbers on both stacks.
fn compare_untied(untied: Vec<Effect>, groups: &mut Groups) {
    let mut counts: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    for effect in untied {
        counts.entry(effect.kind).or_default()[effect.stack.min(1)] += 1;
    }
    for (kind, [legacy, new]) in counts {
        if legacy != new {
            groups.add(
                ("(untied)", &kind, "count"),
                EffectExample {
                    exchange_id: None,
                    legacy: Some(times(legacy)),
                    new: Some(times(new)),
                },
            );
        }
    }
}

fn times(n: usize) -> String {
    match n {
        1 => "once".to_string(),
        n => format!("{n} times"),
    }
}

/// A body the differ can compare: JSON as JSON, anything else as sent.
fn as_response(body: Body) -> Response {
    Response {
        status: 200,
        headers: vec![Header("content-type".into(), "application/json".into())],
        body,
        latency_us: 0,
        truncated: None,
    }
}

/// An effect's JSON body with the ids its stack issued made comparable:
/// a value found in the stack's own answer to the exchange becomes
/// `<answer PATH>` (legacy's order 1042 and new's 7409284110012416001 both
/// `<answer $.id>`), and other values of id fields become `<id N>` in
/// order of first appearance. Other bodies are left as they are.
fn normalized(body: &Body, answer: Option<&Value>) -> Body {
    let Ok(mut value) = serde_json::from_slice::<Value>(body.bytes()) else {
        return body.clone();
    };
    let mut issued = HashMap::new();
    if let Some(answer) = answer {
        leaves(answer, "$".to_string(), &mut |path, leaf| {
            if let Some(text) = id_of(leaf) {
                issued.entry(text).or_insert(path);
            }
        });
    }
    let mut unknown: HashMap<String, usize> = HashMap::new();
    rewrite(&mut value, None, &mut |key, leaf| {
        let text = id_of(leaf)?;
        if let Some(path) = issued.get(&text) {
            return Some(Value::String(format!("<answer {path}>")));
        }
        // An id inside a text: `Order 1042 confirmed`.
        if let Some(within) = ids_within(&text, &issued) {
            return Some(Value::String(within));
        }
        if !key.is_some_and(is_id_key) {
            return None;
        }
        let next = unknown.len() + 1;
        let n = *unknown.entry(text).or_insert(next);
        Some(Value::String(format!("<id {n}>")))
    });
    Body(serde_json::to_vec(&value).unwrap_or_default().into())
}

/// `text` with each word that is an id the answer issued as `<answer
/// PATH>`, if it has one: a word that [`looks_like_id`], between
/// characters that are not letters, digits, `_` or `-`.
fn ids_within(text: &str, issued: &HashMap<String, String>) -> Option<String> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut replaced = false;
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(is_word).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        match issued.get(word).filter(|_| looks_like_id(word)) {
            Some(path) => {
                out.push_str(&format!("<answer {path}>"));
                replaced = true;
            }
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    replaced.then_some(out)
}

/// What entity a normalized effect body is about: its id fields' values
/// (`id`, `*_id`, `*Id`), in order; empty when it names none.
fn entity(body: &Body) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body.bytes()) else {
        return String::new();
    };
    let mut ids = String::new();
    leaves(&value, String::new(), &mut |path, leaf| {
        if is_id_key(last_key(&path)) {
            ids.push_str(&leaf.to_string());
            ids.push('\u{1f}');
        }
    });
    ids
}

/// A leaf that can stand for an id a stack issued, as its text: an
/// integer or string that [`looks_like_id`].
fn id_of(leaf: &Value) -> Option<String> {
    let text = match leaf {
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    looks_like_id(&text).then_some(text)
}

/// Four digits or more, or eight characters or more with a digit
/// (`1042`, `7409284110012416001`, `pay_3f9a…`, a uuid). Shorter or
/// digit-free values (`1`, `"EUR"`, `"PAID"`) are too common to be
/// anyone's id: taken for one, they would tie an effect to the wrong
/// answer or hide a difference behind `<answer PATH>`.
fn looks_like_id(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    (text.len() >= 4 && digits == text.len()) || (text.len() >= 8 && digits > 0)
}

/// An id field's name: `id`, `*_id`, `*Id`.
fn is_id_key(key: &str) -> bool {
    key == "id" || key.ends_with("_id") || key.ends_with("Id")
}

/// The name a leaf's JSONPath ends with (`$.order.id` → `id`).
fn last_key(path: &str) -> &str {
    path.rsplit(['.', '[']).next().unwrap_or_default()
}

fn leaves(value: &Value, path: String, f: &mut impl FnMut(String, &Value)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                leaves(v, format!("{path}.{k}"), f);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}[{i}]"), f);
            }
        }
        leaf => f(path, leaf),
    }
}

/// Replaces each leaf for which `f` (given the key it is under) says what.
fn rewrite(
    value: &mut Value,
    key: Option<&str>,
    f: &mut impl FnMut(Option<&str>, &Value) -> Option<Value>,
) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                rewrite(v, Some(k), f);
            }
        }
        Value::Array(items) => {
            for v in items {
                rewrite(v, key, f);
            }
        }
        leaf => {
            if let Some(new) = f(key, leaf) {
                *leaf = new;
            }
        }
    }
}

/// Differences grouped by route, kind and what differs.
#[derive(Default)]
struct Groups {
    found: u64,
    by_key: BTreeMap<(String, String, String), (u64, Vec<EffectExample>)>,
}

impl Groups {
    fn add(&mut self, (route, kind, what): (&str, &str, &str), example: EffectExample) {
        self.found += 1;
        let key = (route.to_string(), kind.to_string(), what.to_string());
        let (count, examples) = self.by_key.entry(key).or_default();
        *count += 1;
        if examples.len() < EXAMPLES {
            examples.push(example);
        }
    }

    fn finish(self) -> Vec<EffectGroup> {
        let mut groups: Vec<EffectGroup> = self
            .by_key
            .into_iter()
            .map(|((route, kind, what), (count, examples))| EffectGroup {
                route,
                kind,
                what,
                count,
                examples,
            })
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        groups
    }
}

impl std::fmt::Display for EffectGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let example = self.examples.first();
        let side = |i: usize| {
            example
                .and_then(|e| {
                    if i == 0 {
                        e.legacy.as_deref()
                    } else {
                        e.new.as_deref()
                    }
                })
                .unwrap_or("none")
                .to_string()
        };
        match self.what.as_str() {
            "count" => write!(
                f,
                "{} -> {}: sent {} by {}, {} by {} ({}x)",
                self.route,
                self.kind,
                side(0),
                STACKS[0],
                side(1),
                STACKS[1],
                self.count
            ),
            what => write!(
                f,
                "{} -> {}: {what} differs ({} vs {}, {}x)",
                self.route,
                self.kind,
                side(0),
                side(1),
                self.count
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(stack: usize, at: u64, body: Value) -> Effect {
        Effect {
            stack,
            kind: "row INSERT items".into(),
            method: "ROW".into(),
            target: "/items".into(),
            at_unix_us: at,
            exchange: Some((0, 0, 1)),
            headers: Vec::new(),
            body: Body(serde_json::to_vec(&body).unwrap().into()),
        }
    }

    /// An exchange sent at `sent_ms` after the start, answered `took_ms`
    /// later with `answer` on both stacks.
    fn answered(id: u64, sent_ms: u64, took_ms: u64, answer: Value) -> ExchangeResult {
        let attempt = crate::results::Attempt {
            response: Some(Response {
                status: 200,
                headers: Vec::new(),
                body: Body(serde_json::to_vec(&answer).unwrap().into()),
                latency_us: took_ms * 1_000,
                truncated: None,
            }),
            ..Default::default()
        };
        ExchangeResult {
            id,
            pass: 0,
            copy: 0,
            session: "s".into(),
            scheduled_us: sent_ms * 1_000,
            request: std::sync::Arc::new(crate::capture::Request {
                method: "POST".into(),
                target: "/orders".into(),
                version: "HTTP/1.1".into(),
                headers: Vec::new(),
                body: Body::default(),
            }),
            legacy: attempt.clone(),
            new: attempt,
            legacy2: None,
            recorded: None,
        }
    }

    /// An effect naming no exchange is tied to the one in flight when it
    /// came, up to the slack after its answer; past the slack, in no
    /// exchange's window, to the latest one whose answer holds an id it
    /// carries.
    #[test]
    fn an_effect_just_after_an_answer_is_tied_by_time_a_later_one_by_id() {
        // Exchange 1 sent at 0 ms, answered at 10 ms; exchange 2 sent at
        // 1,000 ms.
        let results = [
            answered(1, 0, 10, json!({"id": 5001})),
            answered(2, 1_000, 10, json!({"status": "ok"})),
        ];
        let mail = |at_ms: u64| {
            let mut effect = row(0, at_ms * 1_000, json!({"order_id": 5001}));
            effect.exchange = None;
            effect
        };
        // 60 ms after the answer: within the slack (100 ms). 400 ms after:
        // past it, tied by the order id. 1,005 ms: in exchange 2's window.
        let mut effects = [mail(70), mail(410), mail(1_005)];
        let quiet = std::time::Duration::from_secs(1);
        let tied = tie_untraced(&mut effects, results.into_iter(), 0, quiet);
        assert_eq!(tied, (2, 1));
        let by: Vec<_> = effects.iter().map(|e| e.exchange.unwrap().2).collect();
        assert_eq!(by, [1, 1, 2]);
    }

    /// Two rows of one exchange written in the other order by new are
    /// alike; a row of one entity that differs is found on its field.
    #[test]
    fn order_between_entities_is_free_within_one_it_is_not() {
        let caused = Caused {
            route: Route::of("POST", "/carts"),
            answers: [Some(json!({"id": 5001})), Some(json!({"id": 9_000_001}))],
            answered_unix_us: [0, 0],
        };
        let legacy = [
            row(0, 1, json!({"cart_id": 5001, "sku": "a1234567", "qty": 1})),
            row(0, 2, json!({"cart_id": 5001, "sku": "b7654321", "qty": 2})),
        ];
        let new = [
            row(
                1,
                1,
                json!({"cart_id": 9_000_001, "sku": "b7654321", "qty": 2}),
            ),
            row(
                1,
                2,
                json!({"cart_id": 9_000_001, "sku": "a1234567", "qty": 1}),
            ),
        ];
        let mut groups = Groups::default();
        let mut differ = Differ::new(RuleSet::default());
        let effects = legacy.iter().chain(&new).cloned().collect();
        compare_exchange(&caused, 1, effects, &mut differ, &mut groups);
        // Same entity (the cart): arrival order kept, so the skus pair up
        // crosswise and differ.
        assert_eq!(groups.found, 4, "{:?}", groups.by_key.keys());

        // Rows of two entities (their own ids) in either order are alike.
        let legacy = [
            row(0, 1, json!({"id": 5001, "qty": 1})),
            row(0, 2, json!({"id": 77_777_777, "qty": 2})),
        ];
        let new = [
            row(1, 1, json!({"id": 77_777_777, "qty": 2})),
            row(1, 2, json!({"id": 9_000_001, "qty": 1})),
        ];
        let mut groups = Groups::default();
        let effects = legacy.iter().chain(&new).cloned().collect();
        compare_exchange(&caused, 1, effects, &mut differ, &mut groups);
        assert_eq!(groups.found, 0, "{:?}", groups.by_key.keys());
    }
}
