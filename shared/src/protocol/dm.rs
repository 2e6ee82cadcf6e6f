//! Direct messages: `dm.send`, `dm.reply`, `dm.list`, `dm.read`, all authenticated
//! and routed by the caller's username. A DM is stored in the recipient's inbox and,
//! once delivered, in the sender's sent folder.

use super::{check_limit, check_text, Validate, MAX_BODY_CHARS, MAX_PAGE};
use crate::error::WireError;
use crate::ids::DmId;
use crate::names::Username;
use serde::{Deserialize, Serialize};

/// Most ids one `dm.read` accepts.
pub const MAX_MARK_READ: usize = 1_000;

/// `dm.send`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendDmRequest {
    /// The recipient.
    pub to: Username,
    /// 1–40,000 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 40000))]
    pub body: String,
}

impl Validate for SendDmRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_text("body", &self.body, 1, MAX_BODY_CHARS)
    }
}

/// `dm.reply`: answers a DM in the caller's inbox; goes to that DM's sender.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplyDmRequest {
    /// The DM being answered; it must be in the caller's inbox.
    pub dm_id: DmId,
    /// 1–40,000 characters.
    pub body: String,
}

impl Validate for ReplyDmRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_text("body", &self.body, 1, MAX_BODY_CHARS)
    }
}

/// Which folder to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DmFolder {
    /// Received messages.
    #[default]
    Inbox,
    /// Sent messages.
    Sent,
}

/// `dm.list`: newest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListDmsRequest {
    /// Inbox (default) or sent.
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub folder: DmFolder,
    /// Only unread messages (inbox only).
    #[serde(default, deserialize_with = "crate::protocol::nil_as_default")]
    pub unread_only: bool,
    /// Page size (default 25, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl Validate for ListDmsRequest {
    fn validate(&self) -> Result<(), WireError> {
        check_limit(self.limit, MAX_PAGE)
    }
}

/// One page of DMs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmPage {
    /// Newest first.
    pub messages: Vec<DmView>,
    /// Unread messages in the inbox in all.
    pub unread: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `dm.read`: mark inbox messages read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarkReadRequest {
    /// Messages in the caller's inbox (at most 1,000).
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub ids: Vec<DmId>,
}

impl Validate for MarkReadRequest {
    fn validate(&self) -> Result<(), WireError> {
        if self.ids.len() > MAX_MARK_READ {
            return Err(WireError::invalid(format!(
                "ids has {} entries; at most {MAX_MARK_READ} are allowed",
                self.ids.len()
            )));
        }
        Ok(())
    }
}

/// Reply to `dm.read`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarkReadReply {
    /// How many were unread and are now read.
    pub marked: u32,
    /// Unread messages left in the inbox.
    pub unread: u64,
}

/// A DM as the engine shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DmView {
    /// Its id.
    pub id: DmId,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// Text.
    pub body: String,
    /// The DM this answers, if it is a reply.
    #[serde(default)]
    pub in_reply_to: Option<DmId>,
    /// Send time (Unix milliseconds).
    pub created_at: i64,
    /// Whether the recipient has marked it read.
    pub read: bool,
}
