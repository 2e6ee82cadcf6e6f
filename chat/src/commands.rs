//! What a line typed by a user asks for: one enum of commands, parsed from text
//! (`/join rust`, `/msg bob hi`, or plain chat), and the help text.

/// One typed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Plain text for the room (a line starting `//` says it with one `/`).
    Say(&'a str),
    /// `/help`.
    Help,
    /// `/nick NAME`.
    Nick(&'a str),
    /// `/login TOKEN`.
    Login(&'a str),
    /// `/join ROOM`.
    Join(&'a str),
    /// `/leave`: back to the default room.
    Leave,
    /// `/rooms`.
    Rooms,
    /// `/who [ROOM]`.
    Who(Option<&'a str>),
    /// `/msg USER text`.
    Msg(&'a str, &'a str),
    /// `/me text`.
    Me(&'a str),
    /// `/history [N]`.
    History(Option<&'a str>),
    /// `/stats`.
    Stats,
    /// `/quit [reason]`.
    Quit(Option<&'a str>),
    /// A command that needs an argument it did not get (its name).
    Missing(&'static str),
    /// `/something` else.
    Unknown(&'a str),
    /// An empty line.
    Empty,
}

/// The help text, one line each.
pub const HELP: &[&str] = &[
    "-- Commands:",
    "--   /help               this list",
    "--   /nick NAME          change your name",
    "--   /login TOKEN        prove you are a Reddit user (reddit-client --user NAME token)",
    "--   /join ROOM          go to #ROOM (made if new) or r/SUBREDDIT (shows its new posts)",
    "--   /leave              back to the default room",
    "--   /rooms              rooms and how many are in each, on every gateway",
    "--   /who [ROOM]         who is in this room (or ROOM), on every gateway",
    "--   /msg USER text      a private message (~USER for a guest)",
    "--   /me text            an action: * you text",
    "--   /history [N]        the last N lines of this room (default 20)",
    "--   /stats              this gateway's and the whole chat's numbers",
    "--   /quit [reason]      leave",
    "-- Anything else is said to the room; start a line with // to say /text.",
];

/// Parses one cleaned line.
pub fn parse(line: &str) -> Command<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Command::Empty;
    }
    if line.starts_with("//") {
        return Command::Say(&line[1..]);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line);
    };
    let (name, arg) = match rest.split_once(' ') {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let arg_opt = (!arg.is_empty()).then_some(arg);
    match name.to_ascii_lowercase().as_str() {
        "help" | "?" => Command::Help,
        "nick" => arg_opt.map_or(Command::Missing("/nick NAME"), Command::Nick),
        "login" => arg_opt.map_or(Command::Missing("/login TOKEN"), Command::Login),
        "join" => arg_opt.map_or(Command::Missing("/join ROOM"), Command::Join),
        "leave" | "part" => Command::Leave,
        "rooms" | "list" => Command::Rooms,
        "who" | "names" => Command::Who(arg_opt),
        "msg" | "tell" => match arg.split_once(' ') {
            Some((to, text)) if !text.trim().is_empty() => Command::Msg(to, text.trim()),
            _ => Command::Missing("/msg USER text"),
        },
        "me" => arg_opt.map_or(Command::Missing("/me text"), Command::Me),
        "history" => Command::History(arg_opt),
        "stats" => Command::Stats,
        "quit" | "exit" | "bye" => Command::Quit(arg_opt),
        _ => Command::Unknown(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("hello"), Command::Say("hello"));
        assert_eq!(parse("//slash"), Command::Say("/slash"));
        assert_eq!(parse("  "), Command::Empty);
        assert_eq!(parse("/HELP"), Command::Help);
        assert_eq!(parse("/join  rust "), Command::Join("rust"));
        assert_eq!(parse("/join"), Command::Missing("/join ROOM"));
        assert_eq!(parse("/msg bob  hi there"), Command::Msg("bob", "hi there"));
        assert_eq!(parse("/msg bob"), Command::Missing("/msg USER text"));
        assert_eq!(parse("/history 5"), Command::History(Some("5")));
        assert_eq!(parse("/history"), Command::History(None));
        assert_eq!(parse("/quit bye all"), Command::Quit(Some("bye all")));
        assert_eq!(parse("/frobnicate x"), Command::Unknown("frobnicate"));
        assert_eq!(parse("/"), Command::Unknown(""));
    }
}
