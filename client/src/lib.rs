//! Client side of the Reddit engine: the typed async [`RedditClient`] used by the
//! CLI, the simulator and the tests, the key store the CLI uses, and errors.

pub mod api;
pub mod bench;
pub mod error;
pub mod http;
pub mod identity;
pub mod sim;
pub mod table;

#[cfg(test)]
mod fixtures;

pub use api::{connect_nats, ClientOptions, EventStream, RedditClient, Role, Session};
pub use error::{ClientError, ErrorKind};
pub use identity::{Identity, KeyStore};
pub use reddit_shared as protocol;
pub use reddit_shared::protocol::rpc::{Route, Rpc};
