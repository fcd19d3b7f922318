//! Channel names: a client topic is `realtime:<name>`, and public and private channels of the same
//! name are separate channels. Who may use a channel is `policy`'s concern.

use std::sync::Arc;

/// The prefix of every channel topic.
pub const TOPIC_PREFIX: &str = "realtime:";

/// The first character of node-internal channel names.
pub const RESERVED_PREFIX: &str = "$";

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

    /// True for a node-internal channel (a name starting with [`RESERVED_PREFIX`], such as a
    /// table's change log): its messages go through the broker but never to subscribers.
    pub fn is_reserved(&self) -> bool {
        self.name.starts_with(RESERVED_PREFIX)
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
