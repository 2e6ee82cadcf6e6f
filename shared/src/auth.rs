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

/// The bytes an author signs for a post (`post.create`'s optional `signature`):
///
/// ```text
/// reddit-post-v1\n<author key>\n<subreddit key>\n<repost>\n<title>\n<body>
/// ```
///
/// Keys are lowercase names; `<repost>` is `-`, or for a repost the original's
/// `<subreddit key>/<post id>` (the id hyphenated, lowercase). Titles are one line,
/// and the body is last, so the bytes are unambiguous.
pub fn post_message(
    author_key: &str,
    subreddit_key: &str,
    repost_of: Option<&crate::protocol::PostRef>,
    title: &str,
    body: &str,
) -> Vec<u8> {
    let repost = repost_of.map_or_else(
        || "-".to_owned(),
        |r| format!("{}/{}", r.subreddit.key(), r.id.0.hyphenated()),
    );
    format!("reddit-post-v1\n{author_key}\n{subreddit_key}\n{repost}\n{title}\n{body}").into_bytes()
}

/// The bytes an author signs for a comment (`comment.create`'s optional
/// `signature`):
///
/// ```text
/// reddit-comment-v1\n<author key>\n<subreddit key>\n<post id>\n<parent id or ->\n<body>
/// ```
pub fn comment_message(
    author_key: &str,
    subreddit_key: &str,
    post_id: &crate::ids::PostId,
    parent_id: Option<&crate::ids::CommentId>,
    body: &str,
) -> Vec<u8> {
    let parent = parent_id.map_or_else(|| "-".to_owned(), |p| p.0.hyphenated().to_string());
    format!(
        "reddit-comment-v1\n{author_key}\n{subreddit_key}\n{}\n{parent}\n{body}",
        post_id.0.hyphenated()
    )
    .into_bytes()
}

/// The username a token names, without checking it (only a shard can): for a
/// gateway that must route a bearer's requests to the user's shard before the
/// shard verifies the token. Clients otherwise treat tokens as opaque.
pub fn token_username(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next()) {
        (Some("v2"), Some(name)) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The expiry (Unix ms) a token names, unchecked (see [`token_username`]).
pub fn token_expiry(token: &str) -> Option<i64> {
    token.split('.').nth(2)?.parse().ok()
}

/// The header value for `token`: `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    // Built by hand: this runs for every request a client sends, and the
    // formatting machinery showed in the simulator's profile.
    let mut value = String::with_capacity(7 + token.len());
    value.push_str("Bearer ");
    value.push_str(token);
    value
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
    fn signed_content_bytes_are_fixed() {
        let id = crate::ids::PostId(uuid::Uuid::from_u128(1));
        assert_eq!(
            post_message("ann", "rust", None, "Hi", "a\nb"),
            b"reddit-post-v1\nann\nrust\n-\nHi\na\nb"
        );
        let orig = crate::protocol::PostRef {
            subreddit: "Go_lang".parse().unwrap(),
            id,
        };
        assert_eq!(
            String::from_utf8(post_message("ann", "rust", Some(&orig), "t", "")).unwrap(),
            "reddit-post-v1\nann\nrust\ngo_lang/00000000-0000-0000-0000-000000000001\nt\n"
        );
        assert_eq!(
            String::from_utf8(comment_message("bob", "rust", &id, None, "yes")).unwrap(),
            "reddit-comment-v1\nbob\nrust\n00000000-0000-0000-0000-000000000001\n-\nyes"
        );
    }

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
