//! Channel names and the access policy of a channel.
//!
//! A client topic is `realtime:<name>`. Public and private channels of the same name are separate.
//! Policy without a database: anyone with a valid token may read and write a public channel; a
//! private channel is open to every role except `anon`. With a database, private channels follow the
//! policies on `realtime.messages` instead (checked by the Postgres crate).

use std::sync::Arc;

use crate::auth::{Claims, roles};

/// The prefix of every channel topic.
pub const TOPIC_PREFIX: &str = "realtime:";

/// Identifies one channel on the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// Private channels are separate from public ones of the same name.
    pub private: bool,
    /// The name without the `realtime:` prefix.
    pub name: Arc<str>,
}

impl ChannelKey {
    /// A channel key.
    pub fn new(name: &str, private: bool) -> ChannelKey {
        ChannelKey {
            private,
            name: Arc::from(name),
        }
    }

    /// The topic clients use: `realtime:<name>`.
    pub fn topic(&self) -> String {
        format!("{TOPIC_PREFIX}{}", self.name)
    }
}

/// Why a topic cannot be joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Not a `realtime:` topic.
    Unmatched,
    /// `realtime:` alone.
    NameRequired,
    /// A name over the length limit.
    TooLong(crate::limits::LengthError),
}

/// Splits `realtime:<name>` into its name.
pub fn channel_name(topic: &str) -> Result<&str, TopicError> {
    match topic.strip_prefix(TOPIC_PREFIX) {
        None => Err(TopicError::Unmatched),
        Some("") => Err(TopicError::NameRequired),
        Some(name) => {
            crate::limits::check_channel_name(name).map_err(TopicError::TooLong)?;
            Ok(name)
        }
    }
}

/// May these claims read (join) the channel?
pub fn may_read(claims: &Claims, key: &ChannelKey) -> bool {
    !key.private || claims.role != roles::ANON
}

/// May these claims publish to the channel?
pub fn may_write(claims: &Claims, key: &ChannelKey) -> bool {
    may_read(claims, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(channel_name("realtime:room1"), Ok("room1"));
        assert_eq!(channel_name("realtime:"), Err(TopicError::NameRequired));
        assert_eq!(channel_name("room1"), Err(TopicError::Unmatched));
        assert_eq!(ChannelKey::new("a:b", true).topic(), "realtime:a:b");
    }
}
