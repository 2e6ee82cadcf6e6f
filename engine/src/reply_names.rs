//! Cached replies as the engine persists them (log entries and snapshots):
//! the reply's MessagePack with each map key that is a known field name
//! written as its index in [`NAMES`], a one-byte integer, instead of the name.
//!
//! Replies go to clients as maps of field names (`docs/protocol.md`), and the
//! reply cache keeps that form to answer retries. A log entry carried it too:
//! the names were about half of a post's or a comment's reply (87 and 94
//! bytes of the keys alone). The compact form starts with the byte `0xc1`,
//! which MessagePack never uses, so a reply stored by an older version (a
//! plain MessagePack value) reads unchanged; [`expand`] gives back the exact
//! bytes [`compact`] was given. A reply that already has an integer map key
//! (none of the engine's replies does) is stored as it is, since its
//! expansion would be ambiguous.
//!
//! [`NAMES`] only grows at its end: an index, once written, names the same
//! field forever.

use std::borrow::Cow;
use thiserror::Error;

/// The first byte of a compact reply (MessagePack's one unused marker).
const MARK: u8 = 0xc1;

/// Nesting deeper than this is stored as it is (a comment's reply nests its
/// replies; the engine's write replies nest three levels at most).
const MAX_DEPTH: usize = 32;

/// Field names of the engine's write replies, by index. Append only.
pub const NAMES: &[&str] = &[
    "id",
    "subreddit",
    "author",
    "title",
    "body",
    "repost_of",
    "score",
    "ups",
    "downs",
    "comments",
    "created_at",
    "signature",
    "post_id",
    "parent_id",
    "depth",
    "replies",
    "value",
    "from",
    "to",
    "in_reply_to",
    "read",
    "marked",
    "unread",
    "member",
    "changed",
    "members",
    "name",
    "description",
    "creator",
    "posts",
    "username",
    "public_key",
    "post_karma",
    "comment_karma",
    "joined",
];

// An index is written as a positive fixint (one byte, 0 to 127).
const _: () = assert!(NAMES.len() <= 128);

/// A stored reply that is not valid compact MessagePack.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a stored reply is corrupt: {0}")]
pub struct Corrupt(&'static str);

/// `reply` as it is persisted: compact when that is shorter and exact, else
/// as it is.
pub fn compact(reply: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(reply.len());
    out.push(MARK);
    let mut r = Reader {
        bytes: reply,
        at: 0,
    };
    match transcode(&mut r, &mut out, Way::Compact, 0) {
        Ok(()) if r.at == reply.len() && out.len() < reply.len() => Cow::Owned(out),
        _ => Cow::Borrowed(reply),
    }
}

/// The reply `stored` holds, as it was given to [`compact`].
pub fn expand(stored: &[u8]) -> Result<Cow<'_, [u8]>, Corrupt> {
    let Some((&MARK, body)) = stored.split_first() else {
        return Ok(Cow::Borrowed(stored));
    };
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut r = Reader { bytes: body, at: 0 };
    transcode(&mut r, &mut out, Way::Expand, 0)?;
    if r.at != body.len() {
        return Err(Corrupt("bytes after the reply"));
    }
    Ok(Cow::Owned(out))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Compact,
    Expand,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt("length overflow"))?;
        let s = self.bytes.get(self.at..end).ok_or(Corrupt("truncated"))?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian length of `n` bytes.
    fn len(&mut self, n: usize) -> Result<usize, Corrupt> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }
}

/// Copies one value from `r` to `out`, map keys turned `way`.
fn transcode(r: &mut Reader<'_>, out: &mut Vec<u8>, way: Way, depth: usize) -> Result<(), Corrupt> {
    if depth > MAX_DEPTH {
        return Err(Corrupt("nested too deep"));
    }
    let start = r.at;
    let marker = r.byte()?;
    // Scalars and opaque payloads: how many bytes follow the marker.
    let payload = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(0),
        0xa0..=0xbf => Some(usize::from(marker & 0x1f)),
        0xcc | 0xd0 => Some(1),
        0xcd | 0xd1 => Some(2),
        0xca | 0xce | 0xd2 => Some(4),
        0xcb | 0xcf | 0xd3 => Some(8),
        0xd4 => Some(2),
        0xd5 => Some(3),
        0xd6 => Some(5),
        0xd7 => Some(9),
        0xd8 => Some(17),
        0xc4 | 0xd9 => Some(r.len(1)?),
        0xc5 | 0xda => Some(r.len(2)?),
        0xc6 | 0xdb => Some(r.len(4)?),
        0xc7 => Some(r.len(1)? + 1),
        0xc8 => Some(r.len(2)? + 1),
        0xc9 => Some(r.len(4)? + 1),
        _ => None,
    };
    if let Some(n) = payload {
        r.take(n)?;
        out.extend_from_slice(&r.bytes[start..r.at]);
        return Ok(());
    }
    let (items, map) = match marker {
        0x90..=0x9f => (usize::from(marker & 0x0f), false),
        0xdc => (r.len(2)?, false),
        0xdd => (r.len(4)?, false),
        0x80..=0x8f => (usize::from(marker & 0x0f), true),
        0xde => (r.len(2)?, true),
        0xdf => (r.len(4)?, true),
        _ => return Err(Corrupt("the unused marker 0xc1")),
    };
    out.extend_from_slice(&r.bytes[start..r.at]);
    for _ in 0..items {
        if map {
            key(r, out, way, depth + 1)?;
        }
        transcode(r, out, way, depth + 1)?;
    }
    Ok(())
}

/// Copies one map key, a known name turned into its index or back.
fn key(r: &mut Reader<'_>, out: &mut Vec<u8>, way: Way, depth: usize) -> Result<(), Corrupt> {
    let start = r.at;
    let marker = r.byte()?;
    match (way, marker) {
        // A name: its index if it has one.
        (Way::Compact, 0xa0..=0xbf) => {
            let name = r.take(usize::from(marker & 0x1f))?;
            match NAMES.iter().position(|n| n.as_bytes() == name) {
                Some(i) => out.push(i as u8),
                None => out.extend_from_slice(&r.bytes[start..r.at]),
            }
            Ok(())
        }
        // An integer key already: the compact form could not be told apart.
        (Way::Compact, 0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3) => {
            Err(Corrupt("an integer map key"))
        }
        (Way::Expand, 0x00..=0x7f) => {
            let name = NAMES
                .get(usize::from(marker))
                .ok_or(Corrupt("a field index this version does not know"))?;
            // As MessagePack writes a short string (every name is under 32 bytes).
            out.push(0xa0 | name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            Ok(())
        }
        _ => {
            r.at = start;
            transcode(r, out, way, depth)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reddit_shared::ids::{CommentId, DmId, PostId};
    use reddit_shared::protocol::comment::CommentView;
    use reddit_shared::protocol::dm::DmView;
    use reddit_shared::protocol::post::PostView;
    use reddit_shared::protocol::vote::VoteReply;
    use serde::Serialize;

    fn named<T: Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    fn post() -> PostView {
        PostView {
            subreddit: "rust".parse().unwrap(),
            id: PostId::new(),
            author: "alice".into(),
            title: "Hello".into(),
            body: "A body".into(),
            repost_of: None,
            score: 1,
            ups: 1,
            downs: 0,
            comments: 0,
            created_at: 1_764_000_000_000,
            signature: None,
        }
    }

    /// Every write reply the engine caches comes back byte for byte, shorter.
    #[test]
    fn replies_come_back_exactly_and_shorter() {
        let comment = CommentView {
            subreddit: "rust".parse().unwrap(),
            post_id: PostId::new(),
            id: CommentId::new(),
            parent_id: Some(CommentId::new()),
            author: "bob".into(),
            body: "a reply".into(),
            score: 1,
            ups: 1,
            downs: 0,
            depth: 1,
            created_at: 1_764_000_000_000,
            replies: vec![],
            signature: Some("ab".repeat(64)),
        };
        let dm = DmView {
            id: DmId::new(),
            from: "alice".into(),
            to: "bob".into(),
            body: "hi".into(),
            in_reply_to: None,
            created_at: 1,
            read: false,
        };
        let vote = VoteReply {
            score: -3,
            ups: 2,
            downs: 5,
            value: -1,
        };
        for (what, bytes, saved) in [
            ("post", named(&post()), 70),
            ("comment", named(&comment), 75),
            ("dm", named(&dm), 30),
            ("vote", named(&vote), 15),
        ] {
            let stored = compact(&bytes);
            assert_eq!(stored[0], MARK, "{what}");
            assert!(
                stored.len() + saved <= bytes.len(),
                "{what}: {} of {}",
                stored.len(),
                bytes.len()
            );
            assert_eq!(expand(&stored).unwrap(), bytes, "{what}");
        }
    }

    /// What older versions stored (a plain reply) reads as it is; a reply
    /// with an integer key, or one that is not MessagePack, is stored as it
    /// is, and a corrupt compact reply is an error, not a panic.
    #[test]
    fn plain_integer_keyed_and_corrupt_replies() {
        let plain = named(&post());
        assert_eq!(expand(&plain).unwrap(), plain);
        let int_keyed = rmp_serde::to_vec(&std::collections::BTreeMap::from([(1u8, "x")])).unwrap();
        assert_eq!(compact(&int_keyed), int_keyed);
        for junk in [&b""[..], b"\xc1", &[0x81, 0xa2, b'i']] {
            assert_eq!(compact(junk), junk);
        }
        assert!(expand(b"\xc1\x81\x7f\x01").is_err(), "an unknown index");
        assert!(expand(b"\xc1\x81\x00").is_err(), "truncated");
        assert!(expand(b"\xc1\x01\x02").is_err(), "trailing bytes");
        assert!(expand(b"\xc1\xc1").is_err());
    }

    /// A MessagePack value of any shape, with map keys drawn from the names.
    fn value() -> impl Strategy<Value = rmpv::Value> {
        use rmpv::Value;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let name = prop_oneof![
                proptest::sample::select(NAMES).prop_map(rmpv::Value::from),
                "[a-z_]{0,40}".prop_map(rmpv::Value::from),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(rmpv::Value::Array),
                proptest::collection::vec((name, inner), 0..20).prop_map(rmpv::Value::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_comes_back_exactly(v in value()) {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &v).unwrap();
            let stored = compact(&bytes);
            prop_assert!(stored.len() <= bytes.len());
            prop_assert_eq!(expand(&stored).unwrap(), &bytes[..]);
        }
    }
}
