//! tandem: record HTTP traffic, replay it at a legacy and a new stack at
//! once, diff their answers and gate on parity.
//!
//! Data flows one way, one module a stage, top to bottom:
//!
//! 1. sources in [`record`] (the recording proxy, live packets, pcap files)
//!    write exchanges into a
//! 2. capture file ([`capture`]), from which [`correlate`] learns which
//!    answers feed which later requests, and which the
//! 3. replay engine ([`replay`]) sends at the stacks, each with its own ids
//!    and tokens followed, handing each
//!    exchange's answers as results ([`results`]) to a sink: the results
//!    file, and the
//! 4. judge ([`judge`]), which compares answers with the differ ([`diff`])
//!    and folds them into a
//! 5. report ([`report`]): report.json, summary.md, the terminal summary;
//!    shard reports merged; its [`gate`]s turn it into a verdict.
//!
//! [`scenario`] files (`tandem run`) are a replay's arguments written as
//! TOML, with gates, inline rules, setup and teardown.
//! [`cli`] is the command layer that composes the stages for each command;
//! [`demo`] holds the embedded stacks of `tandem demo`. The formats between
//! stages are documented in `docs/` and versioned.

// The stages in the data's order (kept apart so that rustfmt keeps it).
pub mod record;

pub mod capture;

pub mod correlate;

pub mod replay;

pub mod results;

pub mod judge;

pub mod diff;
/// Side effects of each stack (webhooks it called), tied to exchanges and compared.
pub mod effects;

pub mod report;

pub mod gate;

pub mod scenario;

pub mod capacity;

pub mod shadow;

pub mod cli;
pub mod demo;

pub mod encoding;
pub mod http;
pub mod jsonl;
pub mod latency;
pub mod metrics;
pub mod output;
pub mod redact;
pub mod route;
pub mod server;
pub mod target;
