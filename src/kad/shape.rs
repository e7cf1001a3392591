//! A Kademlia message's entries, counted on its bytes before it is decoded: 64 KiB
//! of empty peer records or addresses would otherwise decode into tens of
//! thousands of allocations.

use crate::kad::record::MAX_RECORD_ADDRS;
use crate::scan::{count_field, fields, Malformed};

// Field numbers (wire/kad.proto).
const MSG_REQUEST: u64 = 1;
const MSG_RESPONSE: u64 = 2;
const SENDER: u64 = 2;
const RESP_CLOSER: u64 = 3;
const RESP_PROVIDERS: u64 = 5;
const PROVIDER_PEER: u64 = 1;
const RECORD_ADDRS: u64 = 2;
/// Fields a `KadMessage` has (one of two), with slack for unknown ones.
const MAX_TOP_FIELDS: usize = 4;
/// Fields of a request or response: id, sender, body or lists, and slack.
const MAX_BODY_FIELDS: usize = 8;

/// Whether `bytes` hold at most `k` closer nodes, `max_providers` providers and
/// `MAX_RECORD_ADDRS` addresses per record; `Err` if they are not protobuf.
pub(crate) fn within_limits(
    bytes: &[u8],
    k: usize,
    max_providers: usize,
) -> Result<bool, Malformed> {
    let mut top = 0;
    for f in fields(bytes) {
        let (field, body) = f?;
        top += 1;
        let body = body.unwrap_or_default();
        let ok = match field {
            MSG_REQUEST => check_body(body, false, k, max_providers)?,
            MSG_RESPONSE => check_body(body, true, k, max_providers)?,
            _ => true,
        };
        if !ok || top > MAX_TOP_FIELDS {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A request (its sender record) or a response (sender and lists of records).
fn check_body(
    body: &[u8],
    response: bool,
    k: usize,
    max_providers: usize,
) -> Result<bool, Malformed> {
    let (mut n, mut closer, mut providers, mut senders) = (0, 0, 0, 0);
    for f in fields(body) {
        let (field, inner) = f?;
        match field {
            SENDER => senders += 1,
            RESP_CLOSER if response => closer += 1,
            RESP_PROVIDERS if response => providers += 1,
            _ => n += 1,
        }
        let is_record = field == SENDER || (response && field == RESP_CLOSER);
        if let (true, Some(record)) = (is_record, inner) {
            if count_field(record, RECORD_ADDRS)? > MAX_RECORD_ADDRS {
                return Ok(false);
            }
        }
        if let (true, RESP_PROVIDERS, Some(provider)) = (response, field, inner) {
            // One record in each (a repeated one would be merged, addresses and all).
            let mut peers = 0;
            for f in fields(provider) {
                let (inner_field, record) = f?;
                if inner_field == PROVIDER_PEER {
                    peers += 1;
                    let addrs = count_field(record.unwrap_or_default(), RECORD_ADDRS)?;
                    if peers > 1 || addrs > MAX_RECORD_ADDRS {
                        return Ok(false);
                    }
                }
            }
        }
    }
    Ok(closer <= k && providers <= max_providers && senders <= 1 && n <= MAX_BODY_FIELDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use prost::Message;

    fn response(closer: usize, addrs: usize) -> Vec<u8> {
        let record = wire::PeerRecord {
            addrs: vec![String::new(); addrs],
            ..Default::default()
        };
        wire::KadMessage {
            msg: Some(wire::kad_message::Msg::Response(wire::KadResponse {
                id: 1,
                sender: Some(record.clone()),
                closer: vec![record; closer],
                providers: vec![],
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn answers_over_the_limits_are_refused_before_decoding() {
        assert_eq!(within_limits(&response(20, 8), 20, 20), Ok(true));
        assert_eq!(within_limits(&response(21, 1), 20, 20), Ok(false), "nodes");
        assert_eq!(
            within_limits(&response(1, 9), 20, 20),
            Ok(false),
            "addresses"
        );
        // 64 KiB of empty records: refused on a scan.
        let mut bytes = vec![0x12, 0x80, 0xf4, 0x03];
        bytes.extend(std::iter::repeat_n([0x1a, 0x00], 32_000).flatten());
        assert_eq!(within_limits(&bytes, 20, 20), Ok(false));
        assert_eq!(within_limits(&[0xff, 0xff], 20, 20), Err(Malformed));
    }
}
