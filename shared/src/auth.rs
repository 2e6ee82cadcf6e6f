//! Login by key (contract). A user registers an Ed25519 public key. To log in, the
//! client asks its shard for a one-time challenge (`auth.challenge`), signs
//! [`login_message`] with its private key and sends the signature (`auth.login`). No
//! secret crosses the wire, and a captured login cannot be replayed: each challenge is
//! accepted once and expires. The engine answers with an opaque bearer token that
//! requests carry as the NATS header `Authorization: Bearer <token>`.

/// The NATS header that carries the token.
pub const AUTH_HEADER: &str = "Authorization";

/// Lifetime of a login challenge, in milliseconds.
pub const CHALLENGE_TTL_MS: i64 = 60_000;

/// The bytes a client signs to log in: `reddit-login-v1\n<username key>\n<challenge>`,
/// where the username key is the lowercase username and `challenge` the hex string
/// the engine issued.
pub fn login_message(username_key: &str, challenge: &str) -> Vec<u8> {
    format!("reddit-login-v1\n{username_key}\n{challenge}").into_bytes()
}

/// The header value for `token`: `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token inside a header value `Bearer <token>` (scheme case-insensitive).
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_round_trip() {
        assert_eq!(parse_bearer(&bearer("abc.def")), Some("abc.def"));
        assert_eq!(parse_bearer("bearer  xyz "), Some("xyz"));
        assert_eq!(parse_bearer("Basic xyz"), None);
        assert_eq!(parse_bearer("Bearer"), None);
        assert_eq!(parse_bearer("Bearer   "), None);
    }

    #[test]
    fn message_is_stable() {
        assert_eq!(
            login_message("bob", "00ff"),
            b"reddit-login-v1\nbob\n00ff".to_vec()
        );
    }
}
