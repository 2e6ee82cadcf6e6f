//! Accounts and login: `user.register`, `user.get`, `auth.challenge`, `auth.login`,
//! `auth.whoami`.

use super::{answer, parse, reply, Actor, Call, Handled};
use crate::auth::Requester;
use reddit_shared::error::WireError;
use reddit_shared::protocol::user::{
    parse_public_key, ChallengeReply, ChallengeRequest, GetUserRequest, LoginReply, LoginRequest,
    RegisterRequest, WhoAmIReply, WhoAmIRequest,
};
use reddit_shared::subject::ReplyTo;

impl Actor {
    /// `user.register`: a new account with its Ed25519 public key.
    pub(super) fn user_register(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: RegisterRequest| {
            let key = parse_public_key(&r.public_key)?;
            self.state.register(&r.username, key, c.now)
        })
    }

    /// `user.get`: the public profile (key, karma, joined subreddits).
    pub(super) fn user_get(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        answer(c.payload(), |r: GetUserRequest| {
            self.state.get_user(&r.username)
        })
    }

    /// `auth.challenge`: a stateless challenge; issuing is rate-limited per
    /// requesting connection, and per user for connections not the user's own.
    pub(super) fn auth_challenge(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: ChallengeRequest = parse(c.payload())?;
        let (_, name) = self.state.public_key(&r.username)?;
        let inbox = c.request.reply.as_ref().map_or("", |r| r.as_str());
        let who = match ReplyTo::classify(inbox) {
            Some(ReplyTo::Service | ReplyTo::Engine) => Requester::Trusted,
            Some(ReplyTo::User(k)) if k == name.key() => Requester::Own(ReplyTo::connection(inbox)),
            _ => Requester::Foreign(ReplyTo::connection(inbox)),
        };
        let (challenge, expires_at) = self.challenges.issue(name.key(), who, c.now)?;
        reply(&ChallengeReply {
            challenge,
            expires_at,
        })
    }

    /// `auth.login`: a signed challenge for a token.
    pub(super) fn auth_login(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let r: LoginRequest = parse(c.payload())?;
        let (key, name) = self.state.public_key(&r.username)?;
        self.challenges
            .verify(&name, &r.challenge, &r.signature, &key, c.now)?;
        let (token, expires_at) = self.ctx.tokens.issue(&name, &key, c.now);
        reply(&LoginReply {
            username: name.to_string(),
            token,
            expires_at,
        })
    }

    /// `auth.whoami`: whom the bearer token speaks for and until when (the
    /// token checks of every authenticated operation, nothing else).
    pub(super) fn auth_whoami(&mut self, c: &mut Call<'_>) -> Result<Handled, WireError> {
        let bearer = self.bearer(c.request, c.now)?;
        let _: WhoAmIRequest = parse(c.payload())?;
        reply(&WhoAmIReply {
            username: bearer.user.to_string(),
            expires_at: bearer.expires,
        })
    }
}
