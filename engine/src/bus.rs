//! The actor's only way out: [`Bus`] publishes replies and pushes and makes
//! requests to other shards. In a running engine it is the shard's outgoing NATS
//! connection ([`NatsBus`]); unit tests put an in-memory bus in its place and drive
//! the actor without a server (`server::tests`).

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use reddit_shared::error::WireError;
use std::sync::Arc;
use std::time::Duration;

/// Where the shard's messages go.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `body` (with `headers`, if any) to `subject`. Failing is not an
    /// error the caller can act on (the connection is gone or closing): it is
    /// logged by the implementation.
    fn publish(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
    ) -> BoxFuture<'_, ()>;

    /// Sends a request to `subject` and waits at most `timeout` for its reply.
    /// `what` names the destination in the error ("request to shard 2").
    fn request(
        &self,
        what: String,
        subject: Subject,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, WireError>>;
}

/// A shared bus.
pub type SharedBus = Arc<dyn Bus>;

/// The bus of a running engine: one NATS connection.
#[derive(Clone, Debug)]
pub struct NatsBus(pub async_nats::Client);

impl NatsBus {
    /// `client` as a shared bus.
    pub fn shared(client: async_nats::Client) -> SharedBus {
        Arc::new(NatsBus(client))
    }
}

impl Bus for NatsBus {
    fn publish(
        &self,
        subject: Subject,
        headers: Option<HeaderMap>,
        body: Bytes,
    ) -> BoxFuture<'_, ()> {
        async move {
            let sent = match headers {
                Some(h) => self.0.publish_with_headers(subject, h, body).await,
                None => self.0.publish(subject, body).await,
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not publish");
            }
        }
        .boxed()
    }

    fn request(
        &self,
        what: String,
        subject: Subject,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, WireError>> {
        async move {
            let request = async_nats::Request::new()
                .payload(body)
                .timeout(Some(timeout));
            self.0
                .send_request(subject, request)
                .await
                .map_err(|e| reddit_shared::connect::request_failure(&what, &e).0)
        }
        .boxed()
    }
}
