//! 256-bit Kademlia keys and the XOR metric.

use crate::identity::PeerId;

/// A point in the 256-bit key space; a node's key is its PeerId.
pub type Key = [u8; 32];

/// XOR distance, compared as a big-endian 256-bit number.
pub fn distance(a: &Key, b: &Key) -> Key {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// The bucket `other` falls in as seen from `local`: 255 for the farthest half of the
/// space, 0 for the nearest single key; `None` for `local` itself.
pub fn bucket_index(local: &Key, other: &Key) -> Option<usize> {
    let d = distance(local, other);
    let zeros = leading_zeros(&d);
    (zeros < 256).then(|| 255 - zeros)
}

fn leading_zeros(k: &Key) -> usize {
    let mut n = 0;
    for byte in k {
        if *byte == 0 {
            n += 8;
        } else {
            return n + byte.leading_zeros() as usize;
        }
    }
    n
}

/// The key of a peer.
pub fn key_of(peer: &PeerId) -> Key {
    *peer.as_bytes()
}

/// The DHT key of a name (a service, a partition: `"acc/partition/X"`): SHA-256 of
/// the label `meshwire/v1 name`, the name's length as a 4-byte big-endian number,
/// and the name's UTF-8 bytes. Any implementation that hashes the same way finds
/// the same providers.
///
/// ```
/// use meshwire::kad::key::key_from_name;
/// assert_eq!(key_from_name("acc/partition/X"), key_from_name("acc/partition/X"));
/// assert_ne!(key_from_name("acc/partition/X"), key_from_name("acc/partition/Y"));
/// ```
pub fn key_from_name(name: &str) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"meshwire/v1 name");
    ctx.update(&(name.len() as u32).to_be_bytes());
    ctx.update(name.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(ctx.finish().as_ref());
    k
}

/// A random key in bucket `index` of `local` (for refreshes), from 32 random bytes.
pub fn key_in_bucket(local: &Key, index: usize, random: [u8; 32]) -> Key {
    // Keep the top (255 - index) bits of `local`, flip the next, randomize the rest.
    let prefix = 255 - index;
    let mut k = random;
    for bit in 0..=prefix {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let local_bit = local[byte] & mask;
        let want = if bit == prefix {
            local_bit ^ mask
        } else {
            local_bit
        };
        k[byte] = (k[byte] & !mask) | want;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_counts_shared_prefix_bits() {
        let local = [0u8; 32];
        let mut far = [0u8; 32];
        far[0] = 0x80;
        assert_eq!(bucket_index(&local, &far), Some(255));
        let mut near = [0u8; 32];
        near[31] = 1;
        assert_eq!(bucket_index(&local, &near), Some(0));
        assert_eq!(bucket_index(&local, &local), None);
    }

    #[test]
    fn random_keys_land_in_the_asked_bucket() {
        let local = [0x5au8; 32];
        for index in [0usize, 1, 7, 8, 100, 254, 255] {
            let k = key_in_bucket(&local, index, [0xc3; 32]);
            assert_eq!(bucket_index(&local, &k), Some(index), "bucket {index}");
        }
    }
}
