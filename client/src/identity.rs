//! A user's Ed25519 key pair, and its storage in the per-user config directory the
//! CLI uses: `<dir>/users/<username>.key` (the 32-byte secret as hex, mode 0600) and
//! `<dir>/users/<username>.token` (the cached login token).

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand::rngs::OsRng;
use reddit_shared::auth::{comment_message, login_message, post_message};
use reddit_shared::names::Username;
use reddit_shared::protocol::comment::CommentView;
use reddit_shared::protocol::post::PostView;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Whether `signature` (128 hex digits) is the signature of `message` by
/// `public_key` (64 hex digits, as `user.get` returns it).
pub fn verify_hex(public_key: &str, message: &[u8], signature: &str) -> bool {
    let mut key = [0u8; 32];
    let mut sig = [0u8; 64];
    if hex::decode_to_slice(public_key, &mut key).is_err()
        || hex::decode_to_slice(signature, &mut sig).is_err()
    {
        return false;
    }
    VerifyingKey::from_bytes(&key).is_ok_and(|k| {
        k.verify(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    })
}

/// The bytes the author of `post` signed (docs/protocol.md, "Signed posts and
/// comments").
pub fn signed_post(post: &PostView) -> Vec<u8> {
    post_message(
        &post.author.to_ascii_lowercase(),
        post.subreddit.key(),
        post.repost_of.as_ref(),
        &post.title,
        &post.body,
    )
}

/// The bytes the author of `comment` signed.
pub fn signed_comment(comment: &CommentView) -> Vec<u8> {
    comment_message(
        &comment.author.to_ascii_lowercase(),
        comment.subreddit.key(),
        &comment.post_id,
        comment.parent_id.as_ref(),
        &comment.body,
    )
}

/// A signing key for logging in, and for signing posts and comments.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random key pair.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut OsRng),
        }
    }

    /// A key pair from a 32-byte secret (deterministic; for simulations and tests).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The public key as 64 hex digits, as `user.register` takes it.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// The signature of a login challenge, as 128 hex digits.
    pub fn sign_login(&self, username: &Username, challenge: &str) -> String {
        hex::encode(
            self.key
                .sign(&login_message(username.key(), challenge))
                .to_bytes(),
        )
    }

    /// The signature of `message` as 128 hex digits: what `post.create` and
    /// `comment.create` take as `signature` (of [`signed_post`]'s or
    /// [`signed_comment`]'s bytes).
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }

    /// The public key in NATS nkey form (`U...`): a user connects to NATS with it.
    pub fn nkey_public(&self) -> String {
        match nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, self.key.to_bytes()) {
            Ok(kp) => kp.public_key(),
            Err(_) => String::new(),
        }
    }

    /// The Ed25519 signature of `data` (a NATS server nonce, when connecting).
    pub fn sign_raw(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).to_bytes().to_vec()
    }

    /// The secret as hex.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// Parses a secret written by [`secret_hex`](Self::secret_hex).
    pub fn from_secret_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self::from_secret(
            <[u8; 32]>::try_from(bytes.as_slice()).ok()?,
        ))
    }
}

/// A cached login token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedToken {
    /// The token.
    pub token: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
}

/// Where the CLI keeps keys and tokens.
#[derive(Clone, Debug)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// A store under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$REDDIT_CLIENT_DIR`, else the platform config dir's `reddit-client`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("REDDIT_CLIENT_DIR") {
            return PathBuf::from(d);
        }
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("reddit-client")
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, user: &Username, ext: &str) -> PathBuf {
        self.dir.join("users").join(format!("{}.{ext}", user.key()))
    }

    /// The stored key of `user`, if any.
    pub fn load_key(&self, user: &Username) -> std::io::Result<Option<Identity>> {
        match std::fs::read_to_string(self.path(user, "key")) {
            Ok(text) => Identity::from_secret_hex(&text).map(Some).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a key file", self.path(user, "key").display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `user`'s key (readable by the owner only).
    pub fn save_key(&self, user: &Username, id: &Identity) -> std::io::Result<PathBuf> {
        let path = self.path(user, "key");
        write_private(&path, id.secret_hex().as_bytes())?;
        Ok(path)
    }

    /// The cached token of `user`, if any.
    pub fn load_token(&self, user: &Username) -> Option<CachedToken> {
        let text = std::fs::read_to_string(self.path(user, "token")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Caches `user`'s token.
    pub fn save_token(&self, user: &Username, token: &CachedToken) -> std::io::Result<()> {
        let text = serde_json::to_string(token).map_err(std::io::Error::other)?;
        write_private(&self.path(user, "token"), text.as_bytes())
    }

    /// Forgets `user`'s cached token.
    pub fn clear_token(&self, user: &Username) {
        let _ = std::fs::remove_file(self.path(user, "token"));
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_store() {
        let dir = std::env::temp_dir().join(format!("reddit-keystore-{}", std::process::id()));
        let store = KeyStore::new(&dir);
        let alice: Username = "Alice".parse().unwrap();
        assert!(store.load_key(&alice).unwrap().is_none());
        let id = Identity::generate();
        store.save_key(&alice, &id).unwrap();
        let back = store.load_key(&alice).unwrap().unwrap();
        assert_eq!(back.public_key_hex(), id.public_key_hex());
        store
            .save_token(
                &alice,
                &CachedToken {
                    token: "t".into(),
                    expires_at: 5,
                },
            )
            .unwrap();
        assert_eq!(store.load_token(&alice).unwrap().token, "t");
        store.clear_token(&alice);
        assert!(store.load_token(&alice).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod signing_tests {
    use super::*;

    #[test]
    fn a_signed_post_verifies_and_a_changed_one_does_not() {
        let id = Identity::from_secret([1u8; 32]);
        let mut post = crate::fixtures::post();
        let sig = id.sign_hex(&signed_post(&post));
        assert!(verify_hex(&id.public_key_hex(), &signed_post(&post), &sig));
        post.body.push('!');
        assert!(!verify_hex(&id.public_key_hex(), &signed_post(&post), &sig));
        assert!(!verify_hex("zz", b"", &sig));
    }
}
