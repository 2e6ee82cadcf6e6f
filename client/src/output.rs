//! Readable terminal output for the CLI (`--json` prints the replies as JSON instead).

use reddit_shared::protocol::admin::{AuditReport, ShardStats};
use reddit_shared::protocol::comment::{CommentTree, CommentView};
use reddit_shared::protocol::dm::{DmPage, DmView};
use reddit_shared::protocol::post::{PostPage, PostView};
use reddit_shared::protocol::subreddit::SubredditView;
use reddit_shared::protocol::user::UserView;

/// `2026-11-23 16:40 UTC` for Unix milliseconds.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A user.
pub fn user(u: &UserView) -> String {
    let joined = if u.joined.is_empty() {
        "none".to_owned()
    } else {
        u.joined
            .iter()
            .map(|n| format!("r/{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "u/{}\n  post karma {} · comment karma {}\n  joined: {joined}\n  since {}",
        u.username,
        u.post_karma,
        u.comment_karma,
        time(u.created_at)
    )
}

/// A subreddit.
pub fn subreddit(s: &SubredditView) -> String {
    let desc = if s.description.is_empty() {
        String::new()
    } else {
        format!(" — {}", s.description)
    };
    format!(
        "r/{}{desc}\n  {} · {} posts · created by u/{} on {}",
        s.name,
        members(s.members),
        s.posts,
        s.creator,
        time(s.created_at)
    )
}

/// One line per subreddit.
pub fn subreddits(list: &[SubredditView]) -> String {
    if list.is_empty() {
        return "no subreddits".to_owned();
    }
    list.iter()
        .map(|s| format!("{:>14}  r/{}", members(s.members), s.name))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A post in full.
pub fn post(p: &PostView) -> String {
    let mut out = format!(
        "[{:+}] {}\n  by u/{} in r/{} · {} · {} comments · ↑{} ↓{}\n  id {}",
        p.score,
        p.title,
        p.author,
        p.subreddit,
        time(p.created_at),
        p.comments,
        p.ups,
        p.downs,
        p.id
    );
    if let Some(orig) = &p.repost_of {
        out.push_str(&format!("\n  repost of r/{}/{}", orig.subreddit, orig.id));
    }
    if !p.body.is_empty() {
        out.push_str(&format!("\n\n{}", p.body));
    }
    out
}

/// One line per post, and the cursor.
pub fn posts(page: &PostPage) -> String {
    if page.posts.is_empty() {
        return "no posts".to_owned();
    }
    let mut lines: Vec<String> = page
        .posts
        .iter()
        .map(|p| {
            format!(
                "{:>5}  {}  (r/{} · u/{} · {} comments)\n       r/{}/{}",
                p.score, p.title, p.subreddit, p.author, p.comments, p.subreddit, p.id
            )
        })
        .collect();
    if let Some(c) = &page.next_cursor {
        lines.push(format!("more: --cursor '{c}'"));
    }
    lines.join("\n")
}

/// A comment.
pub fn comment(c: &CommentView) -> String {
    format!("[{:+}] u/{}: {}\n  id {}", c.score, c.author, c.body, c.id)
}

/// A comment tree, indented by depth.
pub fn tree(t: &CommentTree) -> String {
    fn walk(c: &CommentView, indent: usize, out: &mut Vec<String>) {
        let pad = "  ".repeat(indent);
        out.push(format!("{pad}[{:+}] u/{} · {}", c.score, c.author, c.id));
        for line in c.body.lines() {
            out.push(format!("{pad}  {line}"));
        }
        for r in &c.replies {
            walk(r, indent + 1, out);
        }
    }
    let mut out = Vec::new();
    for c in &t.comments {
        walk(c, 0, &mut out);
    }
    if out.is_empty() {
        out.push("no comments".to_owned());
    }
    if t.truncated {
        out.push(format!("(showing part of {} comments)", t.total));
    }
    out.join("\n")
}

/// `1 member`, `2 members`.
pub fn members(n: u64) -> String {
    if n == 1 {
        "1 member".to_owned()
    } else {
        format!("{n} members")
    }
}

/// A DM just sent (no read mark: that is the recipient's).
pub fn sent_dm(d: &DmView) -> String {
    let mut d = d.clone();
    d.read = true;
    format!("sent {}", dm(&d).trim_start())
}

/// A DM; `●` marks it unread.
pub fn dm(d: &DmView) -> String {
    let mark = if d.read { " " } else { "●" };
    let reply = d
        .in_reply_to
        .map(|id| format!(" (reply to {id})"))
        .unwrap_or_default();
    format!(
        "{mark} {} → {} · {}{reply}\n  {}\n  id {}",
        d.from,
        d.to,
        time(d.created_at),
        d.body,
        d.id
    )
}

/// A page of DMs.
pub fn dms(page: &DmPage) -> String {
    let mut lines: Vec<String> = page.messages.iter().map(dm).collect();
    if lines.is_empty() {
        lines.push("no messages".to_owned());
    }
    lines.push(format!("{} unread", page.unread));
    if let Some(c) = &page.next_cursor {
        lines.push(format!("more: --cursor '{c}'"));
    }
    lines.join("\n")
}

/// Per-shard stats, then (durable mode) what each operation wrote to the logs.
pub fn stats(all: &[ShardStats]) -> String {
    let rows = all.iter().map(|s| {
        let (per_append, append_ms, per_write) = if s.wal_records > 0 {
            let records = s.wal_records as f64;
            (
                format!("{:.1}", s.wal_entries as f64 / records),
                format!("{:.2}", s.wal_append_us as f64 / records / 1000.0),
                format!("{:.0}", s.wal_bytes as f64 / s.wal_entries.max(1) as f64),
            )
        } else {
            ("-".to_owned(), "-".to_owned(), "-".to_owned())
        };
        vec![
            s.shard.to_string(),
            s.users.to_string(),
            s.subreddits.to_string(),
            s.posts.to_string(),
            s.comments.to_string(),
            s.votes.to_string(),
            s.dms.to_string(),
            s.requests.to_string(),
            s.errors.to_string(),
            s.queue_depth.to_string(),
            s.storage.clone(),
            s.wal_seq.to_string(),
            per_append,
            append_ms,
            per_write,
        ]
    });
    let table = reddit_client::table::render(
        &[
            "shard",
            "users",
            "subs",
            "posts",
            "comments",
            "votes",
            "dms",
            "requests",
            "errors",
            "queue",
            "storage",
            "log seq",
            "w/append",
            "append ms",
            "B/write",
        ],
        rows,
        0,
    );
    match log_by_op(all) {
        Some(log) => format!("{table}\n{log}"),
        None => table,
    }
}

/// What each operation wrote to the logs of all shards, the largest share
/// first; `None` without a log.
fn log_by_op(all: &[ShardStats]) -> Option<String> {
    let mut sum: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for (op, share) in all.iter().flat_map(|s| &s.wal_by_op) {
        let e = sum.entry(op.as_str()).or_default();
        e.0 += share.entries;
        e.1 += share.bytes;
    }
    let total: u64 = sum.values().map(|(_, b)| b).sum();
    if total == 0 {
        return None;
    }
    let mut ops: Vec<_> = sum.into_iter().collect();
    ops.sort_by_key(|(op, (_, bytes))| (std::cmp::Reverse(*bytes), *op));
    let rows = ops.into_iter().map(|(op, (entries, bytes))| {
        vec![
            op.to_owned(),
            entries.to_string(),
            bytes.to_string(),
            format!("{:.0}", bytes as f64 / entries.max(1) as f64),
            format!("{:.1}%", bytes as f64 * 100.0 / total as f64),
        ]
    });
    Some(reddit_client::table::render(
        &["logged by", "entries", "bytes", "B/entry", "share"],
        rows,
        0,
    ))
}

/// One shard's serving process, its lease and its standbys (`shards`), e.g.
/// `shard 0 of 2: instance ab12 (v0.1.0), pid 41 on box; lease renewed 130 ms
/// ago (TTL 1000 ms); 1 standby: pid 57 on box, 0 records behind`.
pub fn shard_info(i: &reddit_client::api::ShardInfo, shards: u32) -> String {
    let mut line = format!(
        "shard {} of {shards}: instance {} (v{})",
        i.shard, i.instance, i.version
    );
    match (i.pid, &i.host) {
        (Some(pid), Some(host)) => line.push_str(&format!(", pid {pid} on {host}")),
        (Some(pid), None) => line.push_str(&format!(", pid {pid}")),
        _ => {}
    }
    if let Some(l) = &i.lease {
        line.push_str(&format!(
            "; lease renewed {} ms ago (TTL {} ms){}; ",
            l.renewed_ms_ago,
            l.ttl_ms,
            if l.serving {
                ""
            } else {
                ", NOT SERVING: cannot confirm the lease"
            }
        ));
        let standbys: Vec<String> = l
            .standbys
            .iter()
            .map(|s| {
                let host = if s.host.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", s.host)
                };
                format!("pid {}{host}, {} records behind", s.pid, s.lag)
            })
            .collect();
        match standbys.len() {
            0 => line.push_str("no standby"),
            1 => line.push_str(&format!("1 standby: {}", standbys[0])),
            n => line.push_str(&format!("{n} standbys: {}", standbys.join("; "))),
        }
    }
    line
}

/// An audit report.
pub fn audit(r: &AuditReport) -> String {
    let c = &r.checked;
    let mut out = vec![format!(
        "audit over {} shard(s): {}\n  checked {} users, {} subreddits, {} posts, {} comments, {} votes, {} memberships, {} DMs",
        r.shards,
        if r.ok { "OK" } else { "VIOLATIONS FOUND" },
        c.users,
        c.subreddits,
        c.posts,
        c.comments,
        c.votes,
        c.memberships,
        c.dms
    )];
    if r.pending_sync > 0 {
        out.push(format!(
            "  note: {} cross-shard updates were still in flight; run again when the system is idle",
            r.pending_sync
        ));
    }
    for v in &r.violations {
        out.push(format!("  [{}] {}", v.kind, v.detail));
    }
    if r.violation_count > r.violations.len() as u64 {
        out.push(format!(
            "  … and {} more",
            r.violation_count - r.violations.len() as u64
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(super::time(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::time(1_767_225_600_000), "2026-01-01 00:00 UTC");
        assert_eq!(
            super::time(951_782_400_000 + 3_661_000),
            "2000-02-29 01:01 UTC"
        );
    }
}
