//! Puts exchanges back in arrival order.
//!
//! Sources number requests as they arrive but finish them as answers come
//! back, in any order. This buffer releases them by number, so a capture
//! is written in arrival order. A number given up on (a request that left
//! nothing to record) is released as nothing. If more than `limit`
//! exchanges wait behind one slow request, the oldest waiting are released
//! anyway rather than letting memory grow without bound.

use std::collections::BTreeMap;

use super::Exchange;

/// The reorder buffer.
pub struct InOrder {
    next: u64,
    waiting: BTreeMap<u64, Option<Exchange>>,
    limit: usize,
}

impl InOrder {
    /// Numbers start at `first`; at most `limit` exchanges wait.
    pub fn new(first: u64, limit: usize) -> InOrder {
        InOrder {
            next: first,
            waiting: BTreeMap::new(),
            limit,
        }
    }

    /// Number `id` is done (`None`: nothing to record); returns what is now
    /// in order.
    pub fn done(&mut self, id: u64, exchange: Option<Exchange>) -> Vec<Exchange> {
        let mut ready = Vec::new();
        if id < self.next {
            // Released early past the limit: write it now rather than lose it.
            ready.extend(exchange);
            return ready;
        }
        self.waiting.insert(id, exchange);
        while let Some(slot) = self.waiting.remove(&self.next) {
            ready.extend(slot);
            self.next += 1;
        }
        while self.waiting.len() > self.limit {
            let (id, slot) = self.waiting.pop_first().expect("over the limit, not empty");
            ready.extend(slot);
            self.next = id + 1;
        }
        ready
    }

    /// Everything still waiting, in order (at the end of a recording).
    pub fn drain(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .collect()
    }
}
