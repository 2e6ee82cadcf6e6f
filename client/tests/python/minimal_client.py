"""The minimal client of docs/protocol.md section 12, run by client/tests/python.rs.

Written from the protocol document alone: register anonymously, connect to NATS as
the user by proving the registered Ed25519 key (an nkey), log in, read the feed,
send a DM with an idempotency key, and check what the bus refuses. Usage:

    NATS_URL=nats://127.0.0.1:4222 SHARDS=3 python3 minimal_client.py NAME
"""
import asyncio, os, sys, uuid
import msgpack, nats                                   # pip install nats-py msgpack pynacl nkeys
from nacl.signing import SigningKey
from nkeys import encode_seed, PREFIX_BYTE_USER

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
SHARDS = int(os.environ.get("SHARDS", "3"))           # from $SRV.INFO discovery

def fnv1a(key):
    h = 0xcbf29ce484222325
    for b in key.lower().encode():
        h = ((h ^ b) * 0x100000001b3) % 2**64
    return h

class EngineError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code

async def call(nc, key, op, body, token=None, idempotency_key=None):
    subject = f"reddit.shard.{fnv1a(key) % SHARDS}.{op}"
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if idempotency_key:                                # the same on every retry
        headers["Idempotency-Key"] = idempotency_key
    msg = await nc.request(subject, msgpack.packb(body), timeout=5, headers=headers or None)
    reply = msgpack.unpackb(msg.data)
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        raise EngineError(int(msg.headers["Nats-Service-Error-Code"]), reply["code"], reply["message"])
    return reply

async def main(name):
    key = SigningKey.generate()
    # 1. Anonymous (no credentials): discover and register, nothing else.
    anon = await nats.connect(URL)
    await call(anon, name, "user.register", {"username": name, "public_key": key.verify_key.encode().hex()})
    await anon.close()
    # 2. As the user: the nkey is the registered key; the username goes in the
    #    connection name (or `user`); replies come to the user's own inbox prefix.
    nc = await nats.connect(URL, name=name, nkeys_seed_str=encode_seed(key.encode(), PREFIX_BYTE_USER).decode(),
                            inbox_prefix=f"_INBOX_USER.{name.lower()}")
    ch = await call(nc, name, "auth.challenge", {"username": name})
    message = f"reddit-login-v1\n{name.lower()}\n{ch['challenge']}".encode()
    login = await call(nc, name, "auth.login", {"username": name, "challenge": ch["challenge"],
                                                "signature": key.sign(message).signature.hex()})
    token = login["token"]
    print("feed:", await call(nc, name, "feed.get", {"sort": "new"}, token=token))
    # A write that is safe to retry: any UUID works, the same on every attempt.
    idem = str(uuid.uuid4())
    first = await call(nc, name, "dm.send", {"to": name, "body": "note to self"}, token=token, idempotency_key=idem)
    again = await call(nc, name, "dm.send", {"to": name, "body": "note to self"}, token=token, idempotency_key=idem)
    assert first["id"] == again["id"], "a retry is the same DM"
    inbox = await call(nc, name, "dm.list", {}, token=token)
    assert len(inbox["messages"]) == 1, inbox
    # Ids are 16-byte bin on the wire (see section 2).
    assert isinstance(first["id"], bytes) and len(first["id"]) == 16, first["id"]
    # 3. What the bus refuses: someone else's inbox, and anonymous logins.
    try:
        await call(nc, name, "dm.list", {}, token="v1.x.1.00")
        raise AssertionError("a forged token was accepted")
    except EngineError as e:
        assert e.status == 401, e
    await nc.close()
    print("ok")

asyncio.run(main(sys.argv[1]))
