//! What chat gateways say to each other (JSON; see `docs/chat.md`): room events
//! on `chat.room.<room key>` (kept in the history stream), private messages on
//! `chat.user.<name key>`, and the values of the names and rooms buckets; and
//! how each is shown to a person, one line each.

use crate::who::Who;
use serde::{Deserialize, Serialize};
use time::format_description::OwnedFormatItem;

/// One thing that happened in a room.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoomEvent {
    /// Unique (a UUID v7): tells a live event from the same one in history.
    pub id: String,
    /// When (Unix ms, the sending gateway's clock).
    pub at: i64,
    /// The room as shown (`#lobby`, `r/rust`).
    pub room: String,
    /// What.
    #[serde(flatten)]
    pub what: What,
}

/// The kinds of [`RoomEvent`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum What {
    /// A line of chat.
    Say {
        /// Who said it.
        from: Who,
        /// What (one line, cleaned).
        text: String,
    },
    /// `/me text`.
    Me {
        /// Who.
        from: Who,
        /// The action.
        text: String,
    },
    /// Someone entered the room.
    Join {
        /// Who.
        who: Who,
    },
    /// Someone went to another room (`/join`, `/leave`).
    Leave {
        /// Who.
        who: Who,
    },
    /// Someone changed name (`/nick`, `/login`).
    Nick {
        /// The old name.
        old: Who,
        /// The new name.
        new: Who,
    },
    /// Someone left the chat.
    Quit {
        /// Who.
        who: Who,
        /// Why: `quit`, `disconnected`, `idle`, `too slow`, `gateway shutting down`.
        reason: String,
    },
}

/// A `/msg` between gateways: a request on `chat.user.<name key>`, answered
/// with an empty body once queued for the recipient.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Private {
    /// When (Unix ms).
    pub at: i64,
    /// Who sent it.
    pub from: Who,
    /// The text (one line, cleaned).
    pub text: String,
}

/// The value of a connected name in the names bucket (key [`Who::key`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NameEntry {
    /// Who.
    pub who: Who,
    /// The key of the room they are in.
    pub room: String,
    /// The gateway instance holding the connection.
    pub gateway: String,
    /// Connected since (Unix ms).
    pub since: i64,
}

/// The value of a room in the rooms bucket (key [`crate::who::Room::key`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoomEntry {
    /// The room as first written (`#Rust-Talk`).
    pub name: String,
    /// Who made it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at: i64,
}

/// How times are shown: a `time` format description (`[hour]:[minute]`), UTC;
/// empty: no timestamps.
#[derive(Clone, Debug)]
pub struct Clock {
    format: Option<OwnedFormatItem>,
}

impl Clock {
    /// No timestamps.
    pub fn none() -> Self {
        Self { format: None }
    }

    /// Parses a format description.
    pub fn new(description: &str) -> Result<Self, time::error::InvalidFormatDescription> {
        if description.is_empty() {
            return Ok(Self { format: None });
        }
        Ok(Self {
            format: Some(time::format_description::parse_owned::<2>(description)?),
        })
    }

    /// `[12:03] ` for `at` (Unix ms), or nothing.
    pub fn stamp(&self, at: i64) -> String {
        let Some(format) = &self.format else {
            return String::new();
        };
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        match t.format(format) {
            Ok(s) => format!("[{s}] "),
            Err(_) => String::new(),
        }
    }
}

impl RoomEvent {
    /// The line a person sees.
    pub fn render(&self, clock: &Clock) -> String {
        let t = clock.stamp(self.at);
        let room = &self.room;
        match &self.what {
            What::Say { from, text } => format!("{t}<{from}> {text}"),
            What::Me { from, text } => format!("{t}* {from} {text}"),
            What::Join { who } => format!("{t}-- {who} joined {room}"),
            What::Leave { who } => format!("{t}-- {who} left {room}"),
            What::Nick { old, new } => format!("{t}-- {old} is now known as {new}"),
            What::Quit { who, reason } => format!("{t}-- {who} quit ({reason})"),
        }
    }
}

impl Private {
    /// The line its recipient sees.
    pub fn render(&self, clock: &Clock) -> String {
        format!("{}*{}* {}", clock.stamp(self.at), self.from, self.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn renders_lines() {
        let clock = Clock::new("[hour]:[minute]").unwrap();
        let bob = Who::Guest("bob".parse().unwrap());
        let alice = Who::User("alice".parse().unwrap());
        let ev = |what| RoomEvent {
            id: "x".into(),
            at: 3_600_000 + 5 * 60_000,
            room: "#lobby".into(),
            what,
        };
        let say = ev(What::Say {
            from: bob.clone(),
            text: "hi".into(),
        });
        assert_eq!(say.render(&clock), "[01:05] <~bob> hi");
        assert_eq!(
            ev(What::Nick {
                old: bob.clone(),
                new: alice.clone()
            })
            .render(&clock),
            "[01:05] -- ~bob is now known as alice"
        );
        assert_eq!(
            ev(What::Join { who: alice }).render(&Clock::new("").unwrap()),
            "-- alice joined #lobby"
        );
        let json = serde_json::to_string(&say).unwrap();
        assert!(json.contains(r#""type":"say""#), "{json}");
        assert_eq!(serde_json::from_str::<RoomEvent>(&json).unwrap(), say);
        assert!(Clock::new("[nonsense").is_err());
    }
}
