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

#[derive(Default)]
struct Stack {
    values: Mutex<HashMap<Key, Bound>>,
    changed: Notify,
}

/// The bindings of every stack of a replay.
pub struct Bindings {
    correlation: Arc<Correlation>,
    stacks: [Stack; 3],
    /// `(index, count)` when replaying a shard: producers of other shards
    /// never answer here.
    shard: Option<(u32, u32)>,
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
    /// and 2 (legacy-2).
    pub fn new(correlation: Arc<Correlation>, shard: Option<(u32, u32)>) -> Bindings {
        Bindings {
            correlation,
            stacks: Default::default(),
            shard,
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
        let stack = &self.stacks[stack];
        {
            let mut values = stack.values.lock().expect("bindings lock");
            for (place, recorded) in produced {
                let bound = match answer {
                    None => Bound::Missing(format!("producer #{id} got no answer")),
                    Some((status, headers, body)) => {
                        match places::answer_value(headers, body, place) {
                            Some(value) if places::key_of(&value).is_some() => Bound::Value(value),
                            _ => Bound::Missing(format!(
                                "producer #{id} answered {status} without {place}"
                            )),
                        }
                    }
                };
                values.insert((pass, copy, id, recorded.clone()), bound);
            }
        }
        stack.changed.notify_waiters();
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
        Resolved {
            request: (!values.is_empty()).then(|| places::rewritten(request, &values)),
            unresolved,
        }
    }

    async fn bound(&self, stack: usize, key: &Key, producer: u64, deadline: Instant) -> Bound {
        if !self.in_this_replay(producer) {
            return Bound::Missing(format!("producer #{producer} is in another shard"));
        }
        let stack = &self.stacks[stack];
        loop {
            // Registered before looking, so that an answer in between wakes it.
            let changed = stack.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(bound) = stack.values.lock().expect("bindings lock").get(key) {
                return bound.clone();
            }
            if tokio::time::timeout_at(deadline.into(), changed)
                .await
                .is_err()
            {
                return Bound::Missing(format!(
                    "producer #{producer} had not answered in time (--max-lag, or the request timeout)"
                ));
            }
        }
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
