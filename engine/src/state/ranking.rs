//! Ranking functions (DESIGN §6) and the ordered key every listing sorts by.
//!
//! Every order is "largest [`SortKey`] first", so one merge serves lists drawn from
//! many subreddits and shards. Ties on the rank fall back to the id, and ids are
//! UUID v7, so the newer item wins a tie.

use reddit_shared::ids::PostId;
use reddit_shared::protocol::post::{PostSort, PostView};
use std::cmp::Ordering;

/// Reddit's epoch for `hot`, in seconds.
pub const HOT_EPOCH_SECS: f64 = 1_134_028_003.0;
/// z for an 80% confidence Wilson lower bound, as Reddit's `best` uses.
pub const WILSON_Z: f64 = 1.281_551_565_545;

/// Reddit's hot: `sign(s)·log10(max(|s|,1)) + (t − 1134028003)/45000`, `t` in seconds.
pub fn hot(score: i64, created_at_ms: i64) -> f64 {
    // Scores and times are far below 2^53, so these conversions are exact.
    let s = score as f64;
    let order = s.abs().max(1.0).log10();
    let sign = s.signum() * f64::from(u8::from(score != 0));
    let seconds = created_at_ms as f64 / 1000.0;
    sign * order + (seconds - HOT_EPOCH_SECS) / 45_000.0
}

/// Controversy: `(ups+downs)^(min(ups,downs)/max(ups,downs))`, 0 without both kinds.
pub fn controversial(ups: u32, downs: u32) -> f64 {
    if ups == 0 || downs == 0 {
        return 0.0;
    }
    let (u, d) = (f64::from(ups), f64::from(downs));
    (u + d).powf(u.min(d) / u.max(d))
}

/// Wilson score lower bound of the upvote share, as Reddit's `best` comment order.
pub fn wilson(ups: u32, downs: u32) -> f64 {
    let n = f64::from(ups) + f64::from(downs);
    if n == 0.0 {
        return 0.0;
    }
    let z = WILSON_Z;
    let p = f64::from(ups) / n;
    (p + z * z / (2.0 * n) - z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt())
        / (1.0 + z * z / n)
}

/// A totally ordered f64 (by `total_cmp`).
#[derive(Clone, Copy, Debug)]
pub struct Rank(pub f64);

impl PartialEq for Rank {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Rank {}
impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Where a post stands in one order: larger first.
pub type SortKey = (Rank, PostId);

/// The rank of a post with these numbers under `sort`.
pub fn post_rank(sort: PostSort, score: i64, ups: u32, downs: u32, created_at_ms: i64) -> Rank {
    Rank(match sort {
        PostSort::Hot => hot(score, created_at_ms),
        PostSort::New => created_at_ms as f64,
        PostSort::Top => score as f64,
        PostSort::Controversial => controversial(ups, downs),
    })
}

/// The key of a post view under `sort` (the same numbers the owning shard indexes by).
pub fn view_key(sort: PostSort, post: &PostView) -> SortKey {
    (
        post_rank(sort, post.score, post.ups, post.downs, post.created_at),
        post.id,
    )
}

/// The cursor text for a key: `<rank>~<id>`.
pub fn encode_cursor(key: &SortKey) -> String {
    format!("{:?}~{}", key.0 .0, key.1)
}

/// Parses a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Option<SortKey> {
    let (rank, id) = cursor.split_once('~')?;
    Some((Rank(rank.parse().ok()?), id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hot_matches_hand_computed_values() {
        // score 0 at the epoch: 0.
        assert!(close(hot(0, 1_134_028_003_000), 0.0));
        // score 10 at the epoch: log10(10) = 1.
        assert!(close(hot(10, 1_134_028_003_000), 1.0));
        // score -100 at the epoch: -2.
        assert!(close(hot(-100, 1_134_028_003_000), -2.0));
        // score 1, 45000 s after the epoch: 0 + 1.
        assert!(close(hot(1, 1_134_073_003_000), 1.0));
        // 2026-01-01T00:00:00Z = 1767225600 s, score 100:
        // 2 + (1767225600 - 1134028003)/45000 = 14073.0577111...
        let expected = 2.0 + (1_767_225_600.0 - 1_134_028_003.0) / 45_000.0;
        assert!(close(hot(100, 1_767_225_600_000), expected));
        assert!(close(expected, 14_073.057_711_111_11), "{expected}");
        // 12.5 hours newer beats 10x the score.
        assert!(hot(1, 1_767_225_600_000 + 45_000_000) > hot(10, 1_767_225_600_000) - 1e-9);
    }

    #[test]
    fn controversial_matches_hand_computed_values() {
        assert_eq!(controversial(0, 5), 0.0);
        assert_eq!(controversial(5, 0), 0.0);
        // 10 up, 10 down: 20^1 = 20.
        assert!(close(controversial(10, 10), 20.0));
        // 9 up, 3 down: 12^(1/3) = 2.2894284851066637.
        assert!(close(controversial(9, 3), 2.289_428_485_106_663_7));
        assert!(controversial(10, 10) > controversial(100, 1));
    }

    #[test]
    fn wilson_matches_hand_computed_values() {
        assert_eq!(wilson(0, 0), 0.0);
        // 1 up, 0 down: 1/(1+z^2) = 0.37844...
        let z2 = WILSON_Z * WILSON_Z;
        assert!(close(wilson(1, 0), 1.0 / (1.0 + z2)));
        assert!(
            close(wilson(1, 0), 0.378_447_503_225_206_15),
            "{}",
            wilson(1, 0)
        );
        // 10 up 0 down ranks above 1 up 0 down; 50/50 at n=100 is below 0.5.
        assert!(wilson(10, 0) > wilson(1, 0));
        assert!(wilson(50, 50) < 0.5 && wilson(50, 50) > 0.43);
    }

    #[test]
    fn cursor_round_trips() {
        let key = (Rank(14_073.057_724_377_777), PostId::new());
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        let key = (Rank(-3.0), PostId::new());
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        assert_eq!(decode_cursor("garbage"), None);
        assert_eq!(decode_cursor("1.0~not-a-uuid"), None);
    }
}
