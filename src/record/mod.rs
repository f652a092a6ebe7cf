//! Sources that record traffic into a capture file: the recording proxy
//! ([`proxy`]), a live interface and pcap files ([`pcap`], decoded by
//! [`packets`]). Every source has one shape, `async fn(config, sink,
//! shutdown)`: it writes into the [`Sink`] it is handed (selection,
//! ordering, rotation) until its input ends or `shutdown` completes, so
//! that tests and the command layer call each the same way.

pub mod gor;
pub mod har;
pub mod packets;
pub mod pcap;
pub mod proxy;
pub mod sink;

pub use pcap::{
    check_pcap, import_file, record_live, ImportConfig, LiveCapture, LiveConfig, PacketRecording,
};
pub use proxy::{record_proxy, ProxyConfig, RecordSummary};
pub use sink::{Rotation, Selection, Sink, SinkSummary};
