//! The NATS auth callout: per-user identity on the bus.
//!
//! nats-server sends every connection that is not one of the static roles of
//! `nats.conf` (`engine`, `engine-serve`, `service`) to `$SYS.REQ.USER.AUTH` as a
//! signed authorization-request JWT. Every shard answers in the queue group
//! `reddit-auth` with a signed authorization-response JWT holding a user JWT with the
//! connection's permissions:
//!
//! - **no credentials**: the `anonymous` role, which may only discover the shards
//!   and register (`reddit.shard.*.user.register`), with replies on `_INBOX.>`;
//! - **a username (`user`, or else the connection `name`) and an nkey with its
//!   signature of the server's nonce**: the user role, if the nkey is the Ed25519
//!   key the user registered (asked of the user's shard). It may publish the public operations, and subscribe only to its own
//!   inbox `_INBOX_USER.<user>.>`, its own pushes `reddit.events.user.<user>` and
//!   the public `reddit.events.sub.>`;
//! - anything else (a wrong key, a password, a token, a JWT): refused.
//!
//! The issuer key is an NATS account key derived from the cluster secret
//! ([`Issuer::from_secret`]); its public half goes in `nats.conf`
//! (`auth_callout.issuer`), printed by `reddit-engine issuer`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reddit_shared::names::Username;
use reddit_shared::subject;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512_256};

/// Why a callout request could not be read or answered.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    /// The request is not a JWT signed by the server it names.
    #[error("the authorization request is not a valid server-signed JWT: {0}")]
    BadRequest(String),
    /// Signing the response failed.
    #[error("could not sign the authorization response: {0}")]
    Sign(String),
}

/// The account key that signs the callout's answers.
pub struct Issuer {
    key: nkeys::KeyPair,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// The issuer every shard of a cluster derives from the shared `secret`:
    /// an account nkey seeded with HMAC-SHA256(secret, "reddit-nats-callout-issuer-v1").
    pub fn from_secret(secret: &[u8]) -> Result<Self, CalloutError> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret)
            .map_err(|e| CalloutError::Sign(e.to_string()))?;
        mac.update(b"reddit-nats-callout-issuer-v1");
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        let key = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::Account, seed)
            .map_err(|e| CalloutError::Sign(e.to_string()))?;
        Ok(Self { key })
    }

    /// The public account key (`A...`) that `nats.conf` names as `auth_callout.issuer`.
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }
}

/// NATS publish/subscribe allow and deny lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Subjects allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Subjects denied (wins over allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// The permissions a connection gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// What it may publish.
    pub publish: Permission,
    /// What it may subscribe to.
    pub subscribe: Permission,
}

fn discovery() -> Vec<String> {
    vec![
        subject::service_ping(),
        subject::service_info(),
        subject::service_stats(),
    ]
}

/// The anonymous role: discover the shards and register, nothing else.
pub fn anonymous_permissions() -> Permissions {
    let mut publish = discovery();
    publish.push(format!(
        "{}.*.{}",
        subject::REQUEST_PREFIX,
        reddit_shared::protocol::Op::UserRegister.as_str()
    ));
    Permissions {
        publish: Permission {
            allow: publish,
            deny: Vec::new(),
        },
        subscribe: Permission {
            allow: vec![format!("{}.>", subject::ANON_INBOX)],
            deny: Vec::new(),
        },
    }
}

/// The role of user `user`: the public operations, and only its own inbox and pushes.
pub fn user_permissions(user: &Username) -> Permissions {
    let mut publish = discovery();
    publish.push(format!("{}.>", subject::REQUEST_PREFIX));
    Permissions {
        publish: Permission {
            allow: publish,
            deny: vec![
                subject::all_internal(),
                format!(
                    "{}.*.{}",
                    subject::REQUEST_PREFIX,
                    reddit_shared::protocol::Op::AuditRun.as_str()
                ),
            ],
        },
        subscribe: Permission {
            allow: vec![
                format!("{}.>", subject::user_inbox_prefix(user.key())),
                subject::user_events(user.key()),
                subject::subreddit_events("*"),
            ],
            deny: Vec::new(),
        },
    }
}

#[derive(Deserialize, Default)]
struct ServerId {
    #[serde(default)]
    id: String,
}

#[derive(Deserialize, Default)]
struct ClientInfo {
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    host: String,
}

#[derive(Deserialize, Default)]
struct ConnectOpts {
    #[serde(default)]
    jwt: String,
    #[serde(default)]
    nkey: String,
    #[serde(default)]
    sig: String,
    #[serde(default)]
    auth_token: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    pass: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RequestNats {
    #[serde(default)]
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    client_info: ClientInfo,
    #[serde(default)]
    connect_opts: ConnectOpts,
}

#[derive(Deserialize)]
struct RequestClaims {
    iss: String,
    nats: RequestNats,
}

/// What a connecting client presented, read from a verified request.
#[derive(Debug)]
pub struct AuthRequest {
    /// The server asking (the audience of the answer).
    pub server_id: String,
    /// The user key the server minted for this connection (the answer's subject).
    pub user_nkey: String,
    /// The client's address, for logs.
    pub host: String,
    /// Who the client claims to be.
    pub claim: Claim,
}

/// Who a connecting client claims to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// No credentials at all.
    Anonymous,
    /// A username and a valid signature of the server nonce by `key`; still to be
    /// checked against the user's registered key.
    Key {
        /// The claimed user.
        username: Username,
        /// The raw Ed25519 public key that signed the nonce.
        key: [u8; 32],
    },
    /// Refused before any lookup, with the reason shown to the client.
    Refused(String),
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose as g;
    g::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| g::STANDARD.decode(text))
        .ok()
}

/// Reads and verifies an authorization request: a JWT signed by the server key it
/// names as issuer.
pub fn decode_request(jwt: &[u8]) -> Result<AuthRequest, CalloutError> {
    let bad = |why: &str| CalloutError::BadRequest(why.to_owned());
    let text = std::str::from_utf8(jwt).map_err(|_| bad("not UTF-8"))?;
    let mut parts = text.trim().split('.');
    let (Some(header), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three dot-separated parts"));
    };
    let claims: RequestClaims = serde_json::from_slice(&unb64(body).ok_or_else(|| bad("body"))?)
        .map_err(|e| CalloutError::BadRequest(e.to_string()))?;
    let signature = unb64(sig).ok_or_else(|| bad("signature encoding"))?;
    let server = nkeys::KeyPair::from_public_key(&claims.iss)
        .map_err(|_| bad("the issuer is not a public nkey"))?;
    if server.key_pair_type() != nkeys::KeyPairType::Server {
        return Err(bad("the issuer is not a server key"));
    }
    server
        .verify(format!("{header}.{body}").as_bytes(), &signature)
        .map_err(|_| bad("the signature does not verify"))?;
    let nats = claims.nats;
    if !nats.server_id.id.is_empty() && nats.server_id.id != claims.iss {
        return Err(bad("signed by a key other than the server it names"));
    }
    let claim = claim_of(&nats.connect_opts, &nats.client_info.nonce);
    Ok(AuthRequest {
        server_id: claims.iss,
        user_nkey: nats.user_nkey,
        host: nats.client_info.host,
        claim,
    })
}

fn claim_of(o: &ConnectOpts, nonce: &str) -> Claim {
    let refused = |why: &str| Claim::Refused(why.to_owned());
    if !o.jwt.is_empty() || !o.auth_token.is_empty() || !o.pass.is_empty() {
        return refused("unknown credentials: connect as a user with your username and registered Ed25519 key (nkey), or with no credentials to register");
    }
    if o.user.is_empty() && o.nkey.is_empty() {
        return Claim::Anonymous;
    }
    // The claimed username is only where to look the key up; the proof is the
    // signature. It is `user`, or the connection `name` for client libraries that
    // send no `user` with an nkey (nats.py).
    let claimed = if o.user.is_empty() { &o.name } else { &o.user };
    let Ok(username) = Username::parse(claimed) else {
        return refused("a user connection needs its username (as user, or as the connection name) with its nkey");
    };
    if o.nkey.is_empty() || o.sig.is_empty() || nonce.is_empty() {
        return refused(
            "a user connection must sign the server nonce with the registered key (nkey)",
        );
    }
    let Ok(key) = nkeys::KeyPair::from_public_key(&o.nkey) else {
        return refused("the nkey is not a valid public user key");
    };
    if key.key_pair_type() != nkeys::KeyPairType::User {
        return refused("the nkey is not a user key (U...)");
    }
    let Some(sig) = unb64(&o.sig) else {
        return refused("the nonce signature is not base64");
    };
    if key.verify(nonce.as_bytes(), &sig).is_err() {
        return refused("the nonce signature does not match the nkey");
    }
    match nkeys::from_public_key(&o.nkey) {
        Ok((_, raw)) => Claim::Key { username, key: raw },
        Err(_) => refused("the nkey is not a valid public user key"),
    }
}

/// The nkey (`U...`) form of a raw Ed25519 public key (for tests and tools; nkeys
/// has no encoder for a bare public key): base32(prefix, key, crc16), as nkeys does.
pub fn user_nkey(raw: &[u8; 32]) -> Result<String, CalloutError> {
    let mut data = Vec::with_capacity(35);
    data.push(20u8 << 3); // PrefixByteUser
    data.extend_from_slice(raw);
    let crc = crc16(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    Ok(data_encoding::BASE32_NOPAD.encode(&data))
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[derive(Serialize)]
struct Jwt<'a, T: Serialize> {
    #[serde(skip_serializing_if = "str::is_empty")]
    aud: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    jti: String,
    iat: i64,
    iss: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    sub: &'a str,
    nats: T,
}

#[derive(Serialize)]
struct UserNats<'a> {
    #[serde(rename = "pub")]
    publish: &'a Permission,
    #[serde(rename = "sub")]
    subscribe: &'a Permission,
    subs: i64,
    data: i64,
    payload: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

#[derive(Serialize)]
struct ResponseNats<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    jwt: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
}

impl Issuer {
    fn sign<T: Serialize>(&self, mut claims: Jwt<'_, T>) -> Result<String, CalloutError> {
        let err = |e: &dyn std::fmt::Display| CalloutError::Sign(e.to_string());
        claims.iss = self.key.public_key();
        claims.iat = reddit_shared::now_millis() / 1000;
        claims.jti = String::new();
        let unhashed = serde_json::to_vec(&claims).map_err(|e| err(&e))?;
        claims.jti = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(&unhashed));
        let body = serde_json::to_vec(&claims).map_err(|e| err(&e))?;
        let head = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let signed = format!("{head}.{}", b64(&body));
        let sig = self.key.sign(signed.as_bytes()).map_err(|e| err(&e))?;
        Ok(format!("{signed}.{}", b64(&sig)))
    }

    /// The answer to `request`: a user JWT named `name` with `perms`, or the refusal
    /// `error`.
    pub fn respond(
        &self,
        request: &AuthRequest,
        outcome: Result<(&str, &Permissions), &str>,
    ) -> Result<String, CalloutError> {
        let user_jwt = match outcome {
            Ok((name, perms)) => self.sign(Jwt {
                // Config mode: the audience is the account to place the user in.
                aud: "$G",
                jti: String::new(),
                iat: 0,
                iss: String::new(),
                name,
                sub: &request.user_nkey,
                nats: UserNats {
                    publish: &perms.publish,
                    subscribe: &perms.subscribe,
                    subs: -1,
                    data: -1,
                    payload: -1,
                    kind: "user",
                    version: 2,
                },
            })?,
            Err(_) => String::new(),
        };
        self.sign(Jwt {
            aud: &request.server_id,
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            name: "",
            sub: &request.user_nkey,
            nats: ResponseNats {
                jwt: &user_jwt,
                error: outcome.err().unwrap_or(""),
                kind: "authorization_response",
                version: 2,
            },
        })
    }
}

/// Most callout requests handled at once by one shard.
const MAX_CONCURRENT: usize = 256;

/// Answers `$SYS.REQ.USER.AUTH` (queue group `reddit-auth`) on `client` until
/// `stop` changes: anonymous connections get [`anonymous_permissions`], users whose
/// nkey is their registered key get [`user_permissions`], everyone else a refusal.
pub async fn serve(
    client: async_nats::Client,
    issuer: std::sync::Arc<Issuer>,
    peers: crate::cross_shard::Peers,
    shards: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let mut sub = match client
        .queue_subscribe(
            subject::AUTH_CALLOUT,
            subject::AUTH_CALLOUT_QUEUE.to_owned(),
        )
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "cannot answer the NATS auth callout; users cannot connect through this shard");
            return;
        }
    };
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let msg = tokio::select! {
            msg = sub.next() => msg,
            _ = stop.changed() => break,
        };
        let Some(msg) = msg else { break };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("auth callout overloaded; a connection attempt is not answered");
            continue;
        };
        let (client, issuer, peers) = (client.clone(), issuer.clone(), peers.clone());
        tokio::spawn(async move {
            match answer(&issuer, &peers, shards, &msg.payload).await {
                Ok(jwt) => {
                    if let Err(e) = client.publish(reply, jwt.into()).await {
                        tracing::debug!(error = %e, "could not answer an auth callout");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "auth callout request refused"),
            }
            drop(permit);
        });
    }
    let _ = sub.unsubscribe().await;
}

/// The signed answer to one raw callout request.
async fn answer(
    issuer: &Issuer,
    peers: &crate::cross_shard::Peers,
    shards: u32,
    raw: &[u8],
) -> Result<String, CalloutError> {
    let request = decode_request(raw)?;
    let outcome: Result<(String, Permissions), String> = match &request.claim {
        Claim::Anonymous => Ok(("anonymous".to_owned(), anonymous_permissions())),
        Claim::Refused(why) => Err(why.clone()),
        Claim::Key { username, key } => {
            let shard = reddit_shared::routing::shard_for(username.key(), shards);
            let get = reddit_shared::protocol::user::GetUserRequest {
                username: username.clone(),
            };
            let found = peers.call(shard, &get).await;
            match found {
                Ok(user) if hex::decode(&user.public_key).ok().as_deref() == Some(&key[..]) => {
                    Ok((user.username, user_permissions(username)))
                }
                Ok(_) => Err(format!("{username} is registered with another key")),
                Err(e) if e.code == reddit_shared::error::ErrorCode::NotFound => {
                    Err(format!("no user named {username}; register first"))
                }
                Err(e) => Err(format!("cannot check the key now: {}", e.message)),
            }
        }
    };
    match &outcome {
        Ok((name, _)) => {
            tracing::debug!(user = %name, host = %request.host, "connection authorized")
        }
        Err(why) => tracing::info!(host = %request.host, reason = %why, "connection refused"),
    }
    issuer.respond(
        &request,
        outcome
            .as_ref()
            .map(|(n, p)| (n.as_str(), p))
            .map_err(String::as_str),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_nkey_matches_nkeys_encoding() {
        let kp = nkeys::KeyPair::new_user();
        let (_, raw) = nkeys::from_public_key(&kp.public_key()).unwrap();
        assert_eq!(user_nkey(&raw).unwrap(), kp.public_key());
    }

    #[test]
    fn issuer_is_derived_from_the_secret() {
        let a = Issuer::from_secret(b"one").unwrap();
        let b = Issuer::from_secret(b"one").unwrap();
        let c = Issuer::from_secret(b"two").unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
        assert!(a.public_key().starts_with('A'));
    }

    fn request(server: &nkeys::KeyPair, opts: serde_json::Value, nonce: &str) -> Vec<u8> {
        let claims = serde_json::json!({
            "iss": server.public_key(),
            "sub": "AX",
            "nats": {
                "server_id": {"id": server.public_key(), "name": "s", "host": "h"},
                "user_nkey": "UABC",
                "client_info": {"nonce": nonce, "host": "127.0.0.1"},
                "connect_opts": opts,
                "type": "authorization_request",
                "version": 2
            }
        });
        let head = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let body = b64(&serde_json::to_vec(&claims).unwrap());
        let signed = format!("{head}.{body}");
        let sig = server.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64(&sig)).into_bytes()
    }

    #[test]
    fn requests_are_verified_and_claims_read() {
        let server = nkeys::KeyPair::new_server();
        let r = decode_request(&request(&server, serde_json::json!({}), "")).unwrap();
        assert_eq!(r.claim, Claim::Anonymous);
        assert_eq!(r.server_id, server.public_key());

        let user = nkeys::KeyPair::new_user();
        let nonce = "n0nce";
        let sig = b64(&user.sign(nonce.as_bytes()).unwrap());
        let opts = serde_json::json!({"user": "Alice", "nkey": user.public_key(), "sig": sig});
        let r = decode_request(&request(&server, opts.clone(), nonce)).unwrap();
        let (_, raw) = nkeys::from_public_key(&user.public_key()).unwrap();
        assert!(
            matches!(r.claim, Claim::Key { ref username, key } if username.key() == "alice" && key == raw)
        );
        // the username may come as the connection name instead
        let by_name = serde_json::json!({"name": "alice", "nkey": user.public_key(), "sig": sig});
        let r = decode_request(&request(&server, by_name, nonce)).unwrap();
        assert!(matches!(r.claim, Claim::Key { ref username, .. } if username.key() == "alice"));
        // the same signature over another nonce (a replay) is refused
        let r = decode_request(&request(&server, opts, "other")).unwrap();
        assert!(matches!(r.claim, Claim::Refused(_)));
        // passwords and tokens are refused
        for opts in [
            serde_json::json!({"user": "engine", "pass": "x"}),
            serde_json::json!({"auth_token": "t"}),
        ] {
            let r = decode_request(&request(&server, opts, nonce)).unwrap();
            assert!(matches!(r.claim, Claim::Refused(_)));
        }
        // tampered or unsigned requests are refused
        let mut bytes = request(&server, serde_json::json!({}), "");
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        assert!(decode_request(&bytes).is_err());
        assert!(decode_request(b"not a jwt").is_err());
        let other = nkeys::KeyPair::new_user();
        assert!(decode_request(&request(&other, serde_json::json!({}), "")).is_err());
    }

    #[test]
    fn responses_are_signed_by_the_issuer() {
        let issuer = Issuer::from_secret(b"s").unwrap();
        let req = AuthRequest {
            server_id: "NSERVER".into(),
            user_nkey: "UUSER".into(),
            host: String::new(),
            claim: Claim::Anonymous,
        };
        let jwt = issuer
            .respond(&req, Ok(("anonymous", &anonymous_permissions())))
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let key = nkeys::KeyPair::from_public_key(&issuer.public_key()).unwrap();
        key.verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &unb64(parts[2]).unwrap(),
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&unb64(parts[1]).unwrap()).unwrap();
        assert_eq!(body["aud"], "NSERVER");
        assert_eq!(body["sub"], "UUSER");
        assert_eq!(body["nats"]["type"], "authorization_response");
        let refusal = issuer.respond(&req, Err("no")).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&unb64(refusal.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(body["nats"]["error"], "no");
        assert!(body["nats"].get("jwt").is_none());
    }
}
