//! Reading the shape of encoded protobuf without decoding it: which fields a message
//! holds and how often, so an input's size in entries is known (and refused) before
//! anything is allocated for it.

use prost::encoding::decode_varint;

/// The bytes are not protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The fields of an encoded message, in order: each field number with the body of a
/// length-delimited field (`None` for the other wire types).
pub(crate) fn fields(
    mut bytes: &[u8],
) -> impl Iterator<Item = Result<(u64, Option<&[u8]>), Malformed>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let next = next_field(&mut bytes);
        if next.is_err() {
            bytes = &[];
        }
        Some(next)
    })
}

/// Occurrences of `field` in an encoded message.
pub(crate) fn count_field(body: &[u8], field: u64) -> Result<usize, Malformed> {
    let mut n = 0;
    for f in fields(body) {
        if f?.0 == field {
            n += 1;
        }
    }
    Ok(n)
}

/// Reads one field's key and skips its value; the body of a length-delimited one.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<(u64, Option<&'a [u8]>), Malformed> {
    let key = decode_varint(buf).map_err(|_| Malformed)?;
    let field = key >> 3;
    if field == 0 {
        return Err(Malformed);
    }
    let skip = |buf: &mut &'a [u8], n: usize| -> Result<&'a [u8], Malformed> {
        if buf.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    };
    match key & 7 {
        0 => {
            decode_varint(buf).map_err(|_| Malformed)?;
            Ok((field, None))
        }
        1 => skip(buf, 8).map(|_| (field, None)),
        5 => skip(buf, 4).map(|_| (field, None)),
        2 => {
            let len = decode_varint(buf).map_err(|_| Malformed)?;
            let len = usize::try_from(len).map_err(|_| Malformed)?;
            skip(buf, len).map(|b| (field, Some(b)))
        }
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_listed_without_decoding_and_truncation_is_malformed() {
        // field 1 varint 150, field 2 bytes "ab", field 3 fixed32.
        let bytes = [0x08, 0x96, 0x01, 0x12, 2, b'a', b'b', 0x1d, 1, 2, 3, 4];
        let got: Vec<_> = fields(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(1, None), (2, Some(&b"ab"[..])), (3, None)]);
        assert_eq!(count_field(&bytes, 2), Ok(1));
        assert_eq!(count_field(&bytes[..5], 2), Err(Malformed));
        assert_eq!(count_field(&[0x00], 1), Err(Malformed), "field number 0");
        assert_eq!(count_field(&[0x0b], 1), Err(Malformed), "group wire type");
    }
}
