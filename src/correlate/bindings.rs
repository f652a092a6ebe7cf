//! Bindings: per stack, the recorded values its answers stood for, and the
//! values it issued in their place. Each stack keeps its own: legacy's
//! cart 12 and new's cart `c-9f2…` both stand for the recorded cart 7, and
//! each stack's later requests carry its own. Shared by every engine, so
//! that a token one session obtained serves the connections of others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Notify;

use super::places;
use super::Correlation;
use crate::capture::{Body, Header, Request};

/// What a producer's answer gave for one recorded value.
#[derive(Debug, Clone)]
enum Bound {
    /// The stack's own value.
    Value(Value),
    /// None, and why.
    Missing(String),
}

/// (pass, copy, producer exchange, recorded value).
type Key = (u32, u32, u64, String);

/// (pass, copy, producer exchange).
type Producer = (u32, u32, u64);

#[derive(Default)]
struct Stack {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each value with the uses still to come: freed at the last, so that
    /// a long replay (loops, `--amplify`) holds only what is still ahead.
    /// A use that never comes (its request dropped, given up on past
    /// `--max-lag`, or replayed by another shard) leaves its value held:
    /// bounded by what is counted unresolved or dropped, and by the links
    /// that cross shards.
    values: HashMap<Key, (Bound, u32)>,
    /// One wake-up per producer that requests wait for: an answer wakes
    /// only its own dependents, not every waiting request of the stack
    /// (thousands at saturation).
    waiting: HashMap<Producer, Arc<Notify>>,
}

/// The bindings of every stack of a replay.
pub struct Bindings {
    correlation: Arc<Correlation>,
    stacks: [Stack; 3],
    /// `(index, count)` when replaying a shard: producers of other shards
    /// never answer here.
    shard: Option<(u32, u32)>,
    /// Replay start minus record start, µs: what `[[time_shift]]` adds.
    shift_us: i64,
}

/// One dependent request made ready for one stack.
pub struct Resolved {
    /// The request to send, when anything in it was rewritten.
    pub request: Option<Request>,
    /// Values that could not be followed, each with its reason; the request
    /// carries the recorded value there.
    pub unresolved: Vec<String>,
}

impl Bindings {
    /// Bindings for `correlation`'s links, on stacks 0 (legacy), 1 (new)
    /// and 2 (legacy-2), for a replay that starts `started_at_us` (µs since
    /// the epoch).
    pub fn new(
        correlation: Arc<Correlation>,
        shard: Option<(u32, u32)>,
        started_at_us: u64,
    ) -> Bindings {
        let shift_us = started_at_us as i64 - correlation.recorded_at_us() as i64;
        Bindings {
            correlation,
            stacks: Default::default(),
            shard,
            shift_us,
        }
    }

    /// Takes what exchange `id`'s answer on `stack` produced; `None` when
    /// the stack gave no answer. Wakes the requests waiting for it.
    pub fn answered(
        &self,
        stack: usize,
        (pass, copy, id): (u32, u32, u64),
        answer: Option<(u16, &[Header], &Body)>,
    ) {
        let produced = self.correlation.produced_by(id);
        if produced.is_empty() {
            return;
        }
        // Read outside the lock, which every engine's sends take.
        let wanted: Vec<&places::Place> = produced.iter().map(|(place, _)| place).collect();
        let values = answer.map(|(status, headers, body)| {
            (status, places::answer_values_at(headers, body, &wanted))
        });
        let bounds: Vec<Bound> = match values {
            None => (produced.iter())
                .map(|_| Bound::Missing(format!("producer #{id} got no answer")))
                .collect(),
            Some((status, values)) => (values.into_iter().zip(&wanted))
                .map(|(value, place)| match value {
                    Some(value) => Bound::Value(value),
                    None => {
                        Bound::Missing(format!("producer #{id} answered {status} without {place}"))
                    }
                })
                .collect(),
        };
        let waiting = {
            let mut state = self.stacks[stack].state.lock().expect("bindings lock");
            for ((_, recorded), bound) in produced.iter().zip(bounds) {
                let uses = self.correlation.uses_of(id, recorded);
                state
                    .values
                    .insert((pass, copy, id, recorded.clone()), (bound, uses));
            }
            state.waiting.remove(&(pass, copy, id))
        };
        if let Some(waiting) = waiting {
            waiting.notify_waiters();
        }
    }

    /// `request` (exchange `id`) as `stack` must receive it: each value an
    /// earlier answer produced replaced by the one this stack issued,
    /// waiting for the producer's answer until `deadline`.
    pub async fn resolve(
        &self,
        stack: usize,
        (pass, copy, id): (u32, u32, u64),
        request: &Request,
        deadline: Instant,
    ) -> Resolved {
        let uses = self.correlation.used_by(id);
        let mut values = Vec::new();
        let mut unresolved = Vec::new();
        for use_ in uses {
            let key = (pass, copy, use_.producer, use_.recorded.clone());
            match self.bound(stack, &key, use_.producer, deadline).await {
                Bound::Value(value) => values.push((use_.place.clone(), value)),
                Bound::Missing(why) => unresolved.push(format!("{}: {why}", use_.place)),
            }
        }
        values.extend(self.shifted_times(request));
        Resolved {
            request: (!values.is_empty()).then(|| places::rewritten(request, &values)),
            unresolved,
        }
    }

    /// The request's absolute times (`[[time_shift]]`), moved.
    fn shifted_times(&self, request: &Request) -> Vec<(places::Place, Value)> {
        // Most replays shift nothing: no route worked out per request then.
        if !self.correlation.shifts_times() {
            return Vec::new();
        }
        let route = crate::route::Route::of(&request.method, &request.target);
        let places: Vec<&places::Place> = self.correlation.times_in(&route).collect();
        if places.is_empty() {
            return Vec::new();
        }
        places::request_values(request)
            .into_iter()
            .filter(|(place, _)| places.contains(&place))
            .filter_map(|(place, value)| Some((place, shifted(&value, self.shift_us)?)))
            .collect()
    }

    async fn bound(&self, stack: usize, key: &Key, producer: u64, deadline: Instant) -> Bound {
        if !self.in_this_replay(producer) {
            return Bound::Missing(format!("producer #{producer} is in another shard"));
        }
        let notify = {
            let mut state = self.stacks[stack].state.lock().expect("bindings lock");
            if let Some(bound) = state.take(key) {
                return bound;
            }
            let (pass, copy, _, _) = *key;
            state
                .waiting
                .entry((pass, copy, producer))
                .or_default()
                .clone()
        };
        let answered = notify.notified();
        tokio::pin!(answered);
        // Registered, then looked at again: `answered` may have taken the
        // lock and woken the producer's waiters since the look above.
        answered.as_mut().enable();
        if let Some(bound) = self.look(stack, key) {
            return bound;
        }
        match tokio::time::timeout_at(deadline.into(), answered).await {
            Ok(()) => self.look(stack, key).unwrap_or_else(|| {
                Bound::Missing(format!("producer #{producer}'s answer held no {}", key.3))
            }),
            Err(_) => Bound::Missing(format!(
                "producer #{producer} had not answered in time (--max-lag, or the request timeout)"
            )),
        }
    }

    fn look(&self, stack: usize, key: &Key) -> Option<Bound> {
        let mut state = self.stacks[stack].state.lock().expect("bindings lock");
        state.take(key)
    }

    /// Values held for uses still to come, on `stack`.
    pub fn held(&self, stack: usize) -> usize {
        let state = self.stacks[stack].state.lock().expect("bindings lock");
        state.values.len()
    }

    fn in_this_replay(&self, producer: u64) -> bool {
        let Some((index, count)) = self.shard else {
            return true;
        };
        self.correlation
            .session_of(producer)
            .is_none_or(|s| crate::capture::session_hash(s) % count as u64 == index as u64)
    }
}

impl State {
    /// The value at `key`, counted as used once; freed at its last use.
    fn take(&mut self, key: &Key) -> Option<Bound> {
        let (bound, uses) = self.values.get_mut(key)?;
        *uses = uses.saturating_sub(1);
        if *uses > 0 {
            return Some(bound.clone());
        }
        self.values.remove(key).map(|(bound, _)| bound)
    }
}

/// `value`, a time, moved by `shift_us`: an RFC 3339 string keeps its
/// precision (as UTC), Unix seconds or milliseconds (by magnitude) keep
/// their unit and type.
pub fn shifted(value: &Value, shift_us: i64) -> Option<Value> {
    let epoch = |n: i64| -> i64 {
        // Thirteen digits and more are milliseconds.
        if n.abs() >= 100_000_000_000 {
            n + shift_us / 1_000
        } else {
            n + shift_us / 1_000_000
        }
    };
    match value {
        Value::Number(n) => Some(Value::from(epoch(n.as_i64()?))),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(Value::String(epoch(s.parse().ok()?).to_string()))
        }
        Value::String(s) => {
            let at = humantime::parse_rfc3339_weak(s).ok()?;
            let moved = if shift_us >= 0 {
                at.checked_add(std::time::Duration::from_micros(shift_us as u64))?
            } else {
                at.checked_sub(std::time::Duration::from_micros(shift_us.unsigned_abs()))?
            };
            let fraction = s
                .split_once('.')
                .map_or(0, |(_, f)| f.bytes().take_while(u8::is_ascii_digit).count());
            let text = match fraction {
                0 => humantime::format_rfc3339_seconds(moved).to_string(),
                1..=3 => humantime::format_rfc3339_millis(moved).to_string(),
                _ => humantime::format_rfc3339_micros(moved).to_string(),
            };
            Some(Value::String(text))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{shifted, Bindings};
    use crate::capture::{Body, Exchange, Header, Request, Response};
    use serde_json::Value;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn exchange(
        id: u64,
        method: &str,
        target: &str,
        headers: Vec<Header>,
        answer: &str,
    ) -> Exchange {
        Exchange {
            id,
            offset_us: id * 1_000,
            session: "s".into(),
            request: Request {
                method: method.into(),
                target: target.into(),
                version: "HTTP/1.1".into(),
                headers,
                body: Body::default(),
            },
            response: Some(Response {
                status: 200,
                headers: vec![Header("content-type".into(), "application/json".into())],
                body: Body::from(answer),
                latency_us: 100,
                truncated: None,
            }),
            error: None,
            incomplete: None,
        }
    }

    /// A token used by three later requests is held until the third has
    /// taken it, then freed: a replay that loops does not pile up values.
    #[tokio::test]
    async fn a_value_is_freed_once_its_last_use_has_taken_it() {
        let token = "tok_9f2c4e1a7b3d5f60";
        let bearer = || {
            vec![Header(
                "authorization".into(),
                format!("Bearer {token}").into(),
            )]
        };
        let mut exchanges = vec![exchange(
            1,
            "POST",
            "/login",
            vec![],
            &format!(r#"{{"token":"{token}"}}"#),
        )];
        for id in 2..=4 {
            exchanges.push(exchange(
                id,
                "GET",
                &format!("/orders?n={id}"),
                bearer(),
                r#"{"ok":true}"#,
            ));
        }
        let learned =
            super::super::learn_exchanges(exchanges.clone(), 0, &Default::default()).unwrap();
        assert_eq!(learned.links.len(), 1, "{:?}", learned.links);
        let bindings = Bindings::new(Arc::new(learned), None, 0);
        let answer = r#"{"token":"tok_of_this_stack_000001"}"#;
        let headers = vec![Header("content-type".into(), "application/json".into())];
        bindings.answered(1, (0, 0, 1), Some((200, &headers, &Body::from(answer))));
        assert_eq!(bindings.held(1), 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        for (n, consumer) in exchanges[1..].iter().enumerate() {
            let resolved = bindings
                .resolve(1, (0, 0, consumer.id), &consumer.request, deadline)
                .await;
            let sent = resolved.request.expect("rewritten");
            assert!(sent
                .headers
                .iter()
                .any(|h| h.1 == "Bearer tok_of_this_stack_000001"));
            let left = if n < 2 { 1 } else { 0 };
            assert_eq!(bindings.held(1), left, "after use {}", n + 1);
        }
        assert_eq!(bindings.held(1), 0);
        assert_eq!(bindings.held(0), 0, "each stack holds its own");
    }

    #[test]
    fn times_move_by_the_shift_and_keep_their_form() {
        let day = 86_400_000_000;
        let moved = |v: Value| shifted(&v, day).unwrap();
        assert_eq!(
            moved(Value::from("2026-11-01T10:00:00Z")),
            Value::from("2026-11-02T10:00:00Z")
        );
        assert_eq!(
            moved(Value::from("2026-11-01T10:00:00.250Z")),
            Value::from("2026-11-02T10:00:00.250Z")
        );
        assert_eq!(
            moved(Value::from(1_790_000_000)),
            Value::from(1_790_086_400)
        );
        assert_eq!(
            moved(Value::from(1_790_000_000_000_i64)),
            Value::from(1_790_086_400_000_i64)
        );
        assert_eq!(moved(Value::from("1790000000")), Value::from("1790086400"));
        assert_eq!(shifted(&Value::from("tomorrow"), day), None);
    }
}
