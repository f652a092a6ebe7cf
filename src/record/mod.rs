//! Sources that record traffic into a capture file.
//!
//! Each source is a plain async function taking its configuration and a
//! shutdown future, so that tests call it directly.

pub mod proxy;

pub use proxy::{record_proxy, ProxyConfig, RecordSummary};
