//! Unit tests of the state machine: replay rebuilds the same state, deep threads,
//! vote arithmetic.

use super::*;
use crate::fields::Fields;
use reddit_shared::error::WireError;
use reddit_shared::protocol::comment::{CommentSort, CommentTreeRequest, CreateCommentRequest};
use reddit_shared::protocol::dm::ListDmsRequest;
use reddit_shared::protocol::internal::AuditRecord;
use reddit_shared::protocol::post::{PostSort, PostView};

fn un(s: &str) -> Username {
    s.parse().unwrap()
}
fn sn(s: &str) -> SubredditName {
    s.parse().unwrap()
}

/// Everything observable, order-independent.
pub(crate) fn fingerprint(s: &ShardState) -> Vec<String> {
    let mut out: Vec<String> = s.audit_records().iter().map(|r| format!("{r:?}")).collect();
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
    out.push(format!("{:?}", s.deliveries));
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

pub(crate) fn busy_state() -> ShardState {
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
                    signature: None,
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
        .prepare_dm(
            DmId::new(),
            &un("alice"),
            &un("bob"),
            "hi".into(),
            None,
            5_000,
        )
        .unwrap();
    let dm = s.deliver_dm(dm, &mut fx).unwrap();
    s.record_sent(dm.clone());
    let reply_to = s.reply_target(&un("bob"), dm.id).unwrap();
    let re = s
        .prepare_dm(
            DmId::new(),
            &un("bob"),
            &reply_to,
            "yo".into(),
            Some(dm.id),
            5_001,
        )
        .unwrap();
    let re = s.deliver_dm(re, &mut fx).unwrap();
    s.record_sent(re);
    s.mark_read(&un("bob"), vec![dm.id]).unwrap();
    // As if another shard had stored alice's DM before its record was durable.
    s.dm_delivery_acked(
        1,
        dm.id,
        "alice".into(),
        LogPosition {
            record: 7,
            durable: 5,
            fence: 3,
        },
    );
    assert!(fx.sync.is_empty(), "one shard keeps every sync local");
    s
}

#[test]
fn replaying_the_events_rebuilds_the_same_state() {
    let mut original = busy_state();
    let events = original.take_events();
    assert!(events.len() > 40, "{}", events.len());
    // Through the log's encoding and back, in both shapes a log can hold.
    let replay = |fields: Fields| {
        let mut replica = ShardState::new(0, 1);
        for e in &events {
            let mut bytes = Vec::new();
            fields.write(&mut bytes, e).unwrap();
            let event: Event = rmp_serde::from_slice(&bytes).unwrap();
            replica.apply(&event);
        }
        replica
    };
    let named = replay(Fields::Named);
    assert_eq!(fingerprint(&original), fingerprint(&named));
    let mut replica = replay(Fields::Positional);
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
fn a_snapshot_plus_the_events_after_it_rebuilds_the_same_state() {
    let mut original = busy_state();
    let events = original.take_events();
    let (head, tail) = events.split_at(events.len() / 2);
    let mut at_snapshot = ShardState::new(0, 1);
    for e in head {
        at_snapshot.apply(e);
    }
    let bytes = rmp_serde::to_vec_named(&at_snapshot).unwrap();
    let mut replica: ShardState = rmp_serde::from_slice(&bytes).unwrap();
    replica.after_load();
    for e in tail {
        replica.apply(e);
    }
    assert_eq!(fingerprint(&original), fingerprint(&replica));
}

#[test]
fn a_resync_repeats_every_membership_leave_and_karma_total() {
    let mut s = ShardState::new(0, 2);
    let owner = |n: &str| reddit_shared::routing::shard_for(n, 2);
    // A subreddit here, and two users owned by the other shard.
    let sub = (0..)
        .map(|i| format!("sub{i}"))
        .find(|n| owner(n) == 0)
        .unwrap();
    let users: Vec<String> = (0..)
        .map(|i| format!("user{i}"))
        .filter(|n| owner(n) == 1)
        .take(2)
        .collect();
    let (stay, go) = (un(&users[0]), un(&users[1]));
    let mut fx = Effects::default();
    let local = (0..)
        .map(|i| format!("local{i}"))
        .find(|n| owner(n) == 0)
        .unwrap();
    s.register(&un(&local), [1; 32], 1).unwrap();
    s.create_subreddit(&un(&local), &sn(&sub), String::new(), 1)
        .unwrap();
    s.set_membership(&stay, &sn(&sub), true, &mut fx).unwrap();
    s.set_membership(&go, &sn(&sub), true, &mut fx).unwrap();
    s.set_membership(&go, &sn(&sub), false, &mut fx).unwrap();
    let post = s
        .create_post(
            &stay,
            &sn(&sub),
            "t".into(),
            String::new(),
            None,
            None,
            2,
            &mut fx,
        )
        .unwrap();
    s.vote(&go, &sn(&sub), VoteTarget::Post, post.id.0, 1, &mut fx)
        .unwrap();
    let mut again = Effects::default();
    s.resync_all(&mut again);
    let items: Vec<String> = again
        .sync
        .iter()
        .map(|(d, i)| format!("{d} {i:?}"))
        .collect();
    assert_eq!(again.sync.len(), 3, "{items:?}");
    assert!(again.sync.iter().all(|(dest, _)| *dest == 1));
    let has = |f: &dyn Fn(&SyncItem) -> bool| again.sync.iter().any(|(_, i)| f(i));
    assert!(has(
        &|i| matches!(i, SyncItem::Membership { user, member: true, .. } if user.key() == stay.key())
    ));
    assert!(has(
        &|i| matches!(i, SyncItem::Membership { user, member: false, .. } if user.key() == go.key())
    ));
    assert!(has(
        &|i| matches!(i, SyncItem::Karma { user, post_karma: 1, .. } if user.key() == stay.key())
    ));
}

/// A new post by alice in r/rust titled `title` (on [`busy_state`]).
fn alices_post(s: &mut ShardState, title: &str) -> PostView {
    s.create_post(
        &un("alice"),
        &sn("rust"),
        title.into(),
        String::new(),
        None,
        None,
        9_000,
        &mut Effects::default(),
    )
    .unwrap()
}

#[test]
fn votes_adjust_by_the_difference_and_karma_follows() {
    let mut s = busy_state();
    let p = alices_post(&mut s, "v");
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
fn feed_candidates_stay_strictly_between_the_cursor_and_the_floor() {
    let mut s = busy_state();
    let ids: Vec<_> = (0..6)
        .map(|i| alices_post(&mut s, &format!("p{i}")).id)
        .collect();
    let all = |s: &ShardState, cursor: Option<&String>, above: Option<&String>| {
        let (posts, truncated) = s
            .feed_candidates(&[sn("rust")], PostSort::New, 100, cursor, above)
            .unwrap();
        assert!(!truncated);
        posts
    };
    let everything = all(&s, None, None);
    assert!(everything.len() >= ids.len());
    let key = |k: usize| {
        crate::state::ranking::encode_cursor(&(
            crate::state::ranking::Rank(everything[k].rank),
            everything[k].id,
        ))
    };
    let ids_of = |v: &[reddit_shared::protocol::internal::FeedCandidate]| {
        v.iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids_of(&all(&s, None, Some(&key(3)))),
        ids_of(&everything[..3]),
        "only what ranks above the floor"
    );
    assert_eq!(
        ids_of(&all(&s, Some(&key(1)), Some(&key(4)))),
        ids_of(&everything[2..4]),
        "strictly between the two"
    );
    for (cursor, floor) in [(2, 2), (3, 1)] {
        assert!(
            all(&s, Some(&key(cursor)), Some(&key(floor))).is_empty(),
            "a floor at or above the cursor leaves nothing (and does not panic)"
        );
    }
    let bad = "not a cursor".to_owned();
    let e = s
        .feed_candidates(&[sn("rust")], PostSort::New, 1, None, Some(&bad))
        .unwrap_err();
    assert_eq!(e.code, reddit_shared::error::ErrorCode::InvalidRequest);
}

#[test]
fn a_feed_shows_each_post_as_it_is_now_though_views_are_cached() {
    let mut s = busy_state();
    let mut fx = Effects::default();
    let p = alices_post(&mut s, "cached");
    let seen = |s: &ShardState| -> PostView {
        let (posts, _) = s
            .feed_candidates(&[sn("rust")], PostSort::New, 1, None, None)
            .unwrap();
        assert_eq!(posts[0].id, p.id, "the newest post");
        rmp_serde::from_slice(&posts[0].view).unwrap()
    };
    assert_eq!((seen(&s).score, seen(&s).comments), (0, 0));
    s.vote(
        &un("bob"),
        &sn("rust"),
        VoteTarget::Post,
        p.id.0,
        1,
        &mut fx,
    )
    .unwrap();
    assert_eq!(seen(&s).score, 1, "a vote is seen at once");
    s.vote(
        &un("carol"),
        &sn("rust"),
        VoteTarget::Post,
        p.id.0,
        -1,
        &mut fx,
    )
    .unwrap();
    assert_eq!((seen(&s).ups, seen(&s).downs), (1, 1));
    s.create_comment(
        &un("dave"),
        CreateCommentRequest {
            subreddit: sn("rust"),
            post_id: p.id,
            parent_id: None,
            body: "c".into(),
            signature: None,
        },
        9_001,
        &mut fx,
    )
    .unwrap();
    assert_eq!(seen(&s).comments, 1, "a comment is seen at once");
    // A replay (the follower, a restart) applies events, not commands: the
    // same holds.
    let mut replica = ShardState::new(0, 1);
    for e in s.take_events() {
        replica.apply_owned(e);
    }
    assert_eq!(seen(&replica), seen(&s));
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
                    signature: None,
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

#[test]
fn a_user_this_shard_does_not_hold_cannot_act() {
    let mut s = busy_state();
    let mut fx = Effects::default();
    let ghost = un("ghost");
    let code = |r: Result<_, WireError>| r.err().map(|e| e.code);
    let unauth = Some(reddit_shared::error::ErrorCode::Unauthenticated);
    assert_eq!(
        code(
            s.create_subreddit(&ghost, &sn("haunted"), String::new(), 0)
                .map(|_| ())
        ),
        unauth
    );
    assert_eq!(
        code(
            s.set_membership(&ghost, &sn("rust"), true, &mut fx)
                .map(|_| ())
        ),
        unauth
    );
    assert_eq!(
        code(
            s.create_post(
                &ghost,
                &sn("rust"),
                "boo".into(),
                String::new(),
                None,
                None,
                0,
                &mut fx
            )
            .map(|_| ())
        ),
        unauth
    );
    let report = audit::check(1, s.audit_records(), 0, 10);
    assert!(report.ok, "{:?}", report.violations);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Cmd {
        Register(u8),
        CreateSub(u8, u8),
        Member(u8, u8, bool),
        Post(u8, u8, Option<u8>),
        Comment(u8, u8, Option<u8>),
        Vote(u8, bool, u8, i8),
        Dm(u8, u8),
        Reply(u8, u8),
        Read(u8, u8),
    }

    fn cmd() -> impl Strategy<Value = Cmd> {
        let u = 0u8..5;
        let s = 0u8..3;
        prop_oneof![
            u.clone().prop_map(Cmd::Register),
            (u.clone(), s.clone()).prop_map(|(a, b)| Cmd::CreateSub(a, b)),
            (u.clone(), s.clone(), any::<bool>()).prop_map(|(a, b, c)| Cmd::Member(a, b, c)),
            (u.clone(), s, proptest::option::of(any::<u8>()))
                .prop_map(|(a, b, c)| Cmd::Post(a, b, c)),
            (u.clone(), any::<u8>(), proptest::option::of(any::<u8>()))
                .prop_map(|(a, b, c)| Cmd::Comment(a, b, c)),
            (u.clone(), any::<bool>(), any::<u8>(), -1i8..=1)
                .prop_map(|(a, b, c, d)| Cmd::Vote(a, b, c, d)),
            (u.clone(), u.clone()).prop_map(|(a, b)| Cmd::Dm(a, b)),
            (u.clone(), any::<u8>()).prop_map(|(a, b)| Cmd::Reply(a, b)),
            (u, any::<u8>()).prop_map(|(a, b)| Cmd::Read(a, b)),
        ]
    }

    const USERS: [&str; 5] = ["ann", "Bob", "cy_1", "dee-2", "eve"];
    const SUBS: [&str; 3] = ["rust", "Cooking", "go_lang"];

    /// Runs the commands; errors are expected and ignored.
    fn run(cmds: &[Cmd]) -> ShardState {
        let mut s = ShardState::new(0, 1);
        s.set_recording(true);
        let mut fx = Effects::default();
        let mut posts: Vec<(SubredditName, PostId)> = Vec::new();
        let mut comments: Vec<(SubredditName, PostId, CommentId)> = Vec::new();
        let mut dms: Vec<(u8, DmId)> = Vec::new();
        let pick = |n: usize, i: u8| (n > 0).then(|| i as usize % n);
        for (t, c) in cmds.iter().enumerate() {
            let t = t as i64;
            match c {
                Cmd::Register(u) => {
                    let _ = s.register(&un(USERS[*u as usize]), [*u + 1; 32], t);
                }
                Cmd::CreateSub(u, k) => {
                    let _ = s.create_subreddit(
                        &un(USERS[*u as usize]),
                        &sn(SUBS[*k as usize]),
                        String::new(),
                        t,
                    );
                }
                Cmd::Member(u, k, m) => {
                    let _ = s.set_membership(
                        &un(USERS[*u as usize]),
                        &sn(SUBS[*k as usize]),
                        *m,
                        &mut fx,
                    );
                }
                Cmd::Post(u, k, repost) => {
                    let repost_of = repost.and_then(|r| pick(posts.len(), r)).map(|i| PostRef {
                        subreddit: posts[i].0.clone(),
                        id: posts[i].1,
                    });
                    if let Ok(p) = s.create_post(
                        &un(USERS[*u as usize]),
                        &sn(SUBS[*k as usize]),
                        "t".into(),
                        String::new(),
                        repost_of,
                        None,
                        t,
                        &mut fx,
                    ) {
                        posts.push((p.subreddit, p.id));
                    }
                }
                Cmd::Comment(u, p, parent) => {
                    let Some(i) = pick(posts.len(), *p) else {
                        continue;
                    };
                    let (sub, post) = posts[i].clone();
                    let on: Vec<CommentId> = comments
                        .iter()
                        .filter(|c| c.1 == post)
                        .map(|c| c.2)
                        .collect();
                    let parent_id = parent.and_then(|x| pick(on.len(), x)).map(|j| on[j]);
                    let req = CreateCommentRequest {
                        subreddit: sub.clone(),
                        post_id: post,
                        parent_id,
                        body: "c".into(),
                        signature: None,
                    };
                    if let Ok(cv) = s.create_comment(&un(USERS[*u as usize]), req, t, &mut fx) {
                        comments.push((sub, post, cv.id));
                    }
                }
                Cmd::Vote(u, on_comment, i, v) => {
                    let target = if *on_comment {
                        pick(comments.len(), *i)
                            .map(|j| (comments[j].0.clone(), VoteTarget::Comment, comments[j].2 .0))
                    } else {
                        pick(posts.len(), *i)
                            .map(|j| (posts[j].0.clone(), VoteTarget::Post, posts[j].1 .0))
                    };
                    if let Some((sub, target, id)) = target {
                        let _ = s.vote(&un(USERS[*u as usize]), &sub, target, id, *v, &mut fx);
                    }
                }
                Cmd::Dm(a, b) => {
                    if let Ok(dm) = s.prepare_dm(
                        DmId::new(),
                        &un(USERS[*a as usize]),
                        &un(USERS[*b as usize]),
                        "m".into(),
                        None,
                        t,
                    ) {
                        if let Ok(dm) = s.deliver_dm(dm, &mut fx) {
                            dms.push((*b, dm.id));
                            s.record_sent(dm);
                        }
                    }
                }
                Cmd::Reply(u, i) => {
                    let Some(j) = pick(dms.len(), *i) else {
                        continue;
                    };
                    let me = un(USERS[*u as usize]);
                    if let Ok(to) = s.reply_target(&me, dms[j].1) {
                        if let Ok(dm) =
                            s.prepare_dm(DmId::new(), &me, &to, "r".into(), Some(dms[j].1), t)
                        {
                            if let Ok(dm) = s.deliver_dm(dm, &mut fx) {
                                s.record_sent(dm);
                            }
                        }
                    }
                }
                Cmd::Read(u, i) => {
                    let ids = pick(dms.len(), *i)
                        .map(|j| vec![dms[j].1])
                        .unwrap_or_default();
                    let _ = s.mark_read(&un(USERS[*u as usize]), ids);
                }
            }
        }
        assert!(fx.sync.is_empty(), "one shard keeps sync local");
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

        #[test]
        fn any_command_sequence_keeps_the_invariants_and_replays(cmds in proptest::collection::vec(cmd(), 0..120)) {
            let mut s = run(&cmds);
            let report = audit::check(1, s.audit_records(), 0, 10);
            prop_assert!(report.ok, "{:?}", report.violations);
            let events = s.take_events();
            // Through the log's encoding, in both shapes a log can hold: a
            // field that skipped itself when empty would shift the fields
            // after it in the positional one.
            for fields in [Fields::Positional, Fields::Named] {
                let mut replica = ShardState::new(0, 1);
                for e in &events {
                    let mut bytes = Vec::new();
                    fields.write(&mut bytes, e).unwrap();
                    replica.apply(&rmp_serde::from_slice::<Event>(&bytes).unwrap());
                }
                prop_assert_eq!(fingerprint(&s), fingerprint(&replica));
            }
            // A long replay defers the post indexes and rebuilds them at the
            // end: the listings come out the same.
            let mut deferred = ShardState::new(0, 1);
            deferred.defer_indexes(true);
            for e in events.iter().cloned() {
                deferred.apply_owned(e);
            }
            deferred.defer_indexes(false);
            prop_assert_eq!(fingerprint(&s), fingerprint(&deferred));
            // The snapshot follower: a copy taken midway (no indexes), given
            // the rest, snapshots the same state.
            let mid = events.len() / 2;
            let mut start = ShardState::new(0, 1);
            for e in events[..mid].iter().cloned() {
                start.apply_owned(e);
            }
            let mut follower = start.copy_for_snapshots();
            drop(start);
            for e in events[mid..].iter().cloned() {
                follower.apply_owned(e);
            }
            let replies = crate::replies::ReplyCache::new(8);
            let bytes = crate::snapshot::encode(&follower, &replies, 1).unwrap();
            let loaded = crate::snapshot::decode(&bytes, 2).unwrap().state;
            prop_assert_eq!(fingerprint(&s), fingerprint(&loaded));
            // A snapshot (in parts, decoded on one thread or several) loads to
            // the same state.
            let bytes = crate::snapshot::encode(&s, &replies, 1).unwrap();
            for threads in [1, 3] {
                let loaded = crate::snapshot::decode(&bytes, threads).unwrap().state;
                prop_assert_eq!(fingerprint(&s), fingerprint(&loaded));
                prop_assert_eq!(s.totals().votes, loaded.totals().votes);
            }
            // So does one of the older format (the state serialized whole).
            let bytes = rmp_serde::to_vec_named(&s).unwrap();
            let mut loaded: ShardState = rmp_serde::from_slice(&bytes).unwrap();
            loaded.after_load();
            prop_assert_eq!(fingerprint(&s), fingerprint(&loaded));
        }

        #[test]
        fn arbitrary_bytes_as_events_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut s = busy_state();
            if let Ok(event) = rmp_serde::from_slice::<Event>(&bytes) {
                s.apply(&event);
                let _ = audit::check(1, s.audit_records(), 0, 10);
            }
        }
    }
}

/// An audit's export walked page by page, at any page size, gives the
/// records taken at once, in the same order: a subreddit's members or a
/// user's records that cross a page are neither lost nor repeated.
#[test]
fn audit_pages_of_any_size_fit_together() {
    let mut s = busy_state();
    let mut fx = Effects::default();
    for i in 0..30 {
        let name = un(&format!("member{i}"));
        s.register(&name, [7; 32], 5_000 + i).unwrap();
        s.set_membership(&name, &sn("rust"), true, &mut fx).unwrap();
    }
    let whole = s.audit_records();
    assert!(whole.len() > 70, "{}", whole.len());
    for limit in [
        1,
        2,
        3,
        7,
        31,
        whole.len() - 1,
        whole.len(),
        whole.len() + 1,
    ] {
        let (walked, _) = export_in_pages(&s, limit);
        assert_eq!(walked, whole, "pages of {limit}");
    }
}

/// `s`'s audit export, walked in pages of `limit` records and keys; also
/// how many pages it took. Checks each page's size and that the walk ends.
fn export_in_pages(s: &ShardState, limit: usize) -> (Vec<AuditRecord>, usize) {
    let keys = (s.user_count() + s.subreddit_count()) as usize;
    let mut cursor = s.audit_cursor();
    let mut walked = Vec::new();
    let mut pages = 0;
    while !cursor.done() {
        let page = s.audit_page(&mut cursor, limit, limit);
        assert!(page.len() <= limit, "a page of {} at {limit}", page.len());
        walked.extend(page);
        pages += 1;
        // Each page takes or walks at least one key or serves a record.
        assert!(
            pages <= 2 * keys + walked.len() + 1,
            "the walk does not end at {limit}"
        );
    }
    assert_eq!(cursor.served(), walked.len() as u64);
    (walked, pages)
}

/// A page does a bounded amount of work even where keys have no records:
/// users who joined nothing take pages to take and to walk, where the
/// whole export once fitted in one page of `limit` records.
#[test]
fn an_audit_page_takes_and_walks_at_most_its_limit_of_keys() {
    let mut s = ShardState::new(0, 1);
    for i in 0..50 {
        s.register(&un(&format!("quiet{i}")), [7; 32], 1_000 + i)
            .unwrap();
    }
    let whole = s.audit_records();
    assert_eq!(whole.len(), 1, "only the counts: {whole:?}");
    let (walked, pages) = export_in_pages(&s, 7);
    assert_eq!(walked, whole);
    // 50 keys, 7 a page: 8 pages to take them and 8 to walk them (the
    // page that takes the last keys walks the first).
    assert!(pages >= 15, "{pages} pages");
}

/// Users added while the keys are being taken are in the export (the
/// users map grew, so its order changed and the keys are taken again, at
/// once); a user and a subreddit added after are not, and the keys taken
/// are walked as they were. (A change to a subreddit or user the walk has
/// yet to reach shows in the export: only in quiescence do pages fit
/// together exactly.)
#[test]
fn an_audit_takes_its_keys_again_if_the_shard_grows_meanwhile() {
    let mut fx = Effects::default();
    for while_taking in [true, false] {
        let mut s = busy_state();
        for i in 0..20 {
            let name = un(&format!("member{i}"));
            s.register(&name, [7; 32], 5_000 + i).unwrap();
            s.set_membership(&name, &sn("rust"), true, &mut fx).unwrap();
        }
        // Two keys a page, subreddits' first: stop among the users' keys.
        let keys = (s.subreddit_count() + s.user_count()) as usize;
        let pages_before = if while_taking {
            s.subreddit_count() as usize / 2 + 3
        } else {
            keys / 2 + 3
        };
        let before = s.audit_records();
        let mut cursor = s.audit_cursor();
        let mut walked = Vec::new();
        for _ in 0..pages_before {
            walked.extend(s.audit_page(&mut cursor, 2, 2));
        }
        assert!(!cursor.done(), "after {pages_before} pages");
        let late = un("latecomer");
        s.register(&late, [7; 32], 9_000).unwrap();
        s.create_subreddit(&late, &sn("latesub"), String::new(), 9_000)
            .unwrap();
        s.set_membership(&late, &sn("latesub"), true, &mut fx)
            .unwrap();
        // Enough more that the users map grows and its order changes.
        for i in 0..200 {
            s.register(&un(&format!("later{i}")), [7; 32], 9_001 + i)
                .unwrap();
        }
        while !cursor.done() {
            walked.extend(s.audit_page(&mut cursor, 2, 2));
        }
        // The counts were taken on the first page, before the latecomer.
        assert_eq!(walked[0], before[0]);
        let now = s.audit_records();
        assert!(now.iter().any(|r| format!("{r:?}").contains("latecomer")));
        let expected = if while_taking { &now } else { &before };
        assert_eq!(
            walked[1..],
            expected[1..],
            "grown while taking: {while_taking}"
        );
    }
}

/// The cross-shard check finds every kind of disagreement, in both
/// directions, reports nothing for facts that agree, sums the counts, and
/// reports the same violations whatever order the records come in.
#[test]
fn the_audit_check_reports_each_disagreement_and_nothing_else() {
    use reddit_shared::ids::DmId;
    use reddit_shared::protocol::admin::{AuditCounts, AuditReport, Violation};

    let pair = |user: &str, sub: &str| (user.to_owned(), sub.to_owned());
    let member = |(user, subreddit): (String, String)| AuditRecord::Member { subreddit, user };
    let joined = |(user, subreddit): (String, String)| AuditRecord::Joined { user, subreddit };
    let scores = |(author, subreddit): (String, String), post, comment| AuditRecord::AuthorScore {
        subreddit,
        author,
        post,
        comment,
    };
    let karma = |(user, subreddit): (String, String), post, comment| AuditRecord::Karma {
        user,
        subreddit,
        post,
        comment,
    };
    let (both, only_inbox, only_sent, differ) =
        (DmId::new(), DmId::new(), DmId::new(), DmId::new());
    let dm = |id, from: &str, to: &str, inbox: bool| {
        let (from, to) = (from.to_owned(), to.to_owned());
        if inbox {
            AuditRecord::Inbox { id, from, to }
        } else {
            AuditRecord::Sent { id, from, to }
        }
    };
    let counts = AuditCounts {
        users: 2,
        dms: 1,
        ..AuditCounts::default()
    };
    let records = vec![
        AuditRecord::Counts {
            counts: counts.clone(),
        },
        AuditRecord::Counts { counts },
        AuditRecord::Violation {
            violation: Violation {
                kind: "score".into(),
                detail: "found by a shard".into(),
            },
        },
        member(pair("ann", "agree")),
        joined(pair("ann", "agree")),
        member(pair("bea", "nojoin")),
        joined(pair("cal", "nomember")),
        scores(pair("ann", "agree"), 5, 1),
        karma(pair("ann", "agree"), 5, 1),
        scores(pair("bea", "unpaid"), 2, 0),
        karma(pair("cal", "unearned"), 0, 3),
        karma(pair("dan", "zero"), 0, 0),
        dm(both, "ann", "bea", true),
        dm(both, "ann", "bea", false),
        dm(only_inbox, "ann", "cal", true),
        dm(only_sent, "bea", "cal", false),
        dm(differ, "cal", "ann", true),
        dm(differ, "cal", "dan", false),
    ];
    let report = audit::check(2, records.clone(), 0, 100);
    assert!(!report.ok);
    assert_eq!(report.checked.users, 4);
    assert_eq!(report.checked.dms, 2);
    let found: Vec<(&str, &str)> = report
        .violations
        .iter()
        .map(|v| (v.kind.as_str(), v.detail.as_str()))
        .collect();
    assert_eq!(report.violation_count, 8, "{found:#?}");
    let has = |kind: &str, words: &[&str]| {
        found
            .iter()
            .any(|(k, d)| *k == kind && words.iter().all(|w| d.contains(w)))
    };
    assert!(has("score", &["found by a shard"]));
    assert!(has("membership", &["bea is a member of r/nojoin"]));
    assert!(has("membership", &["cal's joined list has r/nomember"]));
    assert!(has(
        "karma",
        &["bea's items in r/unpaid score 2/0", "credits 0/0"]
    ));
    assert!(has(
        "karma",
        &["cal's items in r/unearned score 0/0", "credits 0/3"]
    ));
    assert!(has(
        "dm",
        &[&only_inbox.to_string(), "not in ann's sent folder"]
    ));
    assert!(has("dm", &[&only_sent.to_string(), "not in cal's inbox"]));
    assert!(has("dm", &[&differ.to_string(), "cal→ann", "cal→dan"]));
    for agreeing in ["agree", "zero", &both.to_string()] {
        assert!(
            !found.iter().any(|(_, d)| d.contains(agreeing)),
            "{agreeing}"
        );
    }

    let reversed = audit::check(2, records.into_iter().rev(), 0, 100);
    let not_dm = |r: &AuditReport| -> Vec<Violation> {
        r.violations
            .iter()
            .filter(|v| v.kind != "dm")
            .cloned()
            .collect()
    };
    assert_eq!(
        not_dm(&reversed),
        not_dm(&report),
        "the same order either way"
    );
}
