//! Accounts and login: `user.register`, `auth.challenge`, `auth.login`, `user.get`.
//! Routed by the username.

use super::Validate;
use crate::error::WireError;
use crate::names::{SubredditName, Username};
use serde::{Deserialize, Serialize};

/// `user.register`: create an account with an Ed25519 public key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// The new user's name.
    pub username: Username,
    /// The 32-byte Ed25519 public key as 64 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub public_key: String,
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), WireError> {
        parse_public_key(&self.public_key).map(|_| ())
    }
}

/// Decodes a 64-hex-digit public key.
pub fn parse_public_key(hex_key: &str) -> Result<[u8; 32], WireError> {
    let bytes = hex::decode(hex_key).map_err(|_| {
        WireError::invalid("public_key must be 64 hex digits (a 32-byte Ed25519 key)")
    })?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| WireError::invalid("public_key must be 64 hex digits (a 32-byte Ed25519 key)"))
}

/// `auth.challenge`: ask for a one-time login challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeRequest {
    /// Who is logging in.
    pub username: Username,
}
impl Validate for ChallengeRequest {}

/// Reply to `auth.challenge`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeReply {
    /// 64 hex digits to sign with [`crate::auth::login_message`].
    pub challenge: String,
    /// When the challenge stops being accepted (Unix milliseconds).
    pub expires_at: i64,
}

/// `auth.login`: prove possession of the private key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// Who is logging in.
    pub username: Username,
    /// The challenge from `auth.challenge`.
    pub challenge: String,
    /// Ed25519 signature of [`crate::auth::login_message`], 128 hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{128}$"))]
    pub signature: String,
}
impl Validate for LoginRequest {}

/// Reply to `auth.login`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginReply {
    /// The user's name as registered.
    pub username: String,
    /// Bearer token for the `Authorization` header.
    pub token: String,
    /// When the token expires (Unix milliseconds).
    pub expires_at: i64,
}

/// `auth.whoami`: no fields; the bearer token is the question.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmIRequest {}
impl Validate for WhoAmIRequest {}

/// Reply to `auth.whoami`: whom the token speaks for, checked by the engine (a
/// front door proves a user's name with it without holding the token secret).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmIReply {
    /// The user's name as registered.
    pub username: String,
    /// When the token expires (Unix milliseconds).
    pub expires_at: i64,
}

/// `user.get`: a user's public profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GetUserRequest {
    /// Whose profile.
    pub username: Username,
}
impl Validate for GetUserRequest {}

/// A user as the engine shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// The name as registered.
    pub username: String,
    /// The Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Sum of the scores of the user's posts.
    pub post_karma: i64,
    /// Sum of the scores of the user's comments.
    pub comment_karma: i64,
    /// Subreddits the user has joined, sorted by name.
    pub joined: Vec<SubredditName>,
    /// Registration time (Unix milliseconds).
    pub created_at: i64,
}
