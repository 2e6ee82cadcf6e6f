//! Tokens and login challenges.
//!
//! A token is `v2.<username>.<expires_ms>.<public key>.<hmac>`: the HMAC-SHA256 of
//! the first four parts under the cluster's shared secret, in hex. Any shard
//! verifies it locally, and learns the user's registered public key from it (to
//! check signed posts and comments without asking the user's shard). Clients treat
//! it as opaque.
//!
//! A login challenge is 32 random bytes, kept by the user's shard for one minute and
//! accepted once, so a captured login cannot be replayed.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use reddit_shared::auth::{login_message, CHALLENGE_TTL_MS};
use reddit_shared::error::WireError;
use reddit_shared::names::Username;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// What a verified token says.
#[derive(Clone, Debug)]
pub struct Bearer {
    /// The user it speaks for.
    pub user: Username,
    /// Their registered public key (Ed25519, compressed), checked when it
    /// was registered. Decompressed only to check a signature: most requests
    /// carry none, and decompressing (a field exponentiation) on every token
    /// the cache of verified tokens misses was wasted work; at a million users
    /// most tokens miss it.
    pub key: [u8; 32],
    /// When it expires (Unix ms).
    pub expires: i64,
}

impl Bearer {
    /// Checks `signature` (128 hex digits) of `message` with this user's key:
    /// `400 invalid_request` naming `what` if it does not verify.
    pub fn check_signature(
        &self,
        what: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<(), WireError> {
        let bad = || {
            WireError::invalid(format!(
                "signature: the {what}'s signature does not verify with {}'s registered key (sign the exact bytes docs/protocol.md gives, with that key)",
                self.user
            ))
        };
        let mut raw = [0u8; 64];
        hex::decode_to_slice(signature, &mut raw).map_err(|_| bad())?;
        VerifyingKey::from_bytes(&self.key)
            .and_then(|key| key.verify(message, &Signature::from_bytes(&raw)))
            .map_err(|_| bad())
    }
}

/// Issues and verifies tokens with the cluster secret.
#[derive(Clone)]
pub struct TokenSigner {
    /// The HMAC keyed with the secret, cloned per use (keying costs two hash blocks).
    keyed: Option<HmacSha256>,
    ttl_ms: i64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for `secret`; tokens live `ttl_ms` milliseconds.
    pub fn new(secret: &[u8], ttl_ms: i64) -> Self {
        Self {
            // HMAC accepts keys of any length, so this is always Some.
            keyed: HmacSha256::new_from_slice(secret).ok(),
            ttl_ms,
        }
    }

    fn mac_bytes(&self, data: &str) -> [u8; 32] {
        self.mac_raw(data.as_bytes())
    }

    fn mac(&self, data: &str) -> String {
        hex::encode(self.mac_bytes(data))
    }

    /// Whether `tag` is the MAC of `data`, or its first `tag.len()` bytes (at least
    /// 16), compared in constant time (`Mac::verify_truncated_left`).
    fn verify_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        match self.keyed.clone() {
            Some(mut mac) if tag.len() >= 16 => {
                mac.update(data);
                mac.verify_truncated_left(tag).is_ok()
            }
            _ => false,
        }
    }

    fn mac_raw(&self, data: &[u8]) -> [u8; 32] {
        match self.keyed.clone() {
            Some(mut mac) => {
                mac.update(data);
                mac.finalize().into_bytes().into()
            }
            None => [0; 32],
        }
    }

    /// A token for `username` (whose registered key is `key`) issued at `now`
    /// (ms), and its expiry.
    pub fn issue(&self, username: &Username, key: &[u8; 32], now: i64) -> (String, i64) {
        let expires = now.saturating_add(self.ttl_ms);
        let body = format!("v2.{}.{expires}.{}", username.as_str(), hex::encode(key));
        let mac = self.mac(&body);
        (format!("{body}.{mac}"), expires)
    }

    /// The user a token speaks for and their public key, if the token is genuine
    /// and not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Bearer, WireError> {
        let forged = || {
            WireError::unauthenticated(
                "the token is not valid (malformed, from an older version, or not signed by this cluster); log in again",
            )
        };
        let (body, mac) = token.rsplit_once('.').ok_or_else(forged)?;
        let mut parts = body.splitn(4, '.');
        let (Some("v2"), Some(name), Some(expires), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(forged());
        };
        let mut given = [0u8; 32];
        hex::decode_to_slice(mac, &mut given).map_err(|_| forged())?;
        if !self.verify_mac(body.as_bytes(), &given) {
            return Err(forged());
        }
        let expires: i64 = expires.parse().map_err(|_| forged())?;
        if expires <= now {
            return Err(WireError::unauthenticated(
                "the token has expired; log in again",
            ));
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(key, &mut raw).map_err(|_| forged())?;
        Ok(Bearer {
            user: Username::parse(name).map_err(|_| forged())?,
            key: raw,
            expires,
        })
    }

    /// A short fingerprint of the secret, so shards can check they share it without
    /// revealing it.
    pub fn fingerprint(&self) -> String {
        self.mac("reddit-secret-fingerprint")
            .chars()
            .take(16)
            .collect()
    }
}

/// Tokens verified recently, so a session's requests cost a hash lookup instead of
/// an HMAC each, and share one [`Bearer`] instead of copying it. Expiry is
/// checked on every use.
///
/// Bounded in two halves of [`VERIFIED_TOKENS`]` / 2`: new tokens go into the
/// current half; when it is full it becomes the previous half and the old
/// previous one is forgotten, dropped on a thread of its own. A token found in
/// the previous half moves to the current one, so a session in use stays.
/// Emptying the whole cache at once, as it did before, freed 65,536 entries
/// inside one request's turn: 10 ms on an idle box, up to 38 ms of CPU in a
/// shard during a million-user setup, where every user's first request to
/// each shard brings a new token (docs/performance.md, "Caches that forget
/// without a stall").
#[derive(Debug)]
pub struct VerifiedTokens {
    current: HashMap<String, Arc<Bearer>>,
    previous: HashMap<String, Arc<Bearer>>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self {
            current: Self::half(),
            previous: HashMap::new(),
        }
    }
}

/// Most tokens [`VerifiedTokens`] holds.
pub const VERIFIED_TOKENS: usize = 65_536;

impl VerifiedTokens {
    /// What `token` says at `now` (user, key), verifying it with `signer` unless
    /// it was verified before.
    pub fn verify(
        &mut self,
        signer: &TokenSigner,
        token: &str,
        now: i64,
    ) -> Result<Arc<Bearer>, WireError> {
        let bearer = match self.current.get(token) {
            Some(bearer) => bearer.clone(),
            None => {
                let bearer = match self.previous.get(token) {
                    Some(bearer) => bearer.clone(),
                    None => Arc::new(signer.verify(token, now)?),
                };
                self.remember(token, bearer.clone());
                bearer
            }
        };
        if bearer.expires > now {
            Ok(bearer)
        } else {
            Err(WireError::unauthenticated(
                "the token has expired; log in again",
            ))
        }
    }

    /// Tokens held (both halves; one moved to the current half counts twice).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty half with room for all it will hold.
    fn half() -> HashMap<String, Arc<Bearer>> {
        HashMap::with_capacity(VERIFIED_TOKENS / 2)
    }

    fn remember(&mut self, token: &str, bearer: Arc<Bearer>) {
        if self.current.len() >= VERIFIED_TOKENS / 2 {
            // The new half has its room made at once: grown insert by insert,
            // it would move every entry it holds at each doubling (4 ms at
            // the 28,673rd).
            let full = std::mem::replace(&mut self.current, Self::half());
            crate::memory::drop_elsewhere(std::mem::replace(&mut self.previous, full));
        }
        self.current.insert(token.to_owned(), bearer);
    }
}

/// Login challenges: stateless and bound to the user, so nobody can crowd out
/// another user's login.
///
/// A challenge is 80 hex digits: 16 random bytes, its expiry (8 bytes, big-endian
/// Unix ms) and the first 16 bytes of an HMAC-SHA256 over the user key, the random
/// bytes and the expiry under the cluster secret. Any number may be open at once
/// and the shard stores none of them: it remembers only the challenges that a
/// login attempt has used, until they expire, so each is accepted once. A failed
/// attempt uses up its own challenge only.
///
/// Issuing is rate-limited with a clear `429`: per requesting connection (the
/// reply inbox's connection token), and per user for requests that do not come
/// from that user's own connection. The trusted roles (service, engine) are not
/// limited, and nobody else's requests can exhaust a user's own connection.
#[derive(Debug)]
pub struct Challenges {
    signer: TokenSigner,
    /// Grows a few entries per insert (a quarter of a million per shard at a
    /// million users: a standard map would move them all within one login).
    used: crate::state::GrowMap<[u8; 16], i64>,
    per_connection: RateLimiter,
    per_user: RateLimiter,
}

/// Most used challenges remembered; past it, logins get `503` until some expire.
pub const MAX_USED_CHALLENGES: usize = 1_000_000;
/// Challenges one connection may ask for in a burst, and per second after it.
pub const CONNECTION_CHALLENGES: (f64, f64) = (60.0, 10.0);
/// Challenges for one user that other connections may ask for in a burst, and per
/// second after it.
pub const FOREIGN_CHALLENGES: (f64, f64) = (10.0, 0.5);

/// Who asks for a challenge, as far as the shard can tell from the reply inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester<'a> {
    /// The service or engine role: trusted, not limited.
    Trusted,
    /// A connection of the user the challenge is for.
    Own(&'a str),
    /// Any other connection (anonymous or another user).
    Foreign(&'a str),
}

impl Challenges {
    /// Challenges signed with the cluster secret of `signer`.
    pub fn new(signer: &TokenSigner) -> Self {
        Self {
            signer: signer.clone(),
            used: Default::default(),
            per_connection: RateLimiter::default(),
            per_user: RateLimiter::default(),
        }
    }

    fn mac_input(user_key: &str, random: &[u8], expires: i64) -> Vec<u8> {
        let mut data = Vec::with_capacity(user_key.len() + 45);
        data.extend_from_slice(b"reddit-challenge-v1\0");
        data.extend_from_slice(user_key.as_bytes());
        data.push(0);
        data.extend_from_slice(random);
        data.extend_from_slice(&expires.to_be_bytes());
        data
    }

    /// A fresh challenge for `user_key` asked by `who`, and when it expires; `429`
    /// when `who` asked too often.
    pub fn issue(
        &mut self,
        user_key: &str,
        who: Requester<'_>,
        now: i64,
    ) -> Result<(String, i64), WireError> {
        let (burst, rate) = CONNECTION_CHALLENGES;
        let limited = |what: &str| {
            WireError::too_many(format!(
                "too many login challenges {what}; wait a few seconds and retry"
            ))
        };
        match who {
            Requester::Trusted => {}
            Requester::Own(conn) => {
                if !self.per_connection.allow(conn, now, burst, rate) {
                    return Err(limited("from this connection"));
                }
            }
            Requester::Foreign(conn) => {
                if !self.per_connection.allow(conn, now, burst, rate) {
                    return Err(limited("from this connection"));
                }
                let (burst, rate) = FOREIGN_CHALLENGES;
                if !self.per_user.allow(user_key, now, burst, rate) {
                    return Err(limited(&format!(
                        "for {user_key} from connections other than its own"
                    )));
                }
            }
        }
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        let expires = now + CHALLENGE_TTL_MS;
        let mut bytes = Vec::with_capacity(40);
        bytes.extend_from_slice(&random);
        bytes.extend_from_slice(&expires.to_be_bytes());
        let mac = self
            .signer
            .mac_raw(&Self::mac_input(user_key, &random, expires));
        bytes.extend_from_slice(&mac[..16]);
        Ok((hex::encode(bytes), expires))
    }

    /// Uses up `challenge` and checks the signature against `public_key`.
    pub fn verify(
        &mut self,
        user: &Username,
        challenge: &str,
        signature_hex: &str,
        public_key: &[u8; 32],
        now: i64,
    ) -> Result<(), WireError> {
        let fail = |why: &str| WireError::unauthenticated(format!("login failed: {why}"));
        let not_issued = || {
            fail("the challenge was not issued for this user by this cluster; ask auth.challenge")
        };
        let mut raw = [0u8; 40];
        hex::decode_to_slice(challenge, &mut raw).map_err(|_| not_issued())?;
        let (random, rest) = raw.split_at(16);
        let (expires, mac) = rest.split_at(8);
        let mut random16 = [0u8; 16];
        random16.copy_from_slice(random);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(expires);
        let expires = i64::from_be_bytes(exp);
        if !self
            .signer
            .verify_mac(&Self::mac_input(user.key(), random, expires), mac)
        {
            return Err(not_issued());
        }
        if expires <= now {
            return Err(fail("the challenge has expired; ask auth.challenge again"));
        }
        if self.used.contains_key(&random16) {
            return Err(fail(
                "the challenge was used already (each is accepted once); ask auth.challenge again",
            ));
        }
        if self.used.len() >= MAX_USED_CHALLENGES {
            self.used.retain(|_, exp| *exp > now);
            if self.used.len() >= MAX_USED_CHALLENGES {
                return Err(WireError::unavailable(
                    "too many logins in the last minute; retry shortly",
                ));
            }
        }
        self.used.insert(random16, expires);
        let sig_bytes = hex::decode(signature_hex)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| fail("the signature must be 128 hex digits"))?;
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|_| fail("the registered key is not a valid Ed25519 key"))?;
        key.verify(
            &login_message(user.key(), challenge),
            &Signature::from_bytes(&sig_bytes),
        )
        .map_err(|_| fail("the signature does not match the registered key"))
    }
}

/// Token buckets by key, bounded: idle (full) buckets are dropped when the map
/// grows past [`RATE_KEYS`], and all of them if that is not enough.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, (f64, i64)>,
}

/// Most keys a [`RateLimiter`] tracks.
pub const RATE_KEYS: usize = 65_536;

impl RateLimiter {
    /// Takes one token from `key`'s bucket (holding at most `burst`, refilled at
    /// `per_sec`) at `now` (ms); false if it is empty.
    pub fn allow(&mut self, key: &str, now: i64, burst: f64, per_sec: f64) -> bool {
        let refill = |(tokens, last): (f64, i64)| {
            let elapsed = (now - last).max(0) as f64 / 1000.0;
            (tokens + elapsed * per_sec).min(burst)
        };
        if !self.buckets.contains_key(key) && self.buckets.len() >= RATE_KEYS {
            self.buckets.retain(|_, b| refill(*b) < burst);
            if self.buckets.len() >= RATE_KEYS {
                self.buckets.clear();
            }
        }
        let bucket = self.buckets.entry(key.to_owned()).or_insert((burst, now));
        let tokens = refill(*bucket);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn tokens_verify_and_reject_forgeries() {
        let s = TokenSigner::new(b"secret", 1000);
        let alice: Username = "Alice".parse().unwrap();
        let key = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let (token, exp) = s.issue(&alice, key.as_bytes(), 5000);
        assert_eq!(exp, 6000);
        let bearer = s.verify(&token, 5500).unwrap();
        assert_eq!(bearer.user.as_str(), "Alice");
        assert_eq!(
            &bearer.key,
            key.as_bytes(),
            "the token carries the registered key"
        );
        let other_key = hex::encode(
            SigningKey::from_bytes(&[4u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        let swapped = token.replace(&hex::encode(key.as_bytes()), &other_key);
        assert!(s.verify(&swapped, 5500).is_err(), "the key is signed too");
        assert!(s.verify(&token, 6000).is_err(), "expired");
        let other = TokenSigner::new(b"other", 1000);
        assert!(other.verify(&token, 5500).is_err(), "other secret");
        let forged = token.replace("Alice", "Mallory");
        assert!(s.verify(&forged, 5500).is_err());
        let later = token.replace(".6000.", ".9999999.");
        assert!(s.verify(&later, 5500).is_err());
        assert!(s.verify("garbage", 0).is_err());
        assert!(s.verify("", 0).is_err());
        assert_ne!(s.fingerprint(), other.fingerprint());
    }

    #[test]
    fn content_signatures_verify_with_the_tokens_key() {
        let s = TokenSigner::new(b"secret", 1000);
        let signing = SigningKey::from_bytes(&[5u8; 32]);
        let (token, _) = s.issue(
            &"ann".parse().unwrap(),
            signing.verifying_key().as_bytes(),
            0,
        );
        let bearer = s.verify(&token, 1).unwrap();
        let msg = b"reddit-post-v1\nann\nrust\n-\nhi\n";
        let sig = hex::encode(signing.sign(msg).to_bytes());
        assert!(bearer.check_signature("post", msg, &sig).is_ok());
        let err = bearer
            .check_signature("post", b"reddit-post-v1\nann\nrust\n-\nhi!\n", &sig)
            .unwrap_err();
        assert_eq!(err.code, reddit_shared::error::ErrorCode::InvalidRequest);
        assert!(err.message.starts_with("signature:"), "{}", err.message);
        assert!(bearer.check_signature("post", msg, "zz").is_err());
    }

    #[test]
    fn the_verified_cache_still_checks_expiry_and_forgery() {
        let s = TokenSigner::new(b"secret", 1000);
        let alice: Username = "alice".parse().unwrap();
        let key = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let (token, _) = s.issue(&alice, key.as_bytes(), 5000);
        let mut cache = VerifiedTokens::default();
        assert_eq!(
            cache.verify(&s, &token, 5100).unwrap().user.as_str(),
            "alice"
        );
        assert_eq!(
            cache.verify(&s, &token, 5200).unwrap().user.as_str(),
            "alice"
        );
        assert!(
            cache.verify(&s, &token, 6000).is_err(),
            "expired, though cached"
        );
        let forged = token.replace("alice", "bob");
        assert!(cache.verify(&s, &forged, 5100).is_err());
        assert!(
            cache.verify(&s, &forged, 5100).is_err(),
            "failures are not cached"
        );
    }

    /// The cache holds at most [`VERIFIED_TOKENS`], forgetting the older half
    /// at a time, and keeps a token in use across the turnover.
    #[test]
    fn the_verified_cache_forgets_in_halves_and_keeps_tokens_in_use() {
        let s = TokenSigner::new(b"secret", 1_000_000);
        let key = SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let token = |i: usize| {
            let name: Username = format!("user{i}").parse().unwrap();
            s.issue(&name, key.as_bytes(), 5000).0
        };
        let mut cache = VerifiedTokens::default();
        let kept = token(0);
        cache.verify(&s, &kept, 5100).unwrap();
        for i in 1..=VERIFIED_TOKENS * 2 {
            assert_eq!(
                cache.verify(&s, &token(i), 5100).unwrap().user.as_str(),
                format!("user{i}")
            );
            if i % 1000 == 0 {
                // In use now and then: found, in either half.
                let before = cache.len();
                assert_eq!(
                    cache.verify(&s, &kept, 5100).unwrap().user.as_str(),
                    "user0"
                );
                assert!(cache.len() <= before + 1);
            }
            assert!(cache.len() <= VERIFIED_TOKENS + 1, "{} held", cache.len());
        }
        assert!(cache.len() >= VERIFIED_TOKENS / 2);
        assert!(
            cache.current.contains_key(&kept) || cache.previous.contains_key(&kept),
            "a token in use is never forgotten"
        );
        let forgotten = token(1);
        assert!(
            !cache.current.contains_key(&forgotten) && !cache.previous.contains_key(&forgotten)
        );
        assert_eq!(
            cache.verify(&s, &forgotten, 5100).unwrap().user.as_str(),
            "user1",
            "a forgotten token is verified again"
        );
        assert!(
            cache.verify(&s, &kept, 6_000_000).is_err(),
            "expired, though cached"
        );
    }

    #[test]
    fn challenges_are_single_use_and_bound_to_the_user() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key().to_bytes();
        let bob: Username = "bob".parse().unwrap();
        let carol: Username = "carol".parse().unwrap();
        let sign = |user: &str, ch: &str, k: &SigningKey| {
            hex::encode(k.sign(&login_message(user, ch)).to_bytes())
        };
        let mut c = Challenges::new(&TokenSigner::new(b"secret", 1000));
        let (ch, _) = c.issue("bob", Requester::Trusted, 0).unwrap();
        assert_eq!(ch.len(), 80);
        assert!(c
            .verify(&bob, &ch, &sign("bob", &ch, &key), &public, 10)
            .is_ok());
        // replaying the same login fails
        assert!(c
            .verify(&bob, &ch, &sign("bob", &ch, &key), &public, 10)
            .is_err());
        // another user's challenge is not bob's
        let (theirs, _) = c.issue("carol", Requester::Trusted, 0).unwrap();
        assert!(c
            .verify(&bob, &theirs, &sign("bob", &theirs, &key), &public, 10)
            .is_err());
        assert!(c
            .verify(&carol, &theirs, &sign("carol", &theirs, &key), &public, 10)
            .is_ok());
        // another cluster's challenge fails
        let (foreign, _) = Challenges::new(&TokenSigner::new(b"other", 1000))
            .issue("bob", Requester::Trusted, 0)
            .unwrap();
        assert!(c
            .verify(&bob, &foreign, &sign("bob", &foreign, &key), &public, 10)
            .is_err());
        // wrong key fails, and uses up only its own challenge
        let (a, _) = c.issue("bob", Requester::Trusted, 0).unwrap();
        let (b, _) = c.issue("bob", Requester::Trusted, 0).unwrap();
        let wrong = SigningKey::from_bytes(&[8u8; 32]);
        assert!(c
            .verify(&bob, &a, &sign("bob", &a, &wrong), &public, 10)
            .is_err());
        assert!(c
            .verify(&bob, &a, &sign("bob", &a, &key), &public, 10)
            .is_err());
        assert!(c
            .verify(&bob, &b, &sign("bob", &b, &key), &public, 10)
            .is_ok());
        // expired fails
        let (ch, _) = c.issue("bob", Requester::Trusted, 0).unwrap();
        assert!(c
            .verify(
                &bob,
                &ch,
                &sign("bob", &ch, &key),
                &public,
                CHALLENGE_TTL_MS + 1
            )
            .is_err());
        // garbage fails cleanly
        for junk in ["", "zz", &"0".repeat(80), &"f".repeat(200)] {
            assert!(c.verify(&bob, junk, "00", &public, 10).is_err());
        }
    }

    #[test]
    fn a_flood_of_foreign_challenges_does_not_limit_the_users_own_connection() {
        let mut c = Challenges::new(&TokenSigner::new(b"secret", 1000));
        let mut refused = 0;
        for i in 0..1000 {
            let conn = format!("_INBOX.attacker{i}");
            if let Err(e) = c.issue("bob", Requester::Foreign(&conn), 1000) {
                assert_eq!(e.code, reddit_shared::error::ErrorCode::TooManyRequests);
                refused += 1;
            }
        }
        assert!(
            refused > 900,
            "foreign requests for bob are limited per user"
        );
        for _ in 0..10 {
            assert!(c
                .issue("bob", Requester::Own("_INBOX_USER.bob.me"), 1000)
                .is_ok());
        }
        // one connection is limited on its own
        let mut ok = 0;
        for _ in 0..100 {
            ok += usize::from(
                c.issue("dave", Requester::Own("_INBOX_USER.dave.x"), 1000)
                    .is_ok(),
            );
        }
        assert_eq!(ok, CONNECTION_CHALLENGES.0 as usize);
        // and refills with time
        assert!(c
            .issue("dave", Requester::Own("_INBOX_USER.dave.x"), 1200)
            .is_ok());
        for _ in 0..10_000 {
            assert!(c.issue("eve", Requester::Trusted, 1000).is_ok());
        }
    }

    #[test]
    fn rate_limiter_stays_bounded() {
        let mut r = RateLimiter::default();
        for i in 0..(RATE_KEYS + 10) {
            r.allow(&i.to_string(), 0, 1.0, 1.0);
        }
        assert!(r.buckets.len() <= RATE_KEYS);
    }
}
