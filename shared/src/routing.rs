//! The shard hash (contract): `shard = fnv1a_64(lowercase(key)) % shards`.

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over the bytes of `data`.
pub fn fnv1a_64(data: &[u8]) -> u64 {
    data.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard that owns `key` (a username or subreddit name, any case) among `shards`.
/// `shards` of 0 is treated as 1.
pub fn shard_for(key: &str, shards: u32) -> u32 {
    let hash = key.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte.to_ascii_lowercase())).wrapping_mul(FNV_PRIME)
    });
    let n = u64::from(shards.max(1));
    // The remainder is < shards, which is a u32.
    u32::try_from(hash % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn case_insensitive() {
        for n in 1..10 {
            assert_eq!(shard_for("Alice", n), shard_for("alice", n));
        }
        assert_eq!(shard_for("anything", 1), 0);
        for key in ["alice", "Bob", "r_Rust_2", "ÄÖ-x"] {
            let lower = key.to_ascii_lowercase();
            assert_eq!(
                shard_for(key, 7),
                (fnv1a_64(lower.as_bytes()) % 7) as u32,
                "{key}"
            );
        }
        assert_eq!(shard_for("anything", 0), 0);
    }
}
