//! Who is talking and where: a connected name ([`Who`]: a guest or a logged-in
//! Reddit user, two namespaces) and a room ([`Room`]: a chat room or a
//! subreddit's room), parsed once from what a user typed.

use reddit_shared::names::{NameError, RoomName, SubredditName, Username};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A connected name. Guests are shown with a leading `~`, so a guest can never
/// pass for a registered user, whatever names the engine knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Who {
    /// Chose a name at the prompt.
    Guest(Username),
    /// Proved a registered Reddit user's name with a token (`/login`).
    User(Username),
}

impl Who {
    /// The name without its mark.
    pub fn name(&self) -> &Username {
        match self {
            Who::Guest(n) | Who::User(n) => n,
        }
    }

    /// `g.<name>` or `u.<name>` (lowercase): its key in the names bucket and on
    /// its private-message subject.
    pub fn key(&self) -> String {
        match self {
            Who::Guest(n) => format!("g.{}", n.key()),
            Who::User(n) => format!("u.{}", n.key()),
        }
    }

    /// Whether this is a guest.
    pub fn is_guest(&self) -> bool {
        matches!(self, Who::Guest(_))
    }

    /// Who `/msg TARGET` means: `~bob` is the guest bob, `bob` the user bob if
    /// one is connected, else the guest.
    pub fn targets(text: &str) -> Result<Vec<Who>, NameError> {
        match text.strip_prefix('~') {
            Some(guest) => Ok(vec![Who::Guest(guest.parse()?)]),
            None => {
                let n: Username = text.parse()?;
                Ok(vec![Who::User(n.clone()), Who::Guest(n)])
            }
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Guest(n) => write!(f, "~{n}"),
            Who::User(n) => write!(f, "{n}"),
        }
    }
}

/// A room: `#name` (made on demand by `/join`) or `r/name`, the room of a
/// subreddit, which also announces the subreddit's new posts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Room {
    /// A chat room.
    Chat(RoomName),
    /// A subreddit's room.
    Sub(SubredditName),
}

impl Room {
    /// `c.<name>` or `r.<name>` (lowercase): its key in the rooms bucket and
    /// its subject's last tokens.
    pub fn key(&self) -> String {
        match self {
            Room::Chat(n) => format!("c.{}", n.key()),
            Room::Sub(n) => format!("r.{}", n.key()),
        }
    }

    /// The room a key names (what [`key`](Self::key) made).
    pub fn from_key(key: &str) -> Option<Room> {
        match key.split_once('.')? {
            ("c", n) => RoomName::parse(n).ok().map(Room::Chat),
            ("r", n) => SubredditName::parse(n).ok().map(Room::Sub),
            _ => None,
        }
    }
}

impl std::str::FromStr for Room {
    type Err = NameError;

    /// `lobby`, `#lobby`, `r/rust` or `/r/rust`.
    fn from_str(s: &str) -> Result<Room, NameError> {
        let s = s.trim();
        let s = s.strip_prefix('/').unwrap_or(s);
        match s.strip_prefix("r/") {
            Some(sub) => Ok(Room::Sub(sub.parse()?)),
            None => Ok(Room::Chat(s.strip_prefix('#').unwrap_or(s).parse()?)),
        }
    }
}

impl fmt::Display for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Room::Chat(n) => write!(f, "#{n}"),
            Room::Sub(n) => write!(f, "r/{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_rooms() {
        let lobby: Room = "lobby".parse().unwrap();
        assert_eq!(
            (lobby.key(), lobby.to_string()),
            ("c.lobby".into(), "#lobby".into())
        );
        let r: Room = "#Rust-Talk".parse().unwrap();
        assert_eq!(r.key(), "c.rust-talk");
        assert_eq!(r.to_string(), "#Rust-Talk");
        let s: Room = "r/Rust".parse().unwrap();
        assert_eq!(s.key(), "r.rust");
        assert_eq!(s.to_string(), "r/Rust");
        assert_eq!(Room::from_key("r.rust"), Some(s));
        assert!("a.b".parse::<Room>().is_err());
        assert!("r/no-dash".parse::<Room>().is_err());
        assert!("#".parse::<Room>().is_err());
        let g = Who::Guest("Bob".parse().unwrap());
        assert_eq!((g.key(), g.to_string()), ("g.bob".into(), "~Bob".into()));
        let u = Who::User("Bob".parse().unwrap());
        assert_eq!((u.key(), u.to_string()), ("u.bob".into(), "Bob".into()));
        assert_eq!(Who::targets("~bob").unwrap(), vec![g.clone()]);
        assert_eq!(Who::targets("Bob").unwrap(), vec![u, g]);
    }
}
