//! Values the unit tests of several modules share.

use reddit_shared::ids::PostId;
use reddit_shared::protocol::post::PostView;

/// A fresh unsigned post by Ann in r/rust, titled "t" with body "b",
/// nothing voted or commented yet.
pub fn post() -> PostView {
    PostView {
        subreddit: "rust".parse().unwrap(),
        id: PostId::new(),
        author: "Ann".into(),
        title: "t".into(),
        body: "b".into(),
        repost_of: None,
        score: 0,
        ups: 0,
        downs: 0,
        comments: 0,
        created_at: 0,
        signature: None,
    }
}
