//! Unit tests of the state machine: replay rebuilds the same state, deep threads,
//! vote arithmetic.

use super::*;
use reddit_shared::protocol::comment::{CommentSort, CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::ListDmsRequest;
use reddit_shared::protocol::post::PostSort;

fn un(s: &str) -> Username {
    s.parse().unwrap()
}
fn sn(s: &str) -> SubredditName {
    s.parse().unwrap()
}

/// Everything observable, order-independent.
fn fingerprint(s: &ShardState) -> Vec<String> {
    let mut out: Vec<String> = s.audit_records().map(|r| format!("{r:?}")).collect();
    let mut users: Vec<&String> = s.users.keys().collect();
    users.sort();
    for u in users {
        out.push(format!("{:?}", s.users[u].view()));
        for folder in [DmFolder::Inbox, DmFolder::Sent] {
            let page = s
                .list_dms(
                    s.users[u].name(),
                    &ListDmsRequest {
                        folder,
                        limit: Some(100),
                        ..Default::default()
                    },
                )
                .unwrap();
            out.push(format!("{page:?}"));
        }
    }
    let mut subs: Vec<&String> = s.subs.keys().collect();
    subs.sort();
    for k in subs {
        let name = s.subs[k].name().clone();
        out.push(format!("{:?}", s.get_subreddit(&name).unwrap()));
        for sort in [
            PostSort::Hot,
            PostSort::New,
            PostSort::Top,
            PostSort::Controversial,
        ] {
            let page = s.list_posts(&name, sort, Some(100), None).unwrap();
            for p in &page.posts {
                let tree = s
                    .comment_tree(&CommentTreeRequest {
                        subreddit: name.clone(),
                        post_id: p.id,
                        sort: CommentSort::Best,
                        limit: None,
                        root: None,
                    })
                    .unwrap();
                out.push(format!("{tree:?}"));
            }
            out.push(format!("{page:?}"));
        }
    }
    out.sort();
    out
}

fn busy_state() -> ShardState {
    let mut s = ShardState::new(0, 1);
    s.set_recording(true);
    let mut fx = Effects::default();
    let names = ["alice", "Bob", "carol", "dave"];
    for (i, n) in names.iter().enumerate() {
        s.register(&un(n), [i as u8 + 1; 32], 1_000 + i as i64)
            .unwrap();
    }
    s.create_subreddit(&un("alice"), &sn("rust"), "r".into(), 2_000)
        .unwrap();
    s.create_subreddit(&un("bob"), &sn("Cooking"), String::new(), 2_001)
        .unwrap();
    for n in names {
        s.set_membership(&un(n), &sn("rust"), true, &mut fx)
            .unwrap();
    }
    s.set_membership(&un("carol"), &sn("cooking"), true, &mut fx)
        .unwrap();
    s.set_membership(&un("carol"), &sn("cooking"), false, &mut fx)
        .unwrap();
    let mut posts = Vec::new();
    for i in 0..6 {
        let author = un(names[i % 4]);
        let sub = if i % 3 == 0 {
            sn("cooking")
        } else {
            sn("rust")
        };
        let p = s
            .create_post(
                &author,
                &sub,
                format!("t{i}"),
                "b".into(),
                None,
                3_000 + i as i64,
                &mut fx,
            )
            .unwrap();
        posts.push(p);
    }
    let mut parent = None;
    for i in 0..5 {
        let c = s
            .create_comment(
                &un(names[(i + 1) % 4]),
                CreateCommentRequest {
                    subreddit: sn("rust"),
                    post_id: posts[1].id,
                    parent_id: parent,
                    body: format!("c{i}"),
                },
                4_000 + i as i64,
                &mut fx,
            )
            .unwrap();
        s.vote(
            &un(names[i % 4]),
            &sn("rust"),
            VoteTarget::Comment,
            c.id.0,
            if i % 2 == 0 { 1 } else { -1 },
            &mut fx,
        )
        .unwrap();
        parent = Some(c.id);
    }
    for (i, p) in posts.iter().enumerate() {
        for (j, n) in names.iter().enumerate() {
            let value = [1i8, -1, 0, 1][(i + j) % 4];
            s.vote(
                &un(n),
                &p.subreddit,
                VoteTarget::Post,
                p.id.0,
                value,
                &mut fx,
            )
            .unwrap();
        }
    }
    // change and clear votes
    s.vote(
        &un("dave"),
        &posts[0].subreddit,
        VoteTarget::Post,
        posts[0].id.0,
        -1,
        &mut fx,
    )
    .unwrap();
    s.vote(
        &un("dave"),
        &posts[0].subreddit,
        VoteTarget::Post,
        posts[0].id.0,
        0,
        &mut fx,
    )
    .unwrap();
    let dm = s
        .prepare_dm(&un("alice"), &un("bob"), "hi".into(), None, 5_000)
        .unwrap();
    let dm = s.deliver_dm(dm, &mut fx).unwrap();
    s.record_sent(dm.clone());
    let reply_to = s.reply_target(&un("bob"), dm.id).unwrap();
    let re = s
        .prepare_dm(&un("bob"), &reply_to, "yo".into(), Some(dm.id), 5_001)
        .unwrap();
    let re = s.deliver_dm(re, &mut fx).unwrap();
    s.record_sent(re);
    s.mark_read(&un("bob"), vec![dm.id]).unwrap();
    assert!(fx.sync.is_empty(), "one shard keeps every sync local");
    s
}

#[test]
fn replaying_the_events_rebuilds_the_same_state() {
    let mut original = busy_state();
    let events = original.take_events();
    assert!(events.len() > 40, "{}", events.len());
    // Through the log's encoding and back.
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(|e| rmp_serde::to_vec_named(e).unwrap())
        .collect();
    let mut replica = ShardState::new(0, 1);
    for bytes in &encoded {
        let event: Event = rmp_serde::from_slice(bytes).unwrap();
        replica.apply(&event);
    }
    assert_eq!(fingerprint(&original), fingerprint(&replica));
    assert_eq!(original.totals().votes, replica.totals().votes);
    let report = audit::check(1, replica.audit_records(), 0, 100);
    assert!(report.ok, "{:?}", report.violations);
    // Applying an event twice changes nothing the second time (creates are keyed by id).
    let before = fingerprint(&replica);
    for e in events.iter().filter(|e| {
        matches!(
            e,
            Event::PostCreated { .. } | Event::DmStored { .. } | Event::UserRegistered { .. }
        )
    }) {
        replica.apply(e);
    }
    assert_eq!(before, fingerprint(&replica));
}

#[test]
fn votes_adjust_by_the_difference_and_karma_follows() {
    let mut s = busy_state();
    let mut fx = Effects::default();
    let p = s
        .create_post(
            &un("alice"),
            &sn("rust"),
            "v".into(),
            String::new(),
            None,
            9_000,
            &mut fx,
        )
        .unwrap();
    let karma0 = s.get_user(&un("alice")).unwrap().post_karma;
    let vote = |s: &mut ShardState, who: &str, v: i8| {
        let mut fx = Effects::default();
        s.vote(&un(who), &sn("rust"), VoteTarget::Post, p.id.0, v, &mut fx)
            .unwrap()
    };
    assert_eq!(vote(&mut s, "bob", 1).score, 1);
    assert_eq!(vote(&mut s, "bob", 1).score, 1);
    assert_eq!(vote(&mut s, "bob", -1).score, -1);
    assert_eq!(vote(&mut s, "carol", -1).score, -2);
    let r = vote(&mut s, "bob", 0);
    assert_eq!((r.score, r.ups, r.downs), (-1, 0, 1));
    assert_eq!(s.get_user(&un("alice")).unwrap().post_karma, karma0 - 1);
    let report = audit::check(1, s.audit_records(), 0, 100);
    assert!(report.ok, "{:?}", report.violations);
}

#[test]
fn threads_of_any_depth_can_be_read_subtree_by_subtree() {
    let mut s = ShardState::new(0, 1);
    let mut fx = Effects::default();
    s.register(&un("deep"), [9; 32], 0).unwrap();
    s.create_subreddit(&un("deep"), &sn("abyss"), String::new(), 0)
        .unwrap();
    let post = s
        .create_post(
            &un("deep"),
            &sn("abyss"),
            "down".into(),
            String::new(),
            None,
            0,
            &mut fx,
        )
        .unwrap();
    let mut ids = Vec::new();
    let mut parent = None;
    for i in 0..250 {
        let c = s
            .create_comment(
                &un("deep"),
                CreateCommentRequest {
                    subreddit: sn("abyss"),
                    post_id: post.id,
                    parent_id: parent,
                    body: format!("level {i}"),
                },
                i,
                &mut fx,
            )
            .unwrap();
        assert_eq!(c.depth, i as u32);
        parent = Some(c.id);
        ids.push(c.id);
    }
    let req = |root| CommentTreeRequest {
        subreddit: sn("abyss"),
        post_id: post.id,
        sort: CommentSort::New,
        limit: None,
        root,
    };
    let depth_of = |t: &reddit_shared::protocol::comment::CommentTree| {
        let mut n = &t.comments[0];
        let mut levels = 1;
        while let Some(c) = n.replies.first() {
            n = c;
            levels += 1;
        }
        (levels, n.depth)
    };
    let tree = s.comment_tree(&req(None)).unwrap();
    assert!(tree.truncated);
    assert_eq!(tree.total, 250);
    assert_eq!(depth_of(&tree), (100, 99));
    // Continue from the deepest comment shown.
    let tree = s.comment_tree(&req(Some(ids[99]))).unwrap();
    assert_eq!(depth_of(&tree), (100, 198));
    let tree = s.comment_tree(&req(Some(ids[198]))).unwrap();
    assert!(!tree.truncated);
    assert_eq!(depth_of(&tree), (52, 249));
    // The reply encodes and decodes (MessagePack nesting stays within limits).
    let tree = s.comment_tree(&req(None)).unwrap();
    let bytes = rmp_serde::to_vec_named(&tree).unwrap();
    let back: reddit_shared::protocol::comment::CommentTree =
        rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, tree);
    assert!(s.comment_tree(&req(Some(CommentId::new()))).is_err());
}

#[test]
fn keys_owned_elsewhere_are_refused() {
    let mut s = ShardState::new(0, 3);
    let other = (0..100)
        .map(|i| format!("user{i}"))
        .find(|n| shard_for(n, 3) != 0)
        .unwrap();
    let e = s.register(&un(&other), [1; 32], 0).unwrap_err();
    assert_eq!(e.code, reddit_shared::error::ErrorCode::WrongShard);
}
