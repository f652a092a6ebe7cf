//! From a captured frame to a TCP segment: link layers (Ethernet with VLAN
//! tags, Linux cooked v1 and v2, BSD loopback, raw IP), IPv4 and IPv6, TCP.
//! Header parsing is etherparse's, in its lax mode so that frames cut by the
//! snap length still yield what they hold.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// pcap link types tandem reads (LINKTYPE_* values).
pub mod linktype {
    /// BSD loopback: a 4-byte address family in host byte order.
    pub const NULL: i32 = 0;
    /// Ethernet.
    pub const ETHERNET: i32 = 1;
    /// Raw IP (OpenBSD's value).
    pub const RAW_OPENBSD: i32 = 12;
    /// Raw IP (BSD/OS's value).
    pub const RAW_BSDOS: i32 = 14;
    /// Raw IP.
    pub const RAW: i32 = 101;
    /// OpenBSD loopback: the family in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture v1 (`-i any` on older libpcap).
    pub const LINUX_SLL: i32 = 113;
    /// Raw IPv4.
    pub const IPV4: i32 = 228;
    /// Raw IPv6.
    pub const IPV6: i32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: i32 = 276;
}

/// A TCP segment out of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `ack` is set).
    pub ack_number: u32,
    /// Flags.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Payload bytes as captured.
    pub payload: &'a [u8],
    /// Payload length on the wire (more than `payload.len()` when cut).
    pub wire_len: u32,
}

/// Why a frame yields no segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not TCP over IP (ARP, UDP, ICMP...): not HTTP, not counted as loss.
    NotTcp,
    /// An IP fragment: tandem does not reassemble IP fragments.
    Fragment,
    /// Headers cut short or invalid.
    Malformed,
    /// A link type tandem does not read.
    UnsupportedLink,
}

/// Decodes one frame of a capture with link type `linktype`.
pub fn decode(linktype: i32, frame: &[u8]) -> Result<Segment<'_>, Skip> {
    let packet = match linktype {
        linktype::ETHERNET => LaxSlicedPacket::from_ethernet(frame).map_err(|_| Skip::Malformed)?,
        linktype::RAW
        | linktype::RAW_OPENBSD
        | linktype::RAW_BSDOS
        | linktype::IPV4
        | linktype::IPV6 => LaxSlicedPacket::from_ip(frame).map_err(|_| Skip::Malformed)?,
        linktype::NULL | linktype::LOOP => {
            let family = frame.get(..4).ok_or(Skip::Malformed)?;
            let family = [family[0], family[1], family[2], family[3]];
            let family = if linktype == linktype::LOOP {
                u32::from_be_bytes(family)
            } else {
                // Host byte order of the machine that wrote the file: try both.
                u32::from_le_bytes(family).min(u32::from_be_bytes(family))
            };
            match family {
                2 | 24 | 28 | 30 => {
                    LaxSlicedPacket::from_ip(&frame[4..]).map_err(|_| Skip::Malformed)?
                }
                _ => return Err(Skip::NotTcp),
            }
        }
        linktype::LINUX_SLL => {
            let ether_type =
                u16::from_be_bytes([*frame.get(14).ok_or(Skip::Malformed)?, frame[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(ether_type), &frame[16..])
        }
        linktype::LINUX_SLL2 => {
            let ether_type = u16::from_be_bytes([*frame.first().ok_or(Skip::Malformed)?, frame[1]]);
            let payload = frame.get(20..).ok_or(Skip::Malformed)?;
            LaxSlicedPacket::from_ether_type(EtherType(ether_type), payload)
        }
        _ => return Err(Skip::UnsupportedLink),
    };
    segment(&packet)
}

fn segment<'a>(packet: &LaxSlicedPacket<'a>) -> Result<Segment<'a>, Skip> {
    let (src, dst, fragmented, declared) = match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let header = ip.header();
            let declared = declared_payload(
                header.slice(),
                ip.payload().payload,
                header.total_len() as usize,
            );
            (
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
                ip.is_payload_fragmented(),
                declared,
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let header = ip.header();
            let total = 40 + header.payload_length() as usize;
            let declared = declared_payload(header.slice(), ip.payload().payload, total);
            (
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
                ip.is_payload_fragmented(),
                declared,
            )
        }
        Some(LaxNetSlice::Arp(_)) => return Err(Skip::NotTcp),
        None => {
            return Err(if packet.stop_err.is_some() {
                Skip::Malformed
            } else {
                Skip::NotTcp
            })
        }
    };
    if fragmented {
        return Err(Skip::Fragment);
    }
    let tcp = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        Some(_) => return Err(Skip::NotTcp),
        None => {
            return Err(if packet.stop_err.is_some() {
                Skip::Malformed
            } else {
                Skip::NotTcp
            })
        }
    };
    let payload = tcp.payload();
    let header_len = tcp.data_offset() as usize * 4;
    // The IP length says how long the payload was on the wire; a capture
    // cut by the snap length holds less. A zero IP length (segmentation
    // offload) says nothing: trust the capture.
    let wire_len = match declared {
        Some(ip_payload) if ip_payload >= header_len => {
            (ip_payload - header_len).max(payload.len())
        }
        _ => payload.len(),
    };
    Ok(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack_number: tcp.acknowledgment_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload,
        wire_len: wire_len as u32,
    })
}

/// The IP payload's length on the wire, from the IP header's total length.
fn declared_payload(header: &[u8], payload: &[u8], total: usize) -> Option<usize> {
    let headers_len = (payload.as_ptr() as usize).checked_sub(header.as_ptr() as usize)?;
    (total > headers_len).then(|| total - headers_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    /// An IPv4 TCP packet from 127.0.0.11:40000 to 127.0.0.12:80.
    fn ip_packet() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([127, 0, 0, 11], [127, 0, 0, 12], 64)
            .tcp(40000, 80, 7, 1024)
            .write(&mut out, PAYLOAD)
            .unwrap();
        out
    }

    fn check(linktype: i32, frame: &[u8]) {
        let seg = decode(linktype, frame).unwrap_or_else(|e| panic!("link type {linktype}: {e:?}"));
        assert_eq!(seg.src, "127.0.0.11:40000".parse().unwrap());
        assert_eq!(seg.dst, "127.0.0.12:80".parse().unwrap());
        assert_eq!(
            (seg.seq, seg.payload, seg.wire_len),
            (7, PAYLOAD, PAYLOAD.len() as u32)
        );
    }

    #[test]
    fn every_link_type() {
        let mut vlan = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(42.try_into().unwrap())
            .ipv4([127, 0, 0, 11], [127, 0, 0, 12], 64)
            .tcp(40000, 80, 7, 1024)
            .write(&mut vlan, PAYLOAD)
            .unwrap();
        check(linktype::ETHERNET, &vlan);
        check(linktype::RAW, &ip_packet());
        check(linktype::IPV4, &ip_packet());
        for family in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            check(linktype::NULL, &[&family[..], &ip_packet()].concat());
        }
        check(
            linktype::LOOP,
            &[&2u32.to_be_bytes()[..], &ip_packet()].concat(),
        );
        let mut sll = [0u8; 16];
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        check(linktype::LINUX_SLL, &[&sll[..], &ip_packet()].concat());
        let mut sll2 = [0u8; 20];
        sll2[..2].copy_from_slice(&0x0800u16.to_be_bytes());
        check(linktype::LINUX_SLL2, &[&sll2[..], &ip_packet()].concat());
    }

    #[test]
    fn a_cut_frame_keeps_its_wire_length() {
        let packet = ip_packet();
        let seg = decode(linktype::RAW, &packet[..packet.len() - 5]).unwrap();
        assert_eq!(seg.payload.len(), PAYLOAD.len() - 5);
        assert_eq!(seg.wire_len, PAYLOAD.len() as u32);
    }

    #[test]
    fn what_is_not_tcp_says_why() {
        let mut udp = Vec::new();
        PacketBuilder::ipv4([127, 0, 0, 11], [127, 0, 0, 12], 64)
            .udp(53, 53)
            .write(&mut udp, b"dns")
            .unwrap();
        assert_eq!(decode(linktype::RAW, &udp).unwrap_err(), Skip::NotTcp);
        let mut fragment = ip_packet();
        fragment[6] |= 0x20; // more fragments
        assert_eq!(
            decode(linktype::RAW, &fragment).unwrap_err(),
            Skip::Fragment
        );
        assert_eq!(
            decode(linktype::RAW, &[0x45, 0]).unwrap_err(),
            Skip::Malformed
        );
        assert_eq!(
            decode(147, &ip_packet()).unwrap_err(),
            Skip::UnsupportedLink
        );
    }
}
