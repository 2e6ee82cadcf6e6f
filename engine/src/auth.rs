//! Tokens and login challenges.
//!
//! A token is `v1.<username>.<expires_ms>.<hmac>`: the HMAC-SHA256 of the first three
//! parts under the cluster's shared secret, in hex. Any shard verifies it locally.
//! Clients treat it as opaque.
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

type HmacSha256 = Hmac<Sha256>;

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
        match self.keyed.clone() {
            Some(mut mac) => {
                mac.update(data.as_bytes());
                mac.finalize().into_bytes().into()
            }
            None => [0; 32],
        }
    }

    fn mac(&self, data: &str) -> String {
        hex::encode(self.mac_bytes(data))
    }

    /// A token for `username` issued at `now` (ms), and its expiry.
    pub fn issue(&self, username: &Username, now: i64) -> (String, i64) {
        let expires = now.saturating_add(self.ttl_ms);
        let body = format!("v1.{}.{expires}", username.as_str());
        let mac = self.mac(&body);
        (format!("{body}.{mac}"), expires)
    }

    /// The user a token speaks for, if it is genuine and not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Username, WireError> {
        let forged = || {
            WireError::unauthenticated(
                "the token is not valid (malformed or not signed by this cluster)",
            )
        };
        let (body, mac) = token.rsplit_once('.').ok_or_else(forged)?;
        let mut parts = body.splitn(3, '.');
        let (Some("v1"), Some(name), Some(expires)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(forged());
        };
        let mut given = [0u8; 32];
        hex::decode_to_slice(mac, &mut given).map_err(|_| forged())?;
        if !constant_time_eq(&self.mac_bytes(body), &given) {
            return Err(forged());
        }
        let expires: i64 = expires.parse().map_err(|_| forged())?;
        if expires <= now {
            return Err(WireError::unauthenticated(
                "the token has expired; log in again",
            ));
        }
        Username::parse(name).map_err(|_| forged())
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
/// an HMAC each. Bounded: cleared when full. Expiry is checked on every use.
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    seen: HashMap<String, (Username, i64)>,
}

/// Most tokens [`VerifiedTokens`] holds.
pub const VERIFIED_TOKENS: usize = 65_536;

impl VerifiedTokens {
    /// The user `token` speaks for at `now`, verifying it with `signer` unless it was
    /// verified before.
    pub fn verify(
        &mut self,
        signer: &TokenSigner,
        token: &str,
        now: i64,
    ) -> Result<Username, WireError> {
        if let Some((user, expires)) = self.seen.get(token) {
            if *expires > now {
                return Ok(user.clone());
            }
            return Err(WireError::unauthenticated(
                "the token has expired; log in again",
            ));
        }
        let user = signer.verify(token, now)?;
        let expires = token
            .rsplit('.')
            .nth(1)
            .and_then(|e| e.parse::<i64>().ok())
            .unwrap_or(now);
        if self.seen.len() >= VERIFIED_TOKENS {
            self.seen.clear();
        }
        self.seen.insert(token.to_owned(), (user.clone(), expires));
        Ok(user)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Outstanding login challenges, one per user (a new one replaces the old).
#[derive(Debug, Default)]
pub struct Challenges {
    open: HashMap<String, (String, i64)>,
}

impl Challenges {
    /// A fresh challenge for `user_key`, and when it expires.
    pub fn issue(&mut self, user_key: &str, now: i64) -> (String, i64) {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let challenge = hex::encode(bytes);
        let expires = now + CHALLENGE_TTL_MS;
        if self.open.len() > 4096 {
            self.open.retain(|_, (_, exp)| *exp > now);
        }
        self.open
            .insert(user_key.to_owned(), (challenge.clone(), expires));
        (challenge, expires)
    }

    /// Consumes the challenge and checks the signature against `public_key`.
    pub fn verify(
        &mut self,
        user: &Username,
        challenge: &str,
        signature_hex: &str,
        public_key: &[u8; 32],
        now: i64,
    ) -> Result<(), WireError> {
        let fail = |why: &str| WireError::unauthenticated(format!("login failed: {why}"));
        let (expected, expires) = self
            .open
            .remove(user.key())
            .ok_or_else(|| fail("no open challenge for this user; ask auth.challenge first"))?;
        if expected != challenge {
            return Err(fail(
                "the challenge is not the one issued (each is accepted once)",
            ));
        }
        if expires <= now {
            return Err(fail("the challenge has expired"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn tokens_verify_and_reject_forgeries() {
        let s = TokenSigner::new(b"secret", 1000);
        let alice: Username = "Alice".parse().unwrap();
        let (token, exp) = s.issue(&alice, 5000);
        assert_eq!(exp, 6000);
        assert_eq!(s.verify(&token, 5500).unwrap().as_str(), "Alice");
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
    fn the_verified_cache_still_checks_expiry_and_forgery() {
        let s = TokenSigner::new(b"secret", 1000);
        let alice: Username = "alice".parse().unwrap();
        let (token, _) = s.issue(&alice, 5000);
        let mut cache = VerifiedTokens::default();
        assert_eq!(cache.verify(&s, &token, 5100).unwrap().as_str(), "alice");
        assert_eq!(cache.verify(&s, &token, 5200).unwrap().as_str(), "alice");
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

    #[test]
    fn challenges_are_single_use() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key().to_bytes();
        let bob: Username = "bob".parse().unwrap();
        let mut c = Challenges::default();
        let (ch, _) = c.issue("bob", 0);
        let sig = hex::encode(key.sign(&login_message("bob", &ch)).to_bytes());
        assert!(c.verify(&bob, &ch, &sig, &public, 10).is_ok());
        // replaying the same login fails
        assert!(c.verify(&bob, &ch, &sig, &public, 10).is_err());
        // wrong key fails
        let (ch, _) = c.issue("bob", 0);
        let wrong = SigningKey::from_bytes(&[8u8; 32]);
        let sig = hex::encode(wrong.sign(&login_message("bob", &ch)).to_bytes());
        assert!(c.verify(&bob, &ch, &sig, &public, 10).is_err());
        // expired fails
        let (ch, _) = c.issue("bob", 0);
        let sig = hex::encode(key.sign(&login_message("bob", &ch)).to_bytes());
        assert!(c
            .verify(&bob, &ch, &sig, &public, CHALLENGE_TTL_MS + 1)
            .is_err());
    }
}
