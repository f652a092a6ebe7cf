//! Pairs of bodies compared before, and what comparing them found.
//!
//! A route's hot answers (a catalog, the list a common query returns) come
//! back byte for byte from both stacks, pair after pair, and when the two
//! stacks write them differently (key order, spacing, number formats), each
//! pair was parsed and walked again to find what the last one found. Under
//! the same rules the same two bodies always compare alike, so the outcome
//! is kept, with the rules it applied, which count their uses again.

use std::hash::BuildHasher;
use std::sync::Arc;

use super::json::Hits;
use super::rules::RouteRules;
use super::Mismatch;

/// Bodies longer than this are not kept: a few of them would take all the
/// room the pairs have, for answers less likely to come back alike.
const MAX_BODY: usize = 64 << 10;
/// What the pairs kept may hold in all; past either bound, all are
/// forgotten at once and the hot ones come back first.
const MAX_BYTES: usize = 8 << 20;
const MAX_PAIRS: usize = 4096;
/// Room counted for each mismatch of an outcome, beside the bodies.
const MISMATCH_BYTES: usize = 256;

/// What comparing two bodies found, and the rules it applied.
#[derive(Debug, Clone, Default)]
pub(super) struct Outcome {
    pub mismatches: Vec<Mismatch>,
    pub hits: Hits,
}

#[derive(Debug)]
struct Pair {
    /// Held, not only named: its address cannot then be another's.
    rules: Arc<RouteRules>,
    as_json: bool,
    legacy: Box<[u8]>,
    other: Box<[u8]>,
    outcome: Outcome,
}

/// The pairs compared lately (bodies as decoded, whether they were compared
/// as JSON, under which route's rules), bounded in count and bytes.
#[derive(Debug, Default)]
pub(super) struct Memo {
    pairs: foldhash::HashMap<u64, Pair>,
    bytes: usize,
    /// Pairs found again so far.
    #[cfg(test)]
    recalled: u64,
}

impl Memo {
    /// What comparing `legacy` and `other` found before, under these very
    /// `rules` and the same choice of JSON; `None` if they were not.
    pub fn recall(
        &mut self,
        rules: &Arc<RouteRules>,
        as_json: bool,
        legacy: &[u8],
        other: &[u8],
    ) -> Option<&Outcome> {
        let pair = self.pairs.get(&self.key(rules, as_json, legacy, other))?;
        let same = Arc::ptr_eq(&pair.rules, rules)
            && pair.as_json == as_json
            && *pair.legacy == *legacy
            && *pair.other == *other;
        #[cfg(test)]
        {
            self.recalled += u64::from(same);
        }
        same.then_some(&pair.outcome)
    }

    /// Pairs found again so far (for tests: a pair compared anew finds
    /// the same, only slower).
    #[cfg(test)]
    pub fn recalled(&self) -> u64 {
        self.recalled
    }

    /// Keeps what comparing `legacy` and `other` found.
    pub fn remember(
        &mut self,
        rules: &Arc<RouteRules>,
        as_json: bool,
        legacy: &[u8],
        other: &[u8],
        outcome: Outcome,
    ) {
        if legacy.len() > MAX_BODY || other.len() > MAX_BODY {
            return;
        }
        let key = self.key(rules, as_json, legacy, other);
        let pair = Pair {
            rules: rules.clone(),
            as_json,
            legacy: legacy.into(),
            other: other.into(),
            outcome,
        };
        let size = Memo::size(&pair);
        if self.pairs.len() >= MAX_PAIRS || self.bytes + size > MAX_BYTES {
            self.pairs.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.pairs.insert(key, pair) {
            self.bytes -= Memo::size(&old);
        }
        self.bytes += size;
    }

    fn key(&self, rules: &Arc<RouteRules>, as_json: bool, legacy: &[u8], other: &[u8]) -> u64 {
        let rules = Arc::as_ptr(rules) as usize;
        self.pairs
            .hasher()
            .hash_one((rules, as_json, legacy, other))
    }

    fn size(pair: &Pair) -> usize {
        pair.legacy.len() + pair.other.len() + pair.outcome.mismatches.len() * MISMATCH_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_kept_stay_within_their_bounds_and_are_told_apart_by_every_part() {
        let rules = Arc::new(RouteRules::default());
        let other_rules = Arc::new(RouteRules::default());
        let mut memo = Memo::default();
        let found = |n: usize| Outcome {
            mismatches: vec![super::super::body_mismatch(b"a", &n.to_le_bytes(), None)],
            hits: Hits::default(),
        };
        let (compact, spaced) = (&b"{\"a\":1}"[..], &b"{ \"a\": 1 }"[..]);
        memo.remember(&rules, true, compact, spaced, found(1));
        // Found only with the same rules, JSON choice and both bodies.
        for (rules, as_json, legacy, other, kept) in [
            (&rules, true, compact, spaced, true),
            (&rules, false, compact, spaced, false),
            (&other_rules, true, compact, spaced, false),
            (&rules, true, spaced, compact, false),
            (&rules, true, compact, &b"{ \"a\": 2 }"[..], false),
        ] {
            let found = memo.recall(rules, as_json, legacy, other).is_some();
            assert_eq!(found, kept, "{as_json} {legacy:?} {other:?}");
        }
        // Too long to keep.
        let long = vec![b'x'; MAX_BODY + 1];
        memo.remember(&rules, false, &long, b"y", found(2));
        assert!(memo.recall(&rules, false, &long, b"y").is_none());
        // Many pairs: never more than the bounds allow.
        for n in 0..3 * MAX_PAIRS {
            let body = vec![b'z'; n % 5_000];
            memo.remember(&rules, false, &body, &n.to_le_bytes(), found(n));
            assert!(memo.pairs.len() <= MAX_PAIRS && memo.bytes <= MAX_BYTES);
            if n % 1_000 == 0 {
                let sizes: usize = memo.pairs.values().map(Memo::size).sum();
                assert_eq!(sizes, memo.bytes);
            }
        }
        let last = 3 * MAX_PAIRS - 1;
        let body = vec![b'z'; last % 5_000];
        let kept = memo
            .recall(&rules, false, &body, &last.to_le_bytes())
            .unwrap();
        assert_eq!(kept.mismatches.len(), 1);
    }
}
