//! Hand-written protobuf codec for `meshwire.v1.Packet` (wire/packet.proto).
//!
//! The mux hot path writes a fragment straight from the message into the frame and
//! reads it back as a slice of the opened frame, with no intermediate `Vec` per
//! packet. The bytes are exactly what prost produces and accepts; the tests check both
//! directions against the generated types. Unknown fields are skipped.

use std::fmt;

use crate::mux::tag::Tag;

/// A decoded packet, borrowing its payload from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRef<'a> {
    /// Keepalive probe.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// A fragment of a channel message.
    Msg {
        /// Channel id.
        channel: u32,
        /// Last fragment of the message.
        eof: bool,
        /// Payload.
        data: &'a [u8],
        /// Whole message size, on a first fragment (0 = not given).
        total_len: u64,
        /// What the message is (meaningful on a first fragment only).
        tag: Tag,
    },
    /// Receive credit granted by the peer.
    Credit {
        /// Channel id.
        channel: u32,
        /// Additional bytes the sender may have in flight.
        bytes: u64,
    },
    /// The peer is closing; the raw `CloseReason` value.
    Close(i32),
    /// A packet kind this version does not know; ignored.
    Unknown,
}

/// Malformed packet bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// The bytes end inside a field.
    Truncated,
    /// A varint longer than 10 bytes.
    BadVarint,
    /// A wire type protobuf does not define, or the wrong one for a field.
    BadWireType,
    /// A field number of zero.
    BadTag,
    /// A message kind this version does not know.
    UnknownKind,
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketError::Truncated => "packet truncated",
            PacketError::BadVarint => "bad varint",
            PacketError::BadWireType => "bad wire type",
            PacketError::BadTag => "bad field number",
            PacketError::UnknownKind => "unknown message kind",
        })
    }
}

impl std::error::Error for PacketError {}

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

// Packet oneof fields.
const F_PING: u32 = 1;
const F_PONG: u32 = 2;
const F_MSG: u32 = 3;
const F_CREDIT: u32 = 4;
const F_CLOSE: u32 = 5;

/// Bytes a `PacketMsg` adds around its payload, at most.
pub const MSG_OVERHEAD_MAX: usize = 1 + 10 + 1 + 5 + 2 + 1 + 5 + 1 + 10 + 1 + TAG_MAX;

/// Bytes a tag adds at most: kind, request id and refuse reason, each key + varint.
const TAG_MAX: usize = 2 + 11 + 11;

// ------------------------------------------------------------------ encoding

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes `value` takes as a varint.
pub fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A nested message with one varint field `1 = value`, as the `field` of a Packet.
fn put_single_varint(out: &mut Vec<u8>, field: u32, value: u64) {
    put_key(out, field, WT_LEN);
    if value == 0 {
        put_varint(out, 0);
    } else {
        put_varint(out, 1 + varint_len(value) as u64);
        put_key(out, 1, WT_VARINT);
        put_varint(out, value);
    }
}

/// Appends a length-delimited `Packet{ping}`.
pub fn put_ping(out: &mut Vec<u8>, nonce: u64) {
    put_delimited(out, |b| put_single_varint(b, F_PING, nonce));
}

/// Appends a length-delimited `Packet{pong}`.
pub fn put_pong(out: &mut Vec<u8>, nonce: u64) {
    put_delimited(out, |b| put_single_varint(b, F_PONG, nonce));
}

/// Appends a length-delimited `Packet{close}`.
pub fn put_close(out: &mut Vec<u8>, reason: i32) {
    // Negative enum values are sign-extended to 64 bits, as protobuf does.
    put_delimited(out, |b| put_single_varint(b, F_CLOSE, reason as i64 as u64));
}

/// Appends a length-delimited `Packet{credit}`.
pub fn put_credit(out: &mut Vec<u8>, channel: u32, bytes: u64) {
    put_delimited(out, |b| {
        let mut inner = Vec::with_capacity(16);
        if channel != 0 {
            put_key(&mut inner, 1, WT_VARINT);
            put_varint(&mut inner, u64::from(channel));
        }
        if bytes != 0 {
            put_key(&mut inner, 2, WT_VARINT);
            put_varint(&mut inner, bytes);
        }
        put_key(b, F_CREDIT, WT_LEN);
        put_varint(b, inner.len() as u64);
        b.extend_from_slice(&inner);
    });
}

fn put_delimited(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let mut tmp = Vec::with_capacity(24);
    body(&mut tmp);
    put_varint(out, tmp.len() as u64);
    out.extend_from_slice(&tmp);
}

/// Appends a length-delimited `Packet{msg: PacketMsg{channel, eof, data, total_len,
/// tag}}`, copying `data` once, straight into `out`. Zero fields are left out (a
/// plain tag is none at all).
pub fn put_msg(out: &mut Vec<u8>, channel: u32, eof: bool, data: &[u8], total_len: u64, tag: Tag) {
    let (kind, request_id, refuse) = tag.to_wire();
    // An enum field is an int32: a negative one is written sign-extended to 64 bits.
    let refuse = i64::from(refuse) as u64;
    let mut inner_len = 0;
    if channel != 0 {
        inner_len += 1 + varint_len(u64::from(channel));
    }
    if eof {
        inner_len += 2;
    }
    if !data.is_empty() {
        inner_len += 1 + varint_len(data.len() as u64) + data.len();
    }
    for v in [total_len, kind, request_id, refuse] {
        if v != 0 {
            inner_len += 1 + varint_len(v);
        }
    }
    let packet_len = 1 + varint_len(inner_len as u64) + inner_len;
    out.reserve(varint_len(packet_len as u64) + packet_len);
    put_varint(out, packet_len as u64);
    put_key(out, F_MSG, WT_LEN);
    put_varint(out, inner_len as u64);
    if channel != 0 {
        put_key(out, 1, WT_VARINT);
        put_varint(out, u64::from(channel));
    }
    if eof {
        put_key(out, 2, WT_VARINT);
        out.push(1);
    }
    if !data.is_empty() {
        put_key(out, 3, WT_LEN);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
    for (field, v) in [(4, total_len), (5, kind), (6, request_id), (7, refuse)] {
        if v != 0 {
            put_key(out, field, WT_VARINT);
            put_varint(out, v);
        }
    }
}

/// Encoded size of [`put_msg`] for a payload of `data_len` bytes (upper bound).
pub fn msg_encoded_len(data_len: usize) -> usize {
    data_len + MSG_OVERHEAD_MAX
}

// ------------------------------------------------------------------ decoding

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, PacketError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or(PacketError::Truncated)?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PacketError::BadVarint)
    }

    fn key(&mut self) -> Result<(u32, u8), PacketError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| PacketError::BadTag)?;
        if field == 0 {
            return Err(PacketError::BadTag);
        }
        Ok((field, (key & 7) as u8))
    }

    fn bytes(&mut self) -> Result<&'a [u8], PacketError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| PacketError::Truncated)?;
        if len > self.buf.len() {
            return Err(PacketError::Truncated);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), PacketError> {
        let n = match wire_type {
            WT_VARINT => return self.varint().map(drop),
            WT_LEN => return self.bytes().map(drop),
            WT_I64 => 8,
            WT_I32 => 4,
            _ => return Err(PacketError::BadWireType),
        };
        if self.buf.len() < n {
            return Err(PacketError::Truncated);
        }
        self.buf = &self.buf[n..];
        Ok(())
    }
}

/// Decodes the varint fields of a nested message: `(field number, value)` pairs for the
/// fields in `wanted`, others skipped. Later occurrences win, as in protobuf.
fn varint_fields<const N: usize>(bytes: &[u8], wanted: [u32; N]) -> Result<[u64; N], PacketError> {
    let mut out = [0u64; N];
    let mut r = Reader { buf: bytes };
    while !r.buf.is_empty() {
        let (field, wt) = r.key()?;
        match wanted.iter().position(|&w| w == field) {
            Some(i) => {
                if wt != WT_VARINT {
                    return Err(PacketError::BadWireType);
                }
                out[i] = r.varint()?;
            }
            None => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn decode_msg(bytes: &[u8]) -> Result<PacketRef<'_>, PacketError> {
    let (mut channel, mut eof, mut data, mut total_len) = (0u32, false, &[][..], 0u64);
    let (mut kind, mut request_id, mut refuse) = (0u64, 0u64, 0i32);
    let mut r = Reader { buf: bytes };
    while !r.buf.is_empty() {
        let (field, wt) = r.key()?;
        match (field, wt) {
            (1, WT_VARINT) => channel = r.varint()? as u32,
            (2, WT_VARINT) => eof = r.varint()? != 0,
            (3, WT_LEN) => data = r.bytes()?,
            (4, WT_VARINT) => total_len = r.varint()?,
            (5, WT_VARINT) => kind = r.varint()?,
            (6, WT_VARINT) => request_id = r.varint()?,
            // int32 on the wire: the low 32 bits, as protobuf reads it.
            (7, WT_VARINT) => refuse = r.varint()? as i32,
            (1..=7, _) => return Err(PacketError::BadWireType),
            _ => r.skip(wt)?,
        }
    }
    let tag = Tag::from_wire(kind, request_id, refuse).ok_or(PacketError::UnknownKind)?;
    Ok(PacketRef::Msg {
        channel,
        eof,
        data,
        total_len,
        tag,
    })
}

/// Decodes one `Packet` body (without its length prefix).
pub fn decode_packet(body: &[u8]) -> Result<PacketRef<'_>, PacketError> {
    let mut r = Reader { buf: body };
    let mut packet = PacketRef::Unknown;
    while !r.buf.is_empty() {
        let (field, wt) = r.key()?;
        if !(F_PING..=F_CLOSE).contains(&field) {
            r.skip(wt)?;
            continue;
        }
        if wt != WT_LEN {
            return Err(PacketError::BadWireType);
        }
        let inner = r.bytes()?;
        // In a oneof the last field seen wins.
        packet = match field {
            F_PING => PacketRef::Ping(varint_fields(inner, [1])?[0]),
            F_PONG => PacketRef::Pong(varint_fields(inner, [1])?[0]),
            F_MSG => decode_msg(inner)?,
            F_CREDIT => {
                let [channel, bytes] = varint_fields(inner, [1, 2])?;
                PacketRef::Credit {
                    channel: channel as u32,
                    bytes,
                }
            }
            _ => PacketRef::Close(varint_fields(inner, [1])?[0] as i32),
        };
    }
    Ok(packet)
}

/// Iterates over the length-delimited packets of a frame's plaintext.
pub struct Packets<'a> {
    reader: Reader<'a>,
    failed: bool,
}

/// The packets of one opened frame.
pub fn packets(frame: &[u8]) -> Packets<'_> {
    Packets {
        reader: Reader { buf: frame },
        failed: false,
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<PacketRef<'a>, PacketError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.buf.is_empty() {
            return None;
        }
        let item = self.reader.bytes().and_then(decode_packet);
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::tag::RefuseReason;
    use crate::wire;
    use prost::Message;

    fn prost_packet(sum: wire::packet::Sum) -> Vec<u8> {
        wire::Packet { sum: Some(sum) }.encode_length_delimited_to_vec()
    }

    #[test]
    fn encoding_matches_prost_byte_for_byte() {
        use wire::packet::Sum;
        for nonce in [0u64, 1, 127, 128, u64::MAX] {
            let mut ours = Vec::new();
            put_ping(&mut ours, nonce);
            assert_eq!(ours, prost_packet(Sum::Ping(wire::Ping { nonce })));
            let mut ours = Vec::new();
            put_pong(&mut ours, nonce);
            assert_eq!(ours, prost_packet(Sum::Pong(wire::Pong { nonce })));
        }
        for (channel, bytes) in [(0u32, 0u64), (1, 0), (0, 5), (300, 1 << 40)] {
            let mut ours = Vec::new();
            put_credit(&mut ours, channel, bytes);
            assert_eq!(
                ours,
                prost_packet(Sum::Credit(wire::Credit { channel, bytes }))
            );
        }
        for reason in [0, 2, 6, -1] {
            let mut ours = Vec::new();
            put_close(&mut ours, reason);
            assert_eq!(ours, prost_packet(Sum::Close(wire::Close { reason })));
        }
        for (channel, eof, len, total_len, tag) in [
            (0u32, false, 0usize, 0u64, Tag::Plain),
            (1, true, 0, 0, Tag::Request(0)),
            (7, false, 1, 1 << 20, Tag::Request(u64::MAX)),
            (u32::MAX, true, 70_000, 0, Tag::Response(300)),
            (2, true, 0, 0, Tag::Refusal(9, RefuseReason::Busy)),
            (
                2,
                true,
                0,
                0,
                Tag::Refusal(u64::MAX, RefuseReason::Other(-1)),
            ),
        ] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = Vec::new();
            put_msg(&mut ours, channel, eof, &data, total_len, tag);
            let (kind, request_id, refuse_reason) = tag.to_wire();
            let theirs = prost_packet(Sum::Msg(wire::PacketMsg {
                channel,
                eof,
                data: data.clone(),
                total_len,
                kind: kind as i32,
                request_id,
                refuse_reason,
            }));
            assert_eq!(ours, theirs);
            assert!(ours.len() <= msg_encoded_len(len) + varint_len(ours.len() as u64));
        }
    }

    #[test]
    fn decoding_matches_prost_and_skips_unknown_fields() {
        let frame = [
            prost_packet(wire::packet::Sum::Ping(wire::Ping { nonce: 9 })),
            prost_packet(wire::packet::Sum::Msg(wire::PacketMsg {
                channel: 4,
                eof: false,
                data: b"abc".to_vec(),
                total_len: 9,
                kind: wire::MsgKind::Request as i32,
                request_id: 5,
                refuse_reason: 0,
            })),
            prost_packet(wire::packet::Sum::Credit(wire::Credit {
                channel: 4,
                bytes: 77,
            })),
            // A packet with an unknown oneof member (field 9) and one with an unknown
            // field inside PacketMsg (field 15, fixed64).
            vec![3, 0x4a, 1, 0],
            {
                let mut inner = vec![0x08, 2, 0x79];
                inner.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
                let mut p = vec![0x1a, inner.len() as u8];
                p.extend_from_slice(&inner);
                let mut d = vec![p.len() as u8];
                d.extend_from_slice(&p);
                d
            },
        ]
        .concat();
        let got: Vec<_> = packets(&frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                PacketRef::Ping(9),
                PacketRef::Msg {
                    channel: 4,
                    eof: false,
                    data: b"abc",
                    total_len: 9,
                    tag: Tag::Request(5),
                },
                PacketRef::Credit {
                    channel: 4,
                    bytes: 77
                },
                PacketRef::Unknown,
                PacketRef::Msg {
                    channel: 2,
                    eof: false,
                    data: b"",
                    total_len: 0,
                    tag: Tag::Plain,
                },
            ]
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        // Truncated at every offset inside one packet.
        let mut p = Vec::new();
        put_msg(&mut p, 3, true, b"hello world", 0, Tag::Plain);
        for cut in 1..p.len() {
            assert!(packets(&p[..cut]).any(|r| r.is_err()), "cut {cut}");
        }
        // Wrong wire type for the oneof member.
        assert_eq!(decode_packet(&[0x18, 1]), Err(PacketError::BadWireType));
        // Field number zero.
        assert_eq!(decode_packet(&[0x00, 1]), Err(PacketError::BadTag));
        // Overlong varint.
        assert_eq!(decode_packet(&[0xff; 11]), Err(PacketError::BadVarint));
        // Wire types 3, 4, 6, 7 are refused.
        assert_eq!(decode_packet(&[0x33]), Err(PacketError::BadWireType));
        // A message kind from the future.
        assert_eq!(
            decode_packet(&[0x1a, 2, 0x28, 9]),
            Err(PacketError::UnknownKind)
        );
    }

    #[test]
    fn varint_len_is_exact() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
