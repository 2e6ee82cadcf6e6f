//! The actor driven without NATS: requests go in as messages, replies come out
//! of an in-memory [`Bus`], and the log is the journal's in-memory store. These
//! check the actor's own rules (order, durability before replies, idempotency,
//! reply subjects) fast and deterministically; the integration tests in
//! `client/tests` check the same system through a real nats-server.

use super::journal::tests::MemStore;
use super::journal::Batching;
use super::snapshots::SnapshotPolicy;
use super::{Actor, Ctx, Job, Metrics};
use crate::auth::TokenSigner;
use crate::bus::Bus;
use crate::cross_shard::{Peers, SyncEnvelope};
use crate::lease::Tenure;
use crate::state::ShardState;
use crate::wal::WalError;
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use futures::future::BoxFuture;
use futures::FutureExt;
use reddit_shared::codec::encode;
use reddit_shared::error::{ErrorCode, WireError};
use reddit_shared::protocol::dm::{DmView, SendDmRequest};
use reddit_shared::protocol::internal::DeliverDm;
use reddit_shared::protocol::post::{CreatePostRequest, GetPostRequest};
use reddit_shared::protocol::rpc::{Rpc, StatsRequest};
use reddit_shared::protocol::subreddit::{CreateSubredditRequest, ListSubredditsRequest};
use reddit_shared::protocol::user::{
    ChallengeRequest, LoginRequest, RegisterRequest, WhoAmIRequest,
};
use reddit_shared::protocol::Op;
use reddit_shared::{auth, subject, IDEMPOTENCY_HEADER};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

const INBOX: &str = "_INBOX_SERVICE.unit";

/// A bus that hands every publication to the test. A request is handed over
/// too (as a message without a reply subject) and then finds no responders,
/// unless the test answers requests ([`MemBus::answering`]).
struct MemBus {
    out: mpsc::Sender<Message>,
    answers: Option<Answers>,
}

/// Requests answered by the test: each is kept in `asked`, and answered by
/// `answer` (a reply's payload, or an error) after `took`; an answer that
/// takes longer than the request's timeout is a timeout, as over NATS.
struct Answers {
    asked: Arc<std::sync::Mutex<Vec<Message>>>,
    #[allow(clippy::type_complexity)]
    answer: Box<dyn Fn(&Message) -> Result<Vec<u8>, WireError> + Send + Sync>,
    took: Duration,
}

impl MemBus {
    fn new(out: mpsc::Sender<Message>) -> Self {
        Self { out, answers: None }
    }

    fn answering(out: mpsc::Sender<Message>, answers: Answers) -> Self {
        Self {
            out,
            answers: Some(answers),
        }
    }
}

impl Bus for MemBus {
    fn publish(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
    ) -> BoxFuture<'_, ()> {
        async move {
            let _ = self.out.send(message(subject, None, headers, body)).await;
        }
        .boxed()
    }

    fn request(
        &self,
        what: String,
        subject: Subject,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, WireError>> {
        let msg = message(subject, None, None, body);
        let Some(a) = &self.answers else {
            return async move {
                let _ = self.out.send(msg).await;
                Err(reddit_shared::connect::no_responders(&what))
            }
            .boxed();
        };
        let result =
            (a.answer)(&msg).map(|payload| message(INBOX.into(), None, None, payload.into()));
        a.asked.lock().unwrap().push(msg);
        let took = a.took;
        async move {
            if took > timeout {
                tokio::time::sleep(timeout).await;
                return Err(WireError::unavailable(format!("{what}: no answer in time")));
            }
            tokio::time::sleep(took).await;
            result
        }
        .boxed()
    }
}

fn message(
    subject: Subject,
    reply: Option<Subject>,
    headers: Option<HeaderMap>,
    payload: Bytes,
) -> Message {
    Message {
        subject,
        reply,
        payload,
        headers,
        status: None,
        description: None,
        length: 0,
    }
}

/// One shard (of one) with its actor running.
struct Shard {
    jobs: mpsc::Sender<Job>,
    out: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
    actor: tokio::task::JoinHandle<Result<(), WalError>>,
    key: SigningKey,
}

impl Shard {
    fn start(store: Option<Arc<MemStore>>) -> Self {
        Self::start_with(store, None)
    }

    fn start_with(store: Option<Arc<MemStore>>, tenure: Option<Arc<Tenure>>) -> Self {
        Self::start_configured(store, tenure, false, 1)
    }

    /// Shard 0 of `shards`.
    fn start_configured(
        store: Option<Arc<MemStore>>,
        tenure: Option<Arc<Tenure>>,
        read_barrier: bool,
        shards: u32,
    ) -> Self {
        let (out_tx, out) = mpsc::channel(1024);
        let bus: Arc<dyn Bus> = Arc::new(MemBus::new(out_tx));
        let log = store.map(|s| (s, Batching::eager()));
        Self::start_on(
            bus,
            out,
            log,
            tenure,
            read_barrier,
            ShardState::new(0, shards),
            |a| a,
        )
    }

    /// Shard 0 of 1, logging to `store` in records grouped by `batching`.
    fn start_batched(store: Arc<MemStore>, batching: Batching) -> Self {
        let (out_tx, out) = mpsc::channel(1024);
        let bus: Arc<dyn Bus> = Arc::new(MemBus::new(out_tx));
        Self::start_on(
            bus,
            out,
            Some((store, batching)),
            None,
            false,
            ShardState::new(0, 1),
            |a| a,
        )
    }

    /// Shard `state` on `bus`, whose publications come out of `out`,
    /// logging (if `log` says where) in records grouped as it says, its
    /// actor configured by `configure` too.
    fn start_on(
        bus: Arc<dyn Bus>,
        out: mpsc::Receiver<Message>,
        log: Option<(Arc<MemStore>, Batching)>,
        tenure: Option<Arc<Tenure>>,
        read_barrier: bool,
        state: ShardState,
        configure: impl FnOnce(Actor) -> Actor,
    ) -> Self {
        let shards = state.shards();
        let (sync_tx, _sync_rx) = mpsc::channel(64);
        let (resync_tx, _resync_rx) = mpsc::channel(64);
        let metrics = Arc::new(Metrics::new(64));
        let ctx = Ctx {
            bus: bus.clone(),
            peers: Peers::new(bus, Duration::from_secs(1)),
            tokens: TokenSigner::new(b"unit-test-secret-0123456789abcdef", 3_600_000),
            metrics: metrics.clone(),
            shard: 0,
            shards,
            instance: "unit".into(),
            sync_tx,
            resync_tx,
            unlogged: Default::default(),
            permits: Arc::new(Semaphore::new(8)),
            peer_timeout: Duration::from_secs(1),
            tenure,
        };
        let (jobs, rx) = mpsc::channel(64);
        let mut actor =
            configure(Actor::new(state, ctx, jobs.downgrade()).with_read_barrier(read_barrier));
        if let Some((store, batching)) = log {
            actor = actor.with_log(Arc::new(store), 0, 0, SnapshotPolicy::unpaced(0), batching);
        }
        Self {
            jobs,
            out,
            metrics,
            actor: tokio::spawn(actor.run(rx)),
            key: SigningKey::from_bytes(&[9u8; 32]),
        }
    }

    /// Queues `req` with reply subject `reply` and the given headers.
    async fn send<R: Rpc>(&self, req: &R, reply: &str, headers: Option<HeaderMap>) {
        let msg = message(
            subject::request(0, R::OP).into(),
            Some(reply.to_owned().into()),
            headers,
            encode(req).unwrap().into(),
        );
        self.metrics
            .queue_depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.jobs.send(Job::Request(msg)).await.unwrap();
    }

    /// The next publication, within a deadline, except the `internal.resync`
    /// requests a durable shard of several makes as it starts (checked by
    /// `a_restarted_shard_asks_every_other_shard_to_resync_its_users`).
    async fn next(&mut self) -> Message {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.out.recv())
                .await
                .expect("a publication within 5 s")
                .expect("the bus is open");
            if !msg.subject.ends_with(Op::InternalResync.as_str()) {
                return msg;
            }
        }
    }

    async fn call<R: Rpc>(
        &mut self,
        req: &R,
        headers: Option<HeaderMap>,
    ) -> Result<R::Reply, WireError> {
        self.send(req, INBOX, headers).await;
        // Pushes (to `reddit.events.*`) may come first.
        loop {
            let msg = self.next().await;
            if msg.subject.as_str() == INBOX {
                return reddit_shared::connect::decode_message(&msg);
            }
            assert!(msg.subject.starts_with("reddit.events."), "{}", msg.subject);
        }
    }

    async fn login(&mut self, name: &str) -> HeaderMap {
        let username = name.parse().unwrap();
        let ch = self
            .call(&ChallengeRequest { username }, None)
            .await
            .unwrap();
        let signature = self
            .key
            .sign(&auth::login_message(name, &ch.challenge))
            .to_bytes();
        let login = LoginRequest {
            username: name.parse().unwrap(),
            challenge: ch.challenge,
            signature: hex::encode(signature),
        };
        let token = self.call(&login, None).await.unwrap().token;
        let mut h = HeaderMap::new();
        h.insert(auth::AUTH_HEADER, format!("Bearer {token}").as_str());
        h
    }

    fn register_request(&self, name: &str) -> RegisterRequest {
        RegisterRequest {
            username: name.parse().unwrap(),
            public_key: hex::encode(self.key.verifying_key().to_bytes()),
        }
    }

    async fn stop(self) {
        drop(self.jobs);
        let result = tokio::time::timeout(Duration::from_secs(5), self.actor)
            .await
            .expect("the actor stops once its queue closes");
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }
}

fn with_key(mut h: HeaderMap, key: &str) -> HeaderMap {
    h.insert(IDEMPOTENCY_HEADER, key);
    h
}

#[tokio::test]
async fn a_shard_that_cannot_confirm_its_lease_answers_no_data_until_it_can() {
    let tenure = Arc::new(Tenure::new(
        crate::lease::Holder::this_process(),
        Duration::from_millis(250),
    ));
    tenure.confirmed(std::time::Instant::now());
    let mut shard = Shard::start_with(None, Some(tenure.clone()));
    let register = shard.register_request("alice");
    shard.call(&register, None).await.unwrap();
    // No renewal confirmed within the TTL (less the margin).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tenure.holds() {
        assert!(std::time::Instant::now() < deadline, "the tenure lapses");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read = shard
        .call(&ListSubredditsRequest::default(), None)
        .await
        .unwrap_err();
    assert_eq!(read.code, ErrorCode::Unavailable, "{read:?}");
    let write = shard.call(&shard.register_request("bob"), None).await;
    assert_eq!(write.unwrap_err().code, ErrorCode::Unavailable);
    // The counters are still answered, and say why.
    let stats = shard.call(&StatsRequest {}, None).await.unwrap();
    let lease = stats.lease.expect("the lease in the stats");
    assert!(!lease.serving);
    assert!(lease.renewed_ms_ago >= 200, "{lease:?}");
    // Confirmed again: served again.
    tenure.confirmed(std::time::Instant::now());
    shard
        .call(&ListSubredditsRequest::default(), None)
        .await
        .unwrap();
    assert_eq!(shard.call(&StatsRequest {}, None).await.unwrap().users, 1);
    shard.stop().await;
}

#[tokio::test]
async fn register_login_and_post_without_nats() {
    let mut shard = Shard::start(None);
    let user = shard
        .call(&shard.register_request("ann"), None)
        .await
        .unwrap();
    assert_eq!(user.username, "ann");
    let auth = shard.login("ann").await;
    let sub = CreateSubredditRequest {
        name: "rust".parse().unwrap(),
        description: String::new(),
    };
    shard.call(&sub, Some(auth.clone())).await.unwrap();
    let post = CreatePostRequest {
        subreddit: "rust".parse().unwrap(),
        title: "hello".into(),
        body: String::new(),
        repost_of: None,
        signature: None,
    };
    let created = shard.call(&post, Some(auth)).await.unwrap();
    let got = shard
        .call(
            &GetPostRequest {
                subreddit: "rust".parse().unwrap(),
                id: created.id,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(got.title, "hello");
    assert_eq!(got.author, "ann");
    shard.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_reply() {
    let mut shard = Shard::start(None);
    shard
        .call(&shard.register_request("bob"), None)
        .await
        .unwrap();
    let auth = shard.login("bob").await;
    let sub = CreateSubredditRequest {
        name: "golang".parse().unwrap(),
        description: String::new(),
    };
    shard.call(&sub, Some(auth.clone())).await.unwrap();
    let post = CreatePostRequest {
        subreddit: "golang".parse().unwrap(),
        title: "once".into(),
        body: String::new(),
        repost_of: None,
        signature: None,
    };
    let key = "0190f5c2-6d4e-7a31-9b8c-0123456789ab";
    let first = shard
        .call(&post, Some(with_key(auth.clone(), key)))
        .await
        .unwrap();
    let again = shard
        .call(&post, Some(with_key(auth.clone(), key)))
        .await
        .unwrap();
    assert_eq!(first.id, again.id, "the retry is the same post");
    let stats = shard.call(&StatsRequest {}, None).await.unwrap();
    assert_eq!(stats.posts, 1);
    assert_eq!(stats.retries_answered, 1);
    // The same key for a different request is a conflict, not a silent replay.
    let other = CreatePostRequest {
        title: "twice".into(),
        ..post
    };
    let err = shard
        .call(&other, Some(with_key(auth, key)))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    shard.stop().await;
}

/// A write's token is checked once and shared by its idempotency key and its
/// handler: the request after it is checked for its own token, or none.
#[tokio::test]
async fn each_request_is_checked_for_its_own_token() {
    let mut shard = Shard::start(None);
    for name in ["ann", "bob"] {
        shard
            .call(&shard.register_request(name), None)
            .await
            .unwrap();
    }
    let ann = shard.login("ann").await;
    let bob = shard.login("bob").await;
    let sub = |name: &str| CreateSubredditRequest {
        name: name.parse().unwrap(),
        description: String::new(),
    };
    let keys = [
        "0190f5c2-6d4e-7a31-9b8c-000000000001",
        "0190f5c2-6d4e-7a31-9b8c-000000000002",
        "0190f5c2-6d4e-7a31-9b8c-000000000003",
        "0190f5c2-6d4e-7a31-9b8c-000000000004",
    ];
    let mut forged = HeaderMap::new();
    forged.insert(auth::AUTH_HEADER, "Bearer ann.4102444800000.forged");
    for (i, (headers, expect)) in [
        (HeaderMap::new(), ErrorCode::Unauthenticated),
        (forged, ErrorCode::Unauthenticated),
    ]
    .into_iter()
    .enumerate()
    {
        // Right after a keyed write of ann's, as nobody.
        shard
            .call(
                &sub(&format!("anns{i}")),
                Some(with_key(ann.clone(), keys[2 * i])),
            )
            .await
            .unwrap();
        let err = shard
            .call(
                &sub(&format!("nobodys{i}")),
                Some(with_key(headers, keys[2 * i + 1])),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, expect, "{err:?}");
    }
    // Right after ann's write, as bob: bob.
    shard
        .call(
            &sub("anns2"),
            Some(with_key(ann, "0190f5c2-6d4e-7a31-9b8c-000000000005")),
        )
        .await
        .unwrap();
    let me = shard.call(&WhoAmIRequest {}, Some(bob)).await.unwrap();
    assert_eq!(me.username, "bob");
    let err = shard.call(&WhoAmIRequest {}, None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    shard.stop().await;
}

/// An audit page may take a loaded shard longer than the request path's peer
/// timeout (right after a run, behind its snapshot follower and outbox): the
/// audit waits for it rather than failing.
#[tokio::test(start_paused = true)]
async fn an_audit_waits_for_a_page_slower_than_the_peer_timeout() {
    use reddit_shared::protocol::admin::AuditRequest;
    use reddit_shared::protocol::internal::AuditExport;

    let (out_tx, out) = mpsc::channel(1024);
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answers = Answers {
        asked: asked.clone(),
        answer: Box::new(|msg| {
            assert_eq!(
                msg.subject.as_str(),
                subject::request(0, Op::InternalAuditExport)
            );
            encode(&AuditExport {
                records: Vec::new(),
                done: true,
                pending_sync: 0,
            })
        }),
        // The harness's peer timeout is 1 s.
        took: Duration::from_secs(3),
    };
    let bus = MemBus::answering(out_tx, answers);
    let mut shard = Shard::start_on(
        Arc::new(bus),
        out,
        None,
        None,
        false,
        ShardState::new(0, 1),
        |a| a,
    );
    let report = shard
        .call(
            &AuditRequest {
                max_violations: None,
            },
            None,
        )
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(asked.lock().unwrap().len(), 1, "one page");
    shard.stop().await;
}

/// `internal.audit.export` walks the shard page by page: the pages of one
/// audit add up to its facts, each no larger than asked; a page asked again
/// (a retry) gets the same records; a new audit starts from the beginning.
#[tokio::test]
async fn an_audit_export_walks_the_shard_page_by_page() {
    use reddit_shared::protocol::internal::{AuditExportRequest, AuditRecord};

    let state = subreddit_with_members(1, 25);
    let whole = state.audit_records();
    assert!(whole.len() > 25, "{}", whole.len());
    let keys = (state.user_count() + state.subreddit_count()) as usize;
    let (out_tx, out) = mpsc::channel(1024);
    let bus: Arc<dyn Bus> = Arc::new(MemBus::new(out_tx));
    let mut shard = Shard::start_on(bus, out, None, None, false, state, |a| a);
    let page = |audit, offset, limit| AuditExportRequest {
        audit,
        offset,
        limit,
    };
    let mut walked: Vec<AuditRecord> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        // A page takes or walks keys, so some hold no records.
        assert!(pages <= 2 * keys + whole.len() + 2, "the walk does not end");
        let offset = walked.len() as u64;
        let got = shard.call(&page(1, offset, 4), None).await.unwrap();
        assert!(got.records.len() <= 4, "{}", got.records.len());
        if offset == 8 {
            let again = shard.call(&page(1, offset, 4), None).await.unwrap();
            assert_eq!(again.records, got.records, "a page asked twice");
        }
        walked.extend(got.records);
        if got.done {
            break;
        }
        assert!(
            walked.len() <= whole.len(),
            "more records than the shard holds"
        );
    }
    assert_eq!(walked, whole);
    let other = shard.call(&page(2, 0, 1_000), None).await.unwrap();
    assert!(other.done);
    assert_eq!(other.records, whole, "a new audit starts again");
    shard.stop().await;
}

#[tokio::test]
async fn a_reply_subject_that_is_not_an_inbox_is_never_published_to() {
    let mut shard = Shard::start(None);
    let reg = shard.register_request("cyd");
    shard.send(&reg, "reddit.wal.0", None).await;
    // The next publication is the answer to the next (well-formed) request: the
    // first was dropped unhandled, so the user does not exist.
    let err = shard
        .call(
            &ChallengeRequest {
                username: "cyd".parse().unwrap(),
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(
        shard
            .metrics
            .replies_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    shard.stop().await;
}

#[tokio::test]
async fn a_write_is_answered_after_its_record_and_reads_overtake_it() {
    let store = MemStore::gated();
    let mut shard = Shard::start(Some(store.clone()));
    let reg = shard.register_request("dia");
    shard.send(&reg, "_INBOX_SERVICE.write", None).await;
    shard
        .send(
            &ListSubredditsRequest { limit: None },
            "_INBOX_SERVICE.read",
            None,
        )
        .await;
    let first = shard.next().await;
    assert_eq!(
        first.subject.as_str(),
        "_INBOX_SERVICE.read",
        "the read is answered while the write waits for the log"
    );
    assert!(store.records.lock().unwrap().is_empty());
    store.release(1);
    let second = shard.next().await;
    assert_eq!(second.subject.as_str(), "_INBOX_SERVICE.write");
    assert_eq!(
        store.records.lock().unwrap().len(),
        1,
        "logged before answered"
    );
    store.release(100);
    shard.stop().await;
}

/// With the read barrier, a read waits for the write before it to be
/// durable, and then both are answered in order; a read with no write
/// before it in flight is answered at once.
#[tokio::test]
async fn with_a_read_barrier_a_read_waits_for_the_writes_before_it() {
    let store = MemStore::gated();
    let mut shard = Shard::start_configured(Some(store.clone()), None, true, 1);
    let list = ListSubredditsRequest { limit: None };
    shard.send(&list, "_INBOX_SERVICE.first", None).await;
    assert_eq!(shard.next().await.subject.as_str(), "_INBOX_SERVICE.first");

    let reg = shard.register_request("dia");
    shard.send(&reg, "_INBOX_SERVICE.write", None).await;
    shard.send(&list, "_INBOX_SERVICE.read", None).await;
    // Once the actor has taken the read (without the barrier it would now
    // answer it, ahead of the write whose record the log holds back) ...
    eventually("the read was never handled", || {
        shard.metrics.total_requests() >= 3
    })
    .await;
    assert!(store.records.lock().unwrap().is_empty());
    // ... the record is stored, and the write is answered, then the read.
    store.release(1);
    assert_eq!(shard.next().await.subject.as_str(), "_INBOX_SERVICE.write");
    assert_eq!(shard.next().await.subject.as_str(), "_INBOX_SERVICE.read");
    store.release(100);
    shard.stop().await;
}

/// A DM to a user of another shard, keyed with a UUID v7 (the id itself),
/// logs nothing before its delivery, so the delivery starts at once instead
/// of waiting for the record in flight (another write's) to be durable: a
/// DM waits for two appends in turn (the recipient's, then its sent copy's),
/// not three.
#[tokio::test]
async fn a_dm_to_another_shard_is_delivered_without_waiting_for_the_log() {
    let store = MemStore::gated();
    let mut shard = Shard::start_configured(Some(store.clone()), None, false, 2);
    let on = |shard, prefix| name_on(2, shard, prefix);
    let (sender, other, recipient) = (on(0, "sender"), on(0, "other"), on(1, "recipient"));
    shard
        .send(&shard.register_request(&sender), INBOX, None)
        .await;
    store.release(1);
    shard.next().await;
    let auth = shard.login(&sender).await;

    // Another write's record is in flight (held by the store) ...
    let held = shard.register_request(&other);
    shard.send(&held, "_INBOX_SERVICE.held", None).await;
    let dm = SendDmRequest {
        to: recipient.parse().unwrap(),
        body: "hello".into(),
    };
    let key = uuid::Uuid::now_v7().to_string();
    shard
        .send(&dm, "_INBOX_SERVICE.dm", Some(with_key(auth, &key)))
        .await;
    // ... and the DM goes to the recipient's shard all the same, with its key
    // as its id, having logged nothing.
    let delivery = shard.next().await;
    assert_eq!(
        delivery.subject.as_str(),
        subject::request(1, Op::InternalDmDeliver)
    );
    let deliver: DeliverDm = reddit_shared::codec::decode(&delivery.payload).unwrap();
    assert_eq!(deliver.dm.id.to_string(), key);
    assert_eq!(
        store.records.lock().unwrap().len(),
        1,
        "only the first user"
    );
    // No shard answers here, so the DM is refused as unavailable (to retry).
    let refused = shard.next().await;
    assert_eq!(refused.subject.as_str(), "_INBOX_SERVICE.dm");
    let e = reddit_shared::connect::decode_message::<DmView>(&refused).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    // The held write is answered once its record is stored.
    store.release(1);
    assert_eq!(shard.next().await.subject.as_str(), "_INBOX_SERVICE.held");
    store.release(100);
    shard.stop().await;
}

#[tokio::test]
async fn unknown_operations_and_oversize_payloads_get_clear_errors() {
    let mut shard = Shard::start(None);
    let msg = message(
        "reddit.shard.0.nope".into(),
        Some(INBOX.into()),
        None,
        Bytes::from_static(b"\x80"),
    );
    shard.jobs.send(Job::Request(msg)).await.unwrap();
    let reply = shard.next().await;
    let err = reddit_shared::connect::decode_message::<()>(&reply).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownOperation);
    let big = message(
        subject::request(0, RegisterRequest::OP).into(),
        Some(INBOX.into()),
        None,
        vec![0u8; reddit_shared::MAX_REQUEST_BYTES + 1].into(),
    );
    shard.jobs.send(Job::Request(big)).await.unwrap();
    let err = reddit_shared::connect::decode_message::<()>(&shard.next().await).unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    shard.stop().await;
}

/// Shard 0 of `shards` with one subreddit of `n` members whose accounts are all
/// on the last shard: with 2 shards each membership is an outbox item of a
/// restart's resync; with 1, the accounts are here (registered) and each is
/// applied and logged here.
fn subreddit_with_members(shards: u32, n: usize) -> ShardState {
    use crate::state::Event;
    use reddit_shared::names::{SubredditName, Username};

    let home = shards - 1;
    let mut state = ShardState::new(0, shards);
    let sub = SubredditName::parse("rust").unwrap();
    state.apply_owned(Event::SubredditCreated {
        name: sub.clone(),
        description: String::new(),
        creator: Username::parse("creator").unwrap(),
        at: 0,
    });
    let members = (0..)
        .map(|i| Username::parse(&format!("member{i}")).unwrap())
        .filter(|u| reddit_shared::routing::shard_for(u.key(), shards) == home)
        .take(n);
    for user in members {
        if home == 0 {
            state.apply_owned(Event::UserRegistered {
                username: user.clone(),
                public_key: [1; 32],
                at: 0,
            });
        }
        state.apply_owned(Event::MembershipChanged {
            subreddit: sub.key().to_owned(),
            user,
            member: true,
        });
    }
    state
}

/// A restarted durable shard sends every membership its subreddits hold to the
/// users' shards again. With far more of them than its outbox holds, none is
/// dropped: the rest wait in the actor's backlog and go as the outbox drains.
#[tokio::test]
async fn a_resync_larger_than_the_outbox_is_fed_to_it_whole() {
    use reddit_shared::protocol::internal::SyncItem;

    const MEMBERS: usize = 300;
    let state = subreddit_with_members(2, MEMBERS);
    let mut shard = restarted(state, 2, 4, &MemStore::open());
    let mut got = std::collections::HashSet::new();
    while got.len() < MEMBERS {
        let env = tokio::time::timeout(Duration::from_secs(10), shard.resync.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MEMBERS} items arrived", got.len()))
            .expect("the outbox stays open");
        assert_eq!(env.dest, 1);
        match env.item {
            SyncItem::Membership { user, member, .. } => {
                assert!(member);
                got.insert(user.key().to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.len(), MEMBERS);
    assert!(
        shard.live.try_recv().is_err(),
        "no resync item in the live outbox"
    );
    shard.stop().await;
}

/// A restart's resync has an outbox of its own: while it is full (the other
/// shards busy), a live write's sync item (a join, which waits for it) goes
/// out at once beside it, not behind hundreds of resync items, and the live
/// outbox keeps all its room. Everything is delivered once the resync drains.
#[tokio::test]
async fn a_resync_goes_beside_live_writes_never_ahead_of_them() {
    use reddit_shared::names::{SubredditName, Username};
    use reddit_shared::protocol::internal::SyncItem;
    use reddit_shared::protocol::rpc::JoinRequest;
    use reddit_shared::protocol::subreddit::MembershipRequest;

    const MEMBERS: usize = 200;
    const OUTBOX: usize = 16;
    let mut state = subreddit_with_members(2, MEMBERS);
    // A subreddit of this shard's own, to join.
    let local = (0..)
        .map(|i| SubredditName::parse(&format!("local{i}")).unwrap())
        .find(|s| reddit_shared::routing::shard_for(s.key(), 2) == 0)
        .unwrap();
    state.apply_owned(crate::state::Event::SubredditCreated {
        name: local.clone(),
        description: String::new(),
        creator: Username::parse("creator").unwrap(),
        at: 0,
    });
    let mut shard = restarted(state, 2, OUTBOX, &MemStore::open());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shard.resync_tx.capacity() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resync never filled its outbox"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        shard.live_tx.capacity(),
        OUTBOX,
        "the resync took live room"
    );

    // A user of shard 1 joins: the token is this cluster's, so shard 0 checks
    // it by itself.
    let joiner = (0..)
        .map(|i| Username::parse(&format!("joiner{i}")).unwrap())
        .find(|u| reddit_shared::routing::shard_for(u.key(), 2) == 1)
        .unwrap();
    let (token, _) = shard
        .tokens
        .issue(&joiner, &[1; 32], reddit_shared::now_millis());
    let mut headers = HeaderMap::new();
    headers.insert(auth::AUTH_HEADER, format!("Bearer {token}").as_str());
    let join = JoinRequest(MembershipRequest { name: local });
    let msg = message(
        subject::request(0, JoinRequest::OP).into(),
        Some(INBOX.into()),
        Some(headers),
        encode(&join).unwrap().into(),
    );
    shard.jobs.send(Job::Request(msg)).await.unwrap();
    let env = tokio::time::timeout(Duration::from_secs(5), shard.live.recv())
        .await
        .unwrap_or_else(|_| {
            let published = shard.out.try_recv().map(|m| m.payload);
            panic!("the join's item did not go out while the resync's outbox was full; published: {published:?}")
        })
        .unwrap();
    match &env.item {
        SyncItem::Membership { user, member, .. } => {
            assert_eq!((user.key(), *member), (joiner.key(), true));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(shard.resync_tx.capacity(), 0, "the resync is still waiting");

    let mut got = 0;
    while got < MEMBERS {
        tokio::time::timeout(Duration::from_secs(10), shard.resync.recv())
            .await
            .unwrap_or_else(|_| panic!("only {got} of {MEMBERS} resync items arrived"))
            .expect("the outbox stays open");
        got += 1;
    }
    drop(env);
    shard.stop().await;
}

/// Shard 0 of a restarted durable system, its resync running first, with the
/// receiving ends of both its outboxes.
struct Restarted {
    jobs: mpsc::Sender<Job>,
    running: tokio::task::JoinHandle<Result<(), WalError>>,
    live: mpsc::Receiver<SyncEnvelope>,
    resync: mpsc::Receiver<SyncEnvelope>,
    live_tx: mpsc::Sender<SyncEnvelope>,
    resync_tx: mpsc::Sender<SyncEnvelope>,
    /// What its syncers keep of other shards' early acknowledgements.
    unlogged: Arc<crate::cross_shard::Unlogged>,
    tokens: TokenSigner,
    /// What the shard published (replies, pushes).
    out: mpsc::Receiver<Message>,
}

impl Restarted {
    async fn stop(self) {
        drop(self.jobs);
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("the actor stops once its queue closes")
            .unwrap()
            .unwrap();
    }
}

/// Shard 0 of `shards` restarting durably with `state` (its resync runs
/// first), logging to `store`, with outboxes of `outbox` items each.
fn restarted(state: ShardState, shards: u32, outbox: usize, store: &Arc<MemStore>) -> Restarted {
    let (out_tx, out) = mpsc::channel(1024);
    let bus: Arc<dyn Bus> = Arc::new(MemBus::new(out_tx));
    let (live_tx, live) = mpsc::channel(outbox);
    let (resync_tx, resync) = mpsc::channel(outbox);
    let unlogged = Arc::new(crate::cross_shard::Unlogged::default());
    let tokens = TokenSigner::new(b"unit-test-secret-0123456789abcdef", 3_600_000);
    let ctx = Ctx {
        bus: bus.clone(),
        peers: Peers::new(bus, Duration::from_secs(1)),
        tokens: tokens.clone(),
        metrics: Arc::new(Metrics::new(64)),
        shard: 0,
        shards,
        instance: "unit".into(),
        sync_tx: live_tx.clone(),
        resync_tx: resync_tx.clone(),
        unlogged: unlogged.clone(),
        permits: Arc::new(Semaphore::new(8)),
        peer_timeout: Duration::from_secs(1),
        tenure: None,
    };
    let (jobs, rx) = mpsc::channel(64);
    let actor = Actor::new(state, ctx, jobs.downgrade()).with_log(
        Arc::new(store.clone()),
        0,
        0,
        SnapshotPolicy::unpaced(0),
        Batching::eager(),
    );
    Restarted {
        jobs,
        running: tokio::spawn(actor.run(rx)),
        live,
        resync,
        live_tx,
        resync_tx,
        unlogged,
        tokens,
        out,
    }
}

/// A restart's resync of a large shard is logged in records that fit NATS's
/// payload limit. As one entry, a shard of 250,000 users wrote a 25 MiB record
/// and could not restart (the append was refused, the shard stopped, its
/// supervisor restarted it, and so on).
#[tokio::test]
async fn a_large_resync_is_logged_in_records_of_bounded_size() {
    use crate::state::Event;

    // Enough for more than one record of positional entries (about 30
    // bytes a membership).
    const MEMBERS: usize = 40_000;
    // One shard: every member's account is here, so each membership is
    // applied here and logged.
    let state = subreddit_with_members(1, MEMBERS);
    let store = MemStore::open();
    restarted(state, 1, 4, &store).stop().await;
    let records = store.records.lock().unwrap();
    let mut synced = 0;
    for record in records.iter() {
        assert!(
            record.len() <= crate::wal::MAX_RECORD_BYTES + 256 * 1024,
            "a record of {} bytes",
            record.len()
        );
        for entry in crate::wal::decode_record(record).unwrap() {
            synced += entry
                .events
                .iter()
                .filter(|e| matches!(e, Event::MembershipSynced { .. }))
                .count();
        }
    }
    assert_eq!(synced, MEMBERS, "every membership, once");
    assert!(records.len() > 1, "more than one record");
}

/// `internal.sync` is acknowledged once applied, before its record is
/// durable: a join waits for that acknowledgement, so it waits for one append
/// (the subreddit's shard's), not two in turn. A read after it sees it.
#[tokio::test]
async fn an_internal_sync_is_acknowledged_before_its_record_is_durable() {
    use reddit_shared::protocol::internal::{SyncAck, SyncBatch, SyncItem};

    let (mut shard, store) = gated_with_user("eve").await;

    let item = |version| SyncItem::Membership {
        user: "eve".parse().unwrap(),
        subreddit: "elsewhere".parse().unwrap(),
        member: true,
        version,
    };
    let batch = SyncBatch {
        items: vec![item(1)],
        bulk: false,
    };
    let ack = shard.call(&batch, None).await.unwrap();
    assert_eq!(ack.applied, 1);
    assert_eq!(
        (ack.record, ack.durable),
        (2, 1),
        "it says which record will hold the items, and which one is durable"
    );
    assert_eq!(
        store.records.lock().unwrap().len(),
        1,
        "acknowledged while its record waits for the log"
    );
    // The same items again (a retry whose first answer was lost) change
    // nothing, but what they found is not durable yet: the answer names the
    // record that makes it so, or the sender would forget items a crash here
    // could still lose.
    let retry = shard.call(&batch, None).await.unwrap();
    assert_eq!((retry.applied, retry.record, retry.durable), (0, 2, 1));
    store.release(1);
    eventually("the item is logged all the same", || {
        store.records.lock().unwrap().len() >= 2
    })
    .await;
    // A restart's resync (bulk) is answered only once durable: its sender
    // paces itself by the answers.
    let bulk = SyncBatch {
        items: vec![item(2)],
        bulk: true,
    };
    shard.send(&bulk, INBOX, None).await;
    // Once the actor has handled it (the third request) ...
    eventually("the batch is handled", || {
        shard.metrics.total_requests() >= 3
    })
    .await;
    assert!(
        shard.out.try_recv().is_err(),
        "a bulk batch is not answered before its record is durable"
    );
    store.release(1);
    let ack: SyncAck = reddit_shared::codec::decode(&shard.next().await.payload).unwrap();
    assert_eq!((ack.applied, ack.record), (1, 0));
    assert_eq!(
        store.records.lock().unwrap().len(),
        3,
        "logged before answered"
    );
    store.release(100);
    // The first item again changes nothing, and everything is durable now:
    // no record to name, and its sender has nothing to keep (a record it
    // named would stay empty on a quiet shard, never appended, and the item
    // kept for good); the answer still says how far the log is durable.
    let again = shard.call(&batch, None).await.unwrap();
    assert_eq!((again.applied, again.record), (0, 0));
    assert!(again.durable >= 3, "{again:?}");
    shard.stop().await;
}

/// A record holding only writes nobody waits for (here `internal.sync`,
/// acknowledged before it is logged) waits up to the unwaited linger for
/// company instead of costing an append (an fsync) of its own; a client's
/// write ends the wait, and alone it goes at the deadline.
#[tokio::test(start_paused = true)]
async fn a_record_nobody_waits_for_waits_for_company_then_goes_at_its_deadline() {
    use reddit_shared::protocol::internal::{SyncBatch, SyncItem};

    let store = MemStore::open();
    let linger = Duration::from_millis(20);
    let mut shard = Shard::start_batched(
        store.clone(),
        Batching {
            unwaited_linger: linger,
            ..Batching::eager()
        },
    );
    let reg = shard.register_request("eve");
    shard.call(&reg, None).await.unwrap();
    let headers = shard.login("eve").await;
    let records = || store.records.lock().unwrap().len();
    let before = records();
    let sync = |version| SyncBatch {
        items: vec![SyncItem::Membership {
            user: "eve".parse().unwrap(),
            subreddit: "elsewhere".parse().unwrap(),
            member: true,
            version,
        }],
        bulk: false,
    };

    // Alone, it goes at its deadline, not before.
    let started = tokio::time::Instant::now();
    shard.call(&sync(1), None).await.unwrap();
    shard.call(&sync(2), None).await.unwrap();
    assert_eq!(records(), before, "acknowledged, waiting for company");
    eventually("the record goes at its deadline", || {
        records() == before + 1
    })
    .await;
    assert!(started.elapsed() >= linger, "after {:?}", started.elapsed());
    let last = store.records.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        crate::wal::decode_record(&last).unwrap().len(),
        2,
        "both syncs in one record"
    );

    // A client's write takes the waiting sync along at once.
    shard.call(&sync(3), None).await.unwrap();
    let started = tokio::time::Instant::now();
    shard
        .call(
            &CreateSubredditRequest {
                name: "company".parse().unwrap(),
                description: String::new(),
            },
            Some(headers),
        )
        .await
        .unwrap();
    assert!(started.elapsed() < linger, "after {:?}", started.elapsed());
    let last = store.records.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        crate::wal::decode_record(&last).unwrap().len(),
        2,
        "the sync and the write in one record"
    );
    // Not `stop`: its final snapshot is encoded on a blocking thread, which
    // paused time does not wait for. The runtime ends the actor with the test.
}

/// A durable shard that starts asks every other shard for what it holds for
/// the users owned here (`internal.resync`): the process before it may have
/// acknowledged sync items it never logged. A shard that is not running is
/// not asked again (it sends everything when it starts).
#[tokio::test]
async fn a_restarted_shard_asks_every_other_shard_to_resync_its_users() {
    use reddit_shared::protocol::internal::ResyncRequest;

    let mut shard = restarted(ShardState::new(0, 3), 3, 4, &MemStore::open());
    let mut asked = std::collections::BTreeSet::new();
    while asked.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), shard.out.recv())
            .await
            .unwrap_or_else(|_| panic!("only {asked:?} were asked"))
            .unwrap();
        let peer: u32 = (1..3)
            .find(|&p| msg.subject.as_str() == subject::request(p, ResyncRequest::OP))
            .unwrap_or_else(|| panic!("unexpected publication on {}", msg.subject));
        let req: ResyncRequest = reddit_shared::codec::decode(&msg.payload).unwrap();
        assert_eq!(req.shard, 0, "it asks for its own users");
        assert_eq!(req.after, Some(0), "after the last record of its log");
        asked.insert(peer);
    }
    assert_eq!(asked, [1, 2].into());
    shard.stop().await;
}

/// A shard asked for a resync queues, in its resync lane, every membership it
/// holds for the asking shard's users and nothing else; a request naming
/// itself or no shard of the cluster is refused.
#[tokio::test]
async fn a_shard_asked_to_resync_sends_what_it_holds_for_the_askers_users() {
    use reddit_shared::protocol::internal::SyncItem;

    const MEMBERS: usize = 50;
    let mut shard = restarted_with_members(MEMBERS).await;
    let ack = ask_resync(&mut shard, 1, None).await.unwrap();
    assert_eq!((ack.items, ack.all), (0, true));
    let ack = ask_resync(&mut shard, 2, None).await.unwrap();
    assert_eq!((ack.items, ack.all), (MEMBERS as u64, true));
    let mut got = std::collections::HashSet::new();
    while got.len() < MEMBERS {
        let env = tokio::time::timeout(Duration::from_secs(5), shard.resync.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MEMBERS} items", got.len()))
            .unwrap();
        assert_eq!(env.dest, 2);
        match env.item {
            SyncItem::Membership { user, member, .. } => {
                assert!(member);
                got.insert(user.key().to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for bad in [0, 3, u32::MAX] {
        let e = ask_resync(&mut shard, bad, None).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "shard {bad}: {e:?}");
    }
    assert!(shard.live.try_recv().is_err(), "nothing in the live lane");
    shard.stop().await;
}

/// Sends `internal.resync` for `peer` (its log ending at `after`) to
/// `shard` and waits for its answer.
async fn ask_resync(
    shard: &mut Restarted,
    peer: u32,
    after: Option<u64>,
) -> Result<reddit_shared::protocol::internal::ResyncAck, WireError> {
    use reddit_shared::protocol::internal::ResyncRequest;

    let msg = message(
        subject::request(0, ResyncRequest::OP).into(),
        Some(INBOX.into()),
        None,
        encode(&ResyncRequest { shard: peer, after })
            .unwrap()
            .into(),
    );
    shard.jobs.send(Job::Request(msg)).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), shard.out.recv())
            .await
            .expect("an answer")
            .unwrap();
        if msg.subject.as_str() == INBOX {
            return reddit_shared::connect::decode_message(&msg);
        }
    }
}

/// A shard whose log ends at a known record gets again only the items it
/// acknowledged for later records (those it may have lost), not everything
/// held for its users.
#[tokio::test]
async fn a_restart_gets_again_only_what_it_acknowledged_unlogged() {
    use reddit_shared::protocol::internal::SyncItem;

    const MEMBERS: usize = 50;
    let mut shard = restarted_with_members(MEMBERS).await;
    let item = |user: &str, version| SyncItem::Membership {
        user: user.parse().unwrap(),
        subreddit: "rust".parse().unwrap(),
        member: true,
        version,
    };
    // Shard 2 acknowledged two items for its record 8 while record 7 was
    // durable, and one for record 9.
    shard
        .unlogged
        .acknowledged(2, 8, 7, [item("member0", 1), item("member1", 2)]);
    shard.unlogged.acknowledged(2, 9, 7, [item("member2", 3)]);
    // It restarts with record 8 in its log: only record 9's item is lost.
    let ack = ask_resync(&mut shard, 2, Some(8)).await.unwrap();
    assert_eq!((ack.items, ack.all), (1, false));
    let env = tokio::time::timeout(Duration::from_secs(5), shard.resync.recv())
        .await
        .expect("the lost item")
        .unwrap();
    assert_eq!((env.dest, env.item), (2, item("member2", 3)));
    assert!(shard.resync.try_recv().is_err(), "nothing else");
    shard.stop().await;
}

/// Shard 0 of 3, restarted with a subreddit of `members` users of shard 2,
/// once its start's own resync of them has gone to the resync lane.
async fn restarted_with_members(members: usize) -> Restarted {
    let state = subreddit_with_members(3, members);
    let mut shard = restarted(state, 3, 4096, &MemStore::open());
    for _ in 0..members {
        tokio::time::timeout(Duration::from_secs(5), shard.resync.recv())
            .await
            .expect("the start's resync")
            .unwrap();
    }
    shard
}

/// Waits, up to 5 s, until `done` holds; fails with `what` if it never does.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Shard 0 of 2, durable, whose shard 1 (played by the test) answers every
/// DM delivery at `position` and notes it in `asked`, with user `sender`
/// registered and having sent `sent` to a user of shard 1. The actor is
/// configured by `configure` too.
struct DmSender {
    shard: Shard,
    position: Arc<std::sync::Mutex<crate::state::LogPosition>>,
    asked: Arc<std::sync::Mutex<Vec<Message>>>,
    sent: DmView,
}

impl DmSender {
    async fn start(
        position: crate::state::LogPosition,
        configure: impl FnOnce(Actor) -> Actor,
    ) -> Self {
        use reddit_shared::protocol::internal::DmDelivered;

        let position = Arc::new(std::sync::Mutex::new(position));
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (out_tx, out) = mpsc::channel(1024);
        let at = position.clone();
        let answers = Answers {
            asked: asked.clone(),
            answer: Box::new(move |msg| {
                if msg.subject.as_str() != subject::request(1, Op::InternalDmDeliver) {
                    // The start's own `internal.resync`: shard 1 is not running.
                    return Err(reddit_shared::connect::no_responders("shard 1"));
                }
                let DeliverDm { dm } = reddit_shared::codec::decode(&msg.payload)?;
                let at = *at.lock().unwrap();
                encode(&DmDelivered {
                    dm,
                    record: at.record,
                    durable: at.durable,
                    fence: at.fence,
                })
            }),
            took: Duration::ZERO,
        };
        let bus = MemBus::answering(out_tx, answers);
        let mut shard = Shard::start_on(
            Arc::new(bus),
            out,
            Some((MemStore::open(), Batching::eager())),
            None,
            false,
            ShardState::new(0, 2),
            configure,
        );
        let on = |shard, prefix| name_on(2, shard, prefix);
        let (sender, recipient) = (on(0, "sender"), on(1, "recipient"));
        let reg = shard.register_request(&sender);
        shard.call(&reg, None).await.unwrap();
        let auth = shard.login(&sender).await;
        let dm = SendDmRequest {
            to: recipient.parse().unwrap(),
            body: "hello".into(),
        };
        let sent = shard.call(&dm, Some(auth)).await.unwrap();
        Self {
            shard,
            position,
            asked,
            sent,
        }
    }

    /// The DMs shard 1 was asked to deliver so far.
    fn deliveries(&self) -> Vec<DmView> {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.subject.as_str() == subject::request(1, Op::InternalDmDeliver))
            .map(|m| {
                reddit_shared::codec::decode::<DeliverDm>(&m.payload)
                    .unwrap()
                    .dm
            })
            .collect()
    }
}

/// A DM delivered to a shard that acknowledged it before its record was
/// durable is kept (in the log, beside the sent copy) until that shard shows
/// the record durable; when that shard restarts and asks for what it may have
/// lost, the DM is delivered to it again before the answer.
#[tokio::test]
async fn a_dm_acknowledged_unlogged_is_delivered_again_when_its_shard_restarts() {
    use crate::state::LogPosition;
    use reddit_shared::protocol::internal::{ResyncAck, ResyncRequest};

    let DmSender {
        mut shard,
        position,
        asked,
        sent,
    } = DmSender::start(
        LogPosition {
            record: 8,
            durable: 7,
            fence: 3,
        },
        |a| a,
    )
    .await;
    assert_eq!(
        unconfirmed_dms(&mut shard).await,
        1,
        "record 8 is not durable at 7"
    );

    // Shard 1 restarts (fence 9) and asks: the DM goes to it again, and is
    // durable there before its answer.
    *position.lock().unwrap() = LogPosition {
        record: 0,
        durable: 9,
        fence: 9,
    };
    asked.lock().unwrap().clear();
    let ask = ResyncRequest {
        shard: 1,
        after: Some(7),
    };
    let ack: ResyncAck = shard.call(&ask, None).await.unwrap();
    assert_eq!((ack.items, ack.all, ack.dms), (0, false, 1));
    let again: Vec<DeliverDm> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(
                m.subject.as_str(),
                subject::request(1, Op::InternalDmDeliver)
            );
            reddit_shared::codec::decode(&m.payload).unwrap()
        })
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].dm, sent, "the very DM, with its id");
    assert_eq!(unconfirmed_dms(&mut shard).await, 0);
    // Asked again, nothing is left to deliver.
    let ack: ResyncAck = shard.call(&ask, None).await.unwrap();
    assert_eq!(ack.dms, 0);
    shard.stop().await;
}

/// On a quiet system no later delivery shows a DM's record durable: a DM
/// left unconfirmed for a whole recheck period is delivered again, and the
/// answer of a shard with nothing left to append confirms it. Nothing is
/// delivered again before, nor once nothing is kept.
#[tokio::test(start_paused = true)]
async fn a_dm_left_unconfirmed_is_delivered_again_until_its_shard_shows_it_durable() {
    use crate::state::LogPosition;

    let every = Duration::from_secs(1);
    let mut s = DmSender::start(
        LogPosition {
            record: 8,
            durable: 7,
            fence: 3,
        },
        |a| a.with_dm_recheck(every),
    )
    .await;
    assert_eq!(unconfirmed_dms(&mut s.shard).await, 1);
    assert_eq!(s.deliveries().len(), 1);
    tokio::time::sleep(every / 2).await;
    assert_eq!(s.deliveries().len(), 1, "not before a whole period");

    // Shard 1's record 8 is still not durable: asked again and again, the
    // DM stays kept.
    tokio::time::sleep(every * 4).await;
    let again = s.deliveries();
    assert!(again.len() >= 3, "{} deliveries", again.len());
    assert!(
        again.iter().all(|dm| *dm == s.sent),
        "the very DM, with its id"
    );
    assert_eq!(unconfirmed_dms(&mut s.shard).await, 1);

    // Now it is: the next time it is asked, it says so.
    *s.position.lock().unwrap() = LogPosition {
        record: 0,
        durable: 8,
        fence: 3,
    };
    tokio::time::sleep(every * 3).await;
    assert_eq!(unconfirmed_dms(&mut s.shard).await, 0);
    let delivered = s.deliveries().len();
    tokio::time::sleep(every * 5).await;
    assert_eq!(
        s.deliveries().len(),
        delivered,
        "nothing kept, nothing sent"
    );
    // Real time again: the final snapshot is encoded on a blocking thread,
    // which paused time does not wait for.
    tokio::time::resume();
    s.shard.stop().await;
}

/// A delivery of a DM stored already (a retry, or a recheck) names the record
/// that makes the shard's log hold everything it applied, since the first
/// delivery's record may still be on its way to the log; once nothing is
/// left to append, it names none: it is durable.
#[tokio::test]
async fn a_repeated_dm_delivery_names_a_record_only_while_one_is_unlogged() {
    use reddit_shared::protocol::internal::DmDelivered;

    let (mut shard, store) = gated_with_user("eve").await;
    let deliver = DeliverDm {
        dm: DmView {
            id: reddit_shared::ids::DmId::new(),
            from: "zed".into(),
            to: "eve".into(),
            body: "hi".into(),
            in_reply_to: None,
            created_at: 1,
            read: false,
        },
    };
    let first: DmDelivered = shard.call(&deliver, None).await.unwrap();
    assert_eq!((first.record, first.durable), (2, 1));
    let again: DmDelivered = shard.call(&deliver, None).await.unwrap();
    assert_eq!(
        (again.record, again.durable),
        (2, 1),
        "stored already, but not durable yet"
    );
    store.release(1);
    eventually("the DM is logged", || {
        store.records.lock().unwrap().len() >= 2
    })
    .await;
    let last: DmDelivered = shard.call(&deliver, None).await.unwrap();
    assert_eq!(
        (last.record, last.durable, last.fence),
        (0, 2, 1),
        "durable, and nothing is left to append"
    );
    assert_eq!(
        store.records.lock().unwrap().len(),
        2,
        "a repeat logs nothing"
    );
    store.release(100);
    shard.stop().await;
}

/// `internal.dm.deliver` is answered once the DM is stored, before its
/// record is durable, saying which record holds it, which is durable, and
/// the first record this process wrote.
#[tokio::test]
async fn a_dm_delivery_is_acknowledged_before_its_record_is_durable() {
    use reddit_shared::protocol::internal::DmDelivered;

    let (mut shard, store) = gated_with_user("eve").await;
    let dm = DmView {
        id: reddit_shared::ids::DmId::new(),
        from: "zed".into(),
        to: "EVE".into(),
        body: "hi".into(),
        in_reply_to: None,
        created_at: 1,
        read: false,
    };
    let got: DmDelivered = shard
        .call(&DeliverDm { dm: dm.clone() }, None)
        .await
        .unwrap();
    assert_eq!(got.dm.id, dm.id);
    assert_eq!(got.dm.to, "eve", "as registered");
    assert_eq!(
        (got.record, got.durable, got.fence),
        (2, 1, 1),
        "record 2 will hold it; the registration (record 1, this process's first) is durable"
    );
    assert_eq!(store.records.lock().unwrap().len(), 1, "not logged yet");
    store.release(1);
    eventually("the DM is logged all the same", || {
        store.records.lock().unwrap().len() >= 2
    })
    .await;
    store.release(100);
    shard.stop().await;
}

/// Shard 0's `unconfirmed_dms` (`shard.stats`).
async fn unconfirmed_dms(shard: &mut Shard) -> u64 {
    shard
        .call(&StatsRequest {}, None)
        .await
        .unwrap()
        .unconfirmed_dms
}

/// A shard whose log says a DM it delivered was never shown durable delivers
/// it again as it starts: the recipient's shard may have restarted while this
/// one was not running, so never asked it for the DM.
#[tokio::test]
async fn a_starting_shard_delivers_again_the_dms_its_log_left_unconfirmed() {
    use crate::state::LogPosition;

    let mut state = ShardState::new(0, 3);
    let sender = name_on(3, 0, "sender");
    state
        .register(&sender.parse().unwrap(), [7; 32], 1)
        .unwrap();
    let dm = state
        .prepare_dm(
            reddit_shared::ids::DmId::new(),
            &sender.parse().unwrap(),
            &"faraway".parse().unwrap(),
            "are you there".into(),
            None,
            2,
        )
        .unwrap();
    let unconfirmed = LogPosition {
        record: 8,
        durable: 7,
        fence: 3,
    };
    state.record_sent_to(2, dm.clone(), unconfirmed);
    state.record_sent_to(
        1,
        DmView {
            id: reddit_shared::ids::DmId::new(),
            ..dm.clone()
        },
        LogPosition::default(),
    );
    assert_eq!(state.unconfirmed_dm_count(), 1, "only the one not durable");

    let mut shard = restarted(state, 3, 4, &MemStore::open());
    let delivery = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), shard.out.recv())
            .await
            .expect("the DM delivered again")
            .unwrap();
        if msg.subject.as_str() == subject::request(2, Op::InternalDmDeliver) {
            break msg;
        }
        assert!(
            msg.subject.ends_with(Op::InternalResync.as_str()),
            "unexpected {}",
            msg.subject
        );
    };
    let deliver: DeliverDm = reddit_shared::codec::decode(&delivery.payload).unwrap();
    assert_eq!(deliver.dm, dm);
    shard.stop().await;
}

/// A durable shard (of one) whose log appends wait for the test
/// (`MemStore::gated`), with user `name` registered (its record released).
async fn gated_with_user(name: &str) -> (Shard, Arc<MemStore>) {
    let store = MemStore::gated();
    let mut shard = Shard::start(Some(store.clone()));
    let reg = shard.register_request(name);
    shard.send(&reg, INBOX, None).await;
    store.release(1);
    assert_eq!(shard.next().await.subject.as_str(), INBOX);
    (shard, store)
}

/// The first of `prefix0`, `prefix1`, ... that shard `shard` of `shards` owns.
fn name_on(shards: u32, shard: u32, prefix: &str) -> String {
    let routing = ShardState::new(0, shards);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| routing.owner(n) == shard)
        .unwrap()
}
