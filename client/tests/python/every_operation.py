"""Every public operation of docs/protocol.md, from Python, written from the document.

Run by client/tests/python.rs against three shards with the project's NATS roles:

    NATS_URL=nats://127.0.0.1:4222 SERVICE_URL=nats://service:PW@127.0.0.1:4222 \\
        python3 every_operation.py TAG

It discovers the shards ($SRV.INFO), registers two users anonymously, connects as
each by key, and calls every operation (the audit as the service role), checking
the replies' shapes, the documented errors, and a push. Prints "ok" at the end.
"""
import asyncio, json, os, sys, uuid
import msgpack, nats
from nacl.signing import SigningKey, VerifyKey
from nkeys import encode_seed, PREFIX_BYTE_USER

URL = os.environ["NATS_URL"]
SERVICE_URL = os.environ["SERVICE_URL"]
TAG = sys.argv[1]


def fnv1a(key):
    h = 0xcbf29ce484222325
    for b in key.lower().encode():
        h = ((h ^ b) * 0x100000001b3) % 2**64
    return h


class EngineError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


async def discover(nc):
    """Section 4: collect $SRV.INFO replies until every shard 0..shards answered."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.INFO.reddit-engine", b"", reply=inbox)
    seen, shards = {}, None
    while shards is None or len(seen) < shards:
        msg = await sub.next_msg(timeout=3)
        info = json.loads(msg.data)
        meta = info["metadata"]
        assert meta["protocol"] == "1", meta
        shards = int(meta["shards"])
        seen[int(meta["shard"])] = info["id"]
    await sub.unsubscribe()
    return shards


class Client:
    def __init__(self, nc, shards):
        self.nc, self.shards = nc, shards

    async def call(self, key, op, body, token=None, idem=None, shard=None, raw=None):
        shard = fnv1a(key) % self.shards if shard is None else shard
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if idem:
            headers["Idempotency-Key"] = idem
        data = raw if raw is not None else msgpack.packb(body)
        msg = await self.nc.request(f"reddit.shard.{shard}.{op}", data, timeout=5, headers=headers or None)
        reply = msgpack.unpackb(msg.data)
        if msg.headers and "Nats-Service-Error-Code" in msg.headers:
            status = int(msg.headers["Nats-Service-Error-Code"])
            assert msg.headers.get("Nats-Service-Error") == reply["message"]
            raise EngineError(status, reply["code"], reply["message"])
        return reply

    async def fails(self, status, code, *args, **kwargs):
        try:
            reply = await self.call(*args, **kwargs)
        except EngineError as e:
            assert (e.status, e.code) == (status, code), (status, code, e)
            return e
        raise AssertionError(f"expected {status} {code}, got {reply}")


def keys(d, *names):
    for n in names:
        assert n in d, (n, d)


KEYS = {}


async def person(anon, name):
    key = SigningKey.generate()
    KEYS[name] = key
    view = await anon.call(name, "user.register", {"username": name, "public_key": key.verify_key.encode().hex()})
    keys(view, "username", "public_key", "post_karma", "comment_karma", "joined", "created_at")
    nc = await nats.connect(URL, name=name, nkeys_seed_str=encode_seed(key.encode(), PREFIX_BYTE_USER).decode(),
                            inbox_prefix=f"_INBOX_USER.{name.lower()}")
    c = Client(nc, anon.shards)
    ch = await c.call(name, "auth.challenge", {"username": name})
    keys(ch, "challenge", "expires_at")
    signed = key.sign(f"reddit-login-v1\n{name.lower()}\n{ch['challenge']}".encode()).signature.hex()
    login = await c.call(name, "auth.login", {"username": name, "challenge": ch["challenge"], "signature": signed})
    keys(login, "username", "token", "expires_at")
    # A challenge is accepted once.
    await c.fails(401, "unauthenticated", name, "auth.login",
                  {"username": name, "challenge": ch["challenge"], "signature": signed})
    return c, login["token"]


async def main():
    anon_nc = await nats.connect(URL)
    shards = await discover(anon_nc)
    anon = Client(anon_nc, shards)
    a, b = f"pa{TAG}", f"pb{TAG}"
    alice, ta = await person(anon, a)
    bob, tb = await person(anon, b)
    await anon.fails(409, "conflict", a, "user.register",
                     {"username": a.upper(), "public_key": "00" * 32})

    # Accounts
    u = await bob.call(a, "user.get", {"username": a})
    assert u["username"] == a and len(u["public_key"]) == 64
    await bob.fails(404, "not_found", "nobody" + TAG, "user.get", {"username": "nobody" + TAG})
    me = await alice.call(a, "auth.whoami", {}, token=ta)
    assert me["username"] == a and me["expires_at"] > 0, me
    await alice.fails(401, "unauthenticated", a, "auth.whoami", {})
    await alice.fails(401, "unauthenticated", a, "auth.whoami", {}, token=ta[:-1] + ("0" if ta[-1] != "0" else "1"))

    # Subreddits
    sub = f"s{TAG}"
    view = await alice.call(sub, "sub.create", {"name": sub, "description": None}, token=ta, idem=str(uuid.uuid4()))
    keys(view, "name", "description", "creator", "members", "posts", "created_at")
    assert view["members"] == 0 and view["description"] == ""
    await alice.fails(409, "conflict", sub, "sub.create", {"name": sub}, token=ta)
    await alice.fails(401, "unauthenticated", sub, "sub.create", {"name": sub + "x"})
    assert (await bob.call(sub, "sub.get", {"name": sub}))["name"] == sub
    found = []
    for k in range(shards):
        found += (await bob.call("", "sub.list", {"limit": 100}, shard=k))["subreddits"]
    assert any(s["name"] == sub for s in found)
    for c, t in ((alice, ta), (bob, tb)):
        j = await c.call(sub, "sub.join", {"name": sub}, token=t, idem=str(uuid.uuid4()))
        assert j["member"] is True and j["changed"] is True, j
    again = await bob.call(sub, "sub.join", {"name": sub}, token=tb)
    assert again["changed"] is False and again["members"] == 2

    # Posts
    p = await alice.call(sub, "post.create", {"subreddit": sub, "title": "hello", "body": None, "repost_of": None},
                         token=ta, idem=str(uuid.uuid4()))
    keys(p, "subreddit", "id", "author", "title", "body", "repost_of", "score", "ups", "downs", "comments", "created_at")
    assert isinstance(p["id"], bytes) and len(p["id"]) == 16
    ref = {"subreddit": sub, "id": p["id"]}
    rp = await bob.call(sub, "post.create", {"subreddit": sub, "title": "again", "repost_of": ref}, token=tb)
    assert rp["repost_of"]["id"] == p["id"]
    await bob.fails(404, "not_found", sub, "post.create",
                    {"subreddit": sub, "title": "x", "repost_of": {"subreddit": sub, "id": uuid.uuid4().bytes}}, token=tb)
    assert (await bob.call(sub, "post.get", {"subreddit": sub, "id": p["id"]}))["title"] == "hello"
    for sort in ("hot", "new", "top", "controversial", None):
        page = await bob.call(sub, "post.list", {"subreddit": sub, "sort": sort, "limit": 1, "cursor": None})
        assert len(page["posts"]) == 1 and page["next_cursor"], page
        rest = await bob.call(sub, "post.list", {"subreddit": sub, "sort": sort, "cursor": page["next_cursor"]})
        assert len(rest["posts"]) == 1 and rest.get("next_cursor") is None, rest
    e = await bob.fails(400, "invalid_request", sub, "post.list", {"subreddit": sub, "limit": "ten"})
    assert "limit" in e.message, e.message

    # Comments, three levels deep
    c1 = await bob.call(sub, "comment.create", {"subreddit": sub, "post_id": p["id"], "parent_id": None, "body": "one"}, token=tb)
    keys(c1, "subreddit", "post_id", "id", "parent_id", "author", "body", "score", "ups", "downs", "depth", "created_at", "replies")
    c2 = await alice.call(sub, "comment.create", {"subreddit": sub, "post_id": p["id"], "parent_id": c1["id"], "body": "two"}, token=ta)
    c3 = await bob.call(sub, "comment.create", {"subreddit": sub, "post_id": p["id"], "parent_id": c2["id"], "body": "three"}, token=tb)
    assert (c1["depth"], c2["depth"], c3["depth"]) == (0, 1, 2)
    tree = await bob.call(sub, "comment.tree", {"subreddit": sub, "post_id": p["id"], "sort": None})
    assert tree["total"] == 3 and tree["truncated"] is False
    assert tree["comments"][0]["replies"][0]["replies"][0]["body"] == "three"
    sub_tree = await bob.call(sub, "comment.tree", {"subreddit": sub, "post_id": p["id"], "root": c2["id"], "sort": "new"})
    assert [c["body"] for c in sub_tree["comments"]] == ["two"] and sub_tree["total"] == 3

    # Votes and karma
    v = await bob.call(sub, "vote.cast", {"subreddit": sub, "target": "post", "id": p["id"], "value": 1}, token=tb)
    assert (v["score"], v["ups"], v["downs"], v["value"]) == (1, 1, 0, 1), v
    v = await alice.call(sub, "vote.cast", {"subreddit": sub, "target": "comment", "id": c1["id"], "value": -1}, token=ta)
    assert v["score"] == -1
    v = await alice.call(sub, "vote.cast", {"subreddit": sub, "target": "comment", "id": c1["id"], "value": 0}, token=ta)
    assert v["score"] == 0
    for _ in range(50):
        if (await bob.call(a, "user.get", {"username": a}))["post_karma"] == 1:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("karma did not arrive")

    # Feed
    feed = await bob.call(b, "feed.get", {"sort": None, "limit": None}, token=tb)
    assert {x["title"] for x in feed["posts"]} == {"hello", "again"}, feed

    # DMs, with a push for the recipient
    pushes = await alice.nc.subscribe(f"reddit.events.user.{a.lower()}")
    await alice.nc.flush()
    dm = await bob.call(b, "dm.send", {"to": a, "body": "hi"}, token=tb, idem=str(uuid.uuid4()))
    keys(dm, "id", "from", "to", "body", "in_reply_to", "created_at", "read")
    push = msgpack.unpackb((await pushes.next_msg(timeout=5)).data)
    assert push["kind"] == "dm" and push["dm"]["body"] == "hi", push
    inbox = await alice.call(a, "dm.list", {"folder": None, "unread_only": None}, token=ta)
    assert inbox["unread"] == 1 and inbox["messages"][0]["id"] == dm["id"]
    r = await alice.call(a, "dm.reply", {"dm_id": dm["id"], "body": "hello"}, token=ta)
    assert r["to"] == b and r["in_reply_to"] == dm["id"]
    marked = await alice.call(a, "dm.read", {"ids": [dm["id"]]}, token=ta)
    assert marked == {"marked": 1, "unread": 0}, marked
    sent = await alice.call(a, "dm.list", {"folder": "sent"}, token=ta)
    assert sent["messages"][0]["body"] == "hello"
    await alice.fails(403, "forbidden", a, "dm.reply", {"dm_id": r["id"], "body": "not mine"}, token=ta)

    # Signed posts and comments: the bytes of the document's "Signed posts and
    # comments", signed with the registered key; checked on the way in and
    # verifiable on the way out.
    text = f"reddit-post-v1\n{a.lower()}\n{sub.lower()}\n-\nsigned\nby alice"
    sig = KEYS[a].sign(text.encode()).signature.hex()
    sp = await alice.call(sub, "post.create", {"subreddit": sub, "title": "signed", "body": "by alice",
                                               "signature": sig}, token=ta)
    assert sp["signature"] == sig
    got = await bob.call(sub, "post.get", {"subreddit": sub, "id": sp["id"]})
    rebuilt = f"reddit-post-v1\n{got['author'].lower()}\n{got['subreddit'].lower()}\n-\n{got['title']}\n{got['body']}"
    VerifyKey(bytes.fromhex(u["public_key"])).verify(rebuilt.encode(), bytes.fromhex(got["signature"]))
    e = await alice.fails(400, "invalid_request", sub, "post.create",
                          {"subreddit": sub, "title": "signed!", "body": "by alice", "signature": sig}, token=ta)
    assert e.message.startswith("signature:"), e.message
    post_id = str(uuid.UUID(bytes=sp["id"]))
    ctext = f"reddit-comment-v1\n{b.lower()}\n{sub.lower()}\n{post_id}\n-\nverified"
    csig = KEYS[b].sign(ctext.encode()).signature.hex()
    sc = await bob.call(sub, "comment.create", {"subreddit": sub, "post_id": sp["id"], "body": "verified",
                                                "signature": csig}, token=tb)
    assert sc["signature"] == csig

    # Operators: stats from any shard; the audit as the service role
    st = await bob.call("", "shard.stats", {}, shard=0)
    keys(st, "shard", "shards", "users", "requests", "queue_capacity", "storage", "replies_refused")
    service = Client(await nats.connect(SERVICE_URL, inbox_prefix="_INBOX_SERVICE"), shards)
    report = await service.call("", "audit.run", {"max_violations": 10}, shard=0)
    assert report["ok"] is True, report

    # What the document says is refused: bad bytes, unknown operations, wrong shard.
    await bob.fails(400, "malformed", b, "dm.list", None, token=tb, raw=b"\xc1")
    await bob.fails(400, "unknown_operation", b, "no.such.op", {})
    other = (fnv1a(sub) + 1) % shards
    if shards > 1:
        await bob.fails(400, "wrong_shard", sub, "sub.get", {"name": sub}, shard=other)
    for c in (alice, bob, service):
        await c.nc.close()
    await anon_nc.close()
    print("ok")


asyncio.run(main())
