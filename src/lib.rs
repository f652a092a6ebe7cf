//! tandem: record HTTP traffic, replay it at a legacy and a new stack at
//! once, diff their answers and gate on parity.
//!
//! Data flows one way, one module a stage:
//! sources ([`record`]) → [`capture`] file → [`replay`] engine → [`results`]
//! file → [`diff`] → [`report`]. The formats between stages are documented
//! in `docs/` and versioned.

pub mod capture;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod encoding;
pub mod http;
pub mod jsonl;
pub mod latency;
pub mod packets;
pub mod record;
pub mod replay;
pub mod report;
pub mod results;
pub mod route;
pub mod server;
pub mod target;
