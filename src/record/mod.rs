//! Sources that record traffic into a capture file.
//!
//! Each source is a plain async function taking its configuration and a
//! shutdown future, so that tests call it directly.

pub mod packets;
pub mod proxy;
pub mod sink;

pub use packets::{import_file, record_live, LiveConfig};
pub use proxy::{record_proxy, ProxyConfig, RecordSummary};
pub use sink::{Rotation, Selection, Sink, SinkSummary};
