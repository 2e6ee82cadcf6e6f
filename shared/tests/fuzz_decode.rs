//! Property tests: decoding arbitrary or mutated bytes as any request never panics;
//! it yields a value or a `malformed`/`invalid_request` error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use reddit_shared::codec::{decode, encode};
use reddit_shared::error::ErrorCode;
use reddit_shared::protocol::comment::{CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::{ListDmsRequest, MarkReadRequest, ReplyDmRequest, SendDmRequest};
use reddit_shared::protocol::feed::FeedRequest;
use reddit_shared::protocol::internal::{
    AuditExportRequest, DeliverDm, FeedCandidatesRequest, SyncBatch,
};
use reddit_shared::protocol::post::{CreatePostRequest, GetPostRequest, ListPostsRequest};
use reddit_shared::protocol::subreddit::{CreateSubredditRequest, MembershipRequest};
use reddit_shared::protocol::user::{LoginRequest, RegisterRequest};
use reddit_shared::protocol::vote::{VoteRequest, VoteTarget};
use reddit_shared::protocol::{PostRef, Validate};
use serde::de::DeserializeOwned;

fn try_all(bytes: &[u8]) {
    fn one<T: DeserializeOwned + Validate>(bytes: &[u8]) {
        match decode::<T>(bytes) {
            Ok(v) => {
                let _ = v.validate();
            }
            Err(e) => assert!(
                matches!(e.code, ErrorCode::Malformed | ErrorCode::InvalidRequest),
                "{e}"
            ),
        }
    }
    one::<RegisterRequest>(bytes);
    one::<LoginRequest>(bytes);
    one::<CreateSubredditRequest>(bytes);
    one::<MembershipRequest>(bytes);
    one::<CreatePostRequest>(bytes);
    one::<GetPostRequest>(bytes);
    one::<ListPostsRequest>(bytes);
    one::<CreateCommentRequest>(bytes);
    one::<CommentTreeRequest>(bytes);
    one::<VoteRequest>(bytes);
    one::<FeedRequest>(bytes);
    one::<SendDmRequest>(bytes);
    one::<ReplyDmRequest>(bytes);
    one::<ListDmsRequest>(bytes);
    one::<MarkReadRequest>(bytes);
    one::<SyncBatch>(bytes);
    one::<DeliverDm>(bytes);
    one::<FeedCandidatesRequest>(bytes);
    one::<AuditExportRequest>(bytes);
}

/// Valid requests to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let sub = "rust_lang".parse().unwrap();
    vec![
        encode(&CreatePostRequest {
            subreddit: sub,
            title: "hello".into(),
            body: "world".into(),
            repost_of: Some(PostRef {
                subreddit: "other".parse().unwrap(),
                id: reddit_shared::ids::PostId::new(),
            }),
            signature: None,
        })
        .unwrap(),
        encode(&VoteRequest {
            subreddit: "rust".parse().unwrap(),
            target: VoteTarget::Comment,
            id: uuid::Uuid::now_v7(),
            value: -1,
        })
        .unwrap(),
        encode(&MarkReadRequest {
            ids: vec![reddit_shared::ids::DmId::new(); 3],
        })
        .unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        try_all(&bytes);
    }

    #[test]
    fn arbitrary_maps_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256), n in 0u8..16) {
        // A map header followed by anything: exercises the field decoding paths.
        let mut bytes = vec![0x80 | n];
        bytes.extend(tail);
        try_all(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = seeds()[which].clone();
        for (pos, byte, kind) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let at = pos % bytes.len();
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        try_all(&bytes);
    }
}
