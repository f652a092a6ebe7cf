//! Correlation in the diff: two values that stand for the same recorded
//! value are equal (legacy's order 1042 and new's 7409284110012416001, both
//! issued where the recording had order 17, are "the same order"); two that
//! stand for different recorded values are a real mismatch, and stay one.
//! The judge learns what each stack's values stand for from the producers'
//! answers, as the replay does, by the same links.

use std::collections::HashMap;
use std::sync::Arc;

use crate::correlate::{places, Correlation};
use crate::diff::{Mismatch, MismatchKind};
use crate::report::CorrelationReport;
use crate::results::ExchangeResult;

/// Reasons of unresolved values kept in the report.
const REASONS: usize = 20;

#[derive(Clone)]
pub(super) struct Equivalence {
    correlation: Arc<Correlation>,
    /// Per stack (legacy, new, legacy-2): a value it issued, as JSON text,
    /// to the recorded value it stands for.
    stands_for: [HashMap<String, String>; 3],
    unresolved: u64,
    reasons: HashMap<String, u64>,
    settled: u64,
}

impl Equivalence {
    pub(super) fn new(correlation: Arc<Correlation>) -> Equivalence {
        Equivalence {
            correlation,
            stands_for: Default::default(),
            unresolved: 0,
            reasons: HashMap::new(),
            settled: 0,
        }
    }

    /// Takes what this exchange's answers say each stack's values stand for,
    /// and counts what could not be followed.
    /// `recorded` is the exchange's recorded answer, read once by the judge.
    pub(super) fn observe(
        &mut self,
        route: &crate::route::Route,
        result: &ExchangeResult,
        recorded: Option<&crate::capture::Response>,
    ) {
        let stacks = [
            Some(&result.legacy),
            Some(&result.new),
            result.legacy2.as_ref(),
        ];
        let mut unresolved = false;
        for attempt in stacks.iter().flatten() {
            for reason in &attempt.unresolved {
                unresolved = true;
                *self.reasons.entry(without_ids(reason)).or_default() += 1;
            }
        }
        self.unresolved += u64::from(unresolved);
        // Every answer of a producer route says what its values stand for,
        // whether or not a later request used them.
        let places = self.correlation.produced_at(route);
        let Some(recorded) = recorded.filter(|_| !places.is_empty()) else {
            return;
        };
        // Each answer read once for all the places.
        let wanted: Vec<&places::Place> = places.iter().collect();
        let keys = places::answer_values_at(&recorded.headers, &recorded.body, &wanted);
        if keys.iter().all(Option::is_none) {
            return;
        }
        for (stack, attempt) in stacks.iter().enumerate() {
            let Some(answer) = attempt.and_then(|a| a.response.as_ref()) else {
                continue;
            };
            let values = places::answer_values_at(&answer.headers, &answer.body, &wanted);
            for (key, value) in keys.iter().zip(values) {
                let (Some(key), Some(value)) = (key.as_ref().and_then(places::key_of), value)
                else {
                    continue;
                };
                self.stands_for[stack].insert(value.to_string(), key);
            }
        }
    }

    /// Drops the value mismatches between stacks `a` and `b` whose two
    /// values stand for the same recorded one.
    pub(super) fn settle(&mut self, mismatches: &mut Vec<Mismatch>, a: usize, b: usize) {
        let before = mismatches.len();
        mismatches.retain(|m| {
            if !matches!(m.kind, MismatchKind::Value | MismatchKind::Type) {
                return true;
            }
            let recorded = |stack: usize, shown: &Option<String>| {
                shown.as_ref().and_then(|v| self.stands_for[stack].get(v))
            };
            match (recorded(a, &m.legacy), recorded(b, &m.new)) {
                (Some(x), Some(y)) => x != y,
                _ => true,
            }
        });
        self.settled += (before - mismatches.len()) as u64;
    }

    pub(super) fn finish(self) -> CorrelationReport {
        let mut reasons: Vec<(String, u64)> = self.reasons.into_iter().collect();
        reasons.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        reasons.truncate(REASONS);
        CorrelationReport {
            links: self.correlation.links.clone(),
            unresolved: self.unresolved,
            reasons,
            settled: self.settled,
        }
    }
}

/// `producer #17 got no answer` as `producer #N got no answer`, so that
/// reasons group.
fn without_ids(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '#' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('N');
        }
    }
    out
}
