//! What the simulator reads of a feed page (a `PostPage` on the wire): each
//! post's subreddit, id and age. Feed pages are the largest replies the
//! simulator gets, and it reads three fields of each post: over NATS the
//! MessagePack is scanned ([`FeedPostRefs::from_msgpack`]), the other fields
//! skipped by their lengths without decoding or UTF-8 checks; over HTTP the
//! JSON is read with serde. Decoding whole pages with serde was about a
//! sixth of a client process's CPU, and skipping with serde (which still
//! checks every skipped string) about a tenth.

use reddit_shared::error::WireError;
use reddit_shared::ids::PostId;
use rmp::decode::read_marker;
use rmp::Marker;

/// The posts of a feed page, as far as the simulator reads them.
#[derive(Debug, serde::Deserialize)]
pub struct FeedPostRefs {
    /// In the page's order.
    pub posts: Vec<FeedPostRef>,
}

/// One post of a [`FeedPostRefs`].
#[derive(Debug, serde::Deserialize)]
pub struct FeedPostRef {
    /// The subreddit's name as the engine spells it (not checked: the
    /// simulator only looks its rank up in the names it made).
    pub subreddit: String,
    /// The post's id.
    pub id: PostId,
    /// Creation time (Unix milliseconds).
    pub created_at: i64,
}

/// How deep [`skip`] follows nested arrays and maps.
const MAX_DEPTH: u32 = 16;

fn bad(what: &str) -> WireError {
    WireError::internal(format!("could not decode the feed page: {what}"))
}

impl FeedPostRefs {
    /// Reads a MessagePack `PostPage` (a map with `posts`, an array of maps
    /// of named fields). Fields other than `subreddit`, `id` and `created_at`
    /// are skipped; a post without one of those three is an error.
    pub fn from_msgpack(mut buf: &[u8]) -> Result<Self, WireError> {
        let rd = &mut buf;
        let mut posts = Vec::new();
        for _ in 0..map_len(rd)? {
            if str_slice(rd)? != b"posts" {
                skip(rd, 0)?;
                continue;
            }
            let n = array_len(rd)?;
            posts.reserve(n.min(1024) as usize);
            for _ in 0..n {
                posts.push(post(rd)?);
            }
        }
        Ok(Self { posts })
    }
}

fn post(rd: &mut &[u8]) -> Result<FeedPostRef, WireError> {
    let (mut subreddit, mut id, mut created_at) = (None, None, None);
    for _ in 0..map_len(rd)? {
        match str_slice(rd)? {
            b"subreddit" => {
                let s = std::str::from_utf8(str_slice(rd)?).map_err(|_| bad("subreddit"))?;
                subreddit = Some(s.to_owned());
            }
            b"id" => {
                // An id is bin, 16 bytes (docs/protocol.md).
                let len = rmp::decode::read_bin_len(rd).map_err(|_| bad("id"))?;
                let raw: [u8; 16] = take(rd, len as usize)?.try_into().map_err(|_| bad("id"))?;
                id = Some(PostId(uuid::Uuid::from_bytes(raw)));
            }
            b"created_at" => {
                created_at =
                    Some(rmp::decode::read_int::<i64, _>(rd).map_err(|_| bad("created_at"))?);
            }
            _ => skip(rd, 0)?,
        }
    }
    match (subreddit, id, created_at) {
        (Some(subreddit), Some(id), Some(created_at)) => Ok(FeedPostRef {
            subreddit,
            id,
            created_at,
        }),
        _ => Err(bad("a post lacks subreddit, id or created_at")),
    }
}

fn map_len(rd: &mut &[u8]) -> Result<u32, WireError> {
    rmp::decode::read_map_len(rd).map_err(|_| bad("expected a map"))
}

fn array_len(rd: &mut &[u8]) -> Result<u32, WireError> {
    rmp::decode::read_array_len(rd).map_err(|_| bad("expected an array"))
}

/// The bytes of a string, borrowed.
fn str_slice<'a>(rd: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let len = rmp::decode::read_str_len(rd).map_err(|_| bad("expected a string"))?;
    take(rd, len as usize)
}

fn take<'a>(rd: &mut &'a [u8], len: usize) -> Result<&'a [u8], WireError> {
    if rd.len() < len {
        return Err(bad("truncated"));
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Ok(head)
}

/// Skips one value of any type, by its marker and lengths.
fn skip(rd: &mut &[u8], depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply"));
    }
    let marker = read_marker(rd).map_err(|_| bad("truncated"))?;
    let mut len = |n: usize| -> Result<usize, WireError> {
        let b = take(rd, n)?;
        Ok(b.iter().fold(0usize, |acc, x| (acc << 8) | usize::from(*x)))
    };
    let (bytes, items) = match marker {
        Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {
            (0, 0)
        }
        Marker::U8 | Marker::I8 => (1, 0),
        Marker::U16 | Marker::I16 => (2, 0),
        Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
        Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
        Marker::FixStr(n) => (usize::from(n), 0),
        Marker::Str8 | Marker::Bin8 => (len(1)?, 0),
        Marker::Str16 | Marker::Bin16 => (len(2)?, 0),
        Marker::Str32 | Marker::Bin32 => (len(4)?, 0),
        Marker::FixArray(n) => (0, usize::from(n)),
        Marker::Array16 => (0, len(2)?),
        Marker::Array32 => (0, len(4)?),
        Marker::FixMap(n) => (0, 2 * usize::from(n)),
        Marker::Map16 => (0, 2 * len(2)?),
        Marker::Map32 => (0, 2 * len(4)?),
        Marker::FixExt1 => (2, 0),
        Marker::FixExt2 => (3, 0),
        Marker::FixExt4 => (5, 0),
        Marker::FixExt8 => (9, 0),
        Marker::FixExt16 => (17, 0),
        Marker::Ext8 => (len(1)? + 1, 0),
        Marker::Ext16 => (len(2)? + 1, 0),
        Marker::Ext32 => (len(4)? + 1, 0),
        Marker::Reserved => return Err(bad("reserved marker 0xc1")),
    };
    take(rd, bytes)?;
    if items > rd.len() {
        // Every item takes at least a byte.
        return Err(bad("truncated"));
    }
    for _ in 0..items {
        skip(rd, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reddit_shared::protocol::post::{PostPage, PostView};
    use reddit_shared::protocol::PostRef;

    fn page() -> PostPage {
        let post = |sub: &str, created_at| PostView {
            subreddit: sub.parse().unwrap(),
            id: PostId::new(),
            author: "Ann".into(),
            title: "a title ☃".into(),
            body: "a body long enough to be worth skipping ".repeat(20),
            repost_of: Some(PostRef {
                subreddit: "Other".parse().unwrap(),
                id: PostId::new(),
            }),
            score: -300,
            ups: 70_000,
            downs: 5,
            comments: 9,
            created_at,
            signature: Some("ab".repeat(64)),
        };
        PostPage {
            posts: vec![post("Rust", 7), post("cooking", 1_790_000_000_000)],
            next_cursor: Some("1.0~x".into()),
        }
    }

    fn refs(r: FeedPostRefs) -> Vec<(String, PostId, i64)> {
        r.posts
            .into_iter()
            .map(|p| (p.subreddit, p.id, p.created_at))
            .collect()
    }

    #[test]
    fn a_whole_page_reads_the_same_from_messagepack_and_json() {
        let page = page();
        let expect: Vec<_> = page
            .posts
            .iter()
            .map(|p| (p.subreddit.as_str().to_owned(), p.id, p.created_at))
            .collect();
        let wire = reddit_shared::codec::encode(&page).unwrap();
        assert_eq!(refs(FeedPostRefs::from_msgpack(&wire).unwrap()), expect);
        let json = serde_json::to_vec(&page).unwrap();
        assert_eq!(refs(serde_json::from_slice(&json).unwrap()), expect);
        let empty = reddit_shared::codec::encode(&PostPage::default()).unwrap();
        assert!(FeedPostRefs::from_msgpack(&empty).unwrap().posts.is_empty());
    }

    #[test]
    fn skipping_covers_every_kind_of_value() {
        let value = rmpv::Value::Map(vec![
            (rmpv::Value::from("ext"), rmpv::Value::Ext(3, vec![1, 2, 3])),
            (rmpv::Value::from("bin"), rmpv::Value::Binary(vec![7; 300])),
            (rmpv::Value::from("f"), rmpv::Value::F64(1.5)),
            (rmpv::Value::from("big"), rmpv::Value::from(u64::MAX)),
            (
                rmpv::Value::from("nested"),
                rmpv::Value::Array(vec![rmpv::Value::Nil; 70_000]),
            ),
            (rmpv::Value::from("posts"), rmpv::Value::Array(Vec::new())),
        ]);
        let mut wire = Vec::new();
        rmpv::encode::write_value(&mut wire, &value).unwrap();
        assert!(FeedPostRefs::from_msgpack(&wire).unwrap().posts.is_empty());
    }

    #[test]
    fn bad_pages_are_errors_not_panics() {
        let wire = reddit_shared::codec::encode(&page()).unwrap();
        // Every truncation of a valid page.
        for cut in 0..wire.len() {
            assert!(FeedPostRefs::from_msgpack(&wire[..cut]).is_err(), "{cut}");
        }
        // A length far past the end, a reserved marker, deep nesting.
        for bad in [
            &[0x81, 0xa1, b'x', 0xdb, 0xff, 0xff, 0xff, 0xff][..],
            &[0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0x81, 0xa1, b'x', 0xc1][..],
            &[0x91, 0x80][..],
            &[0x81, 0xa5, b'p', b'o', b's', b't', b's', 0x91, 0x80][..],
        ] {
            assert!(FeedPostRefs::from_msgpack(bad).is_err(), "{bad:?}");
        }
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100));
        deep.push(0xc0);
        assert!(FeedPostRefs::from_msgpack(&deep).is_err());
    }
}
