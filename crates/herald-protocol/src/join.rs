//! The `phx_join` payload: channel configuration and the access token.
//!
//! As the reference server does, a config with values of the wrong type is not an error: defaults
//! apply and the problems are reported in [`JoinConfig::warnings`] for the log.

use serde_json::{Map, Value};

/// What a join asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinConfig {
    /// `config.broadcast.self`: the sender receives its own broadcasts.
    pub broadcast_self: bool,
    /// `config.broadcast.ack`: broadcasts are acknowledged with a reply.
    pub broadcast_ack: bool,
    /// `config.presence.enabled`.
    pub presence_enabled: bool,
    /// `config.presence.key` (empty when not given).
    pub presence_key: String,
    /// `config.postgres_changes`, in the client's order.
    pub postgres_changes: Vec<PostgresBinding>,
    /// `config.private`.
    pub private: bool,
    /// `access_token` (or the legacy `user_token`).
    pub access_token: Option<String>,
    /// `config.broadcast.recover {epoch, offset}`: replay everything after this position.
    pub recover: Option<(String, u64)>,
    /// `config.broadcast.replay {since, limit}`: replay recent messages (milliseconds since the epoch).
    pub replay: Option<(u64, Option<u64>)>,
    /// Problems found in the config; defaults were used instead.
    pub warnings: Vec<String>,
}

/// One `postgres_changes` binding, kept verbatim for the echo in the join reply.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresBinding {
    /// The binding object as the client sent it.
    pub raw: Map<String, Value>,
}

impl PostgresBinding {
    /// A stable integer id for the binding (the same binding always gets the same id).
    pub fn id(&self) -> u32 {
        // FNV-1a over the canonical (key-sorted) JSON of the binding.
        let text = Value::Object(self.raw.clone()).to_string();
        let mut hash: u32 = 0x811c_9dc5;
        for b in text.bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash & 0x7fff_ffff
    }

    /// The binding echoed with its id, as the join reply carries it.
    pub fn echo(&self) -> Value {
        let mut m = self.raw.clone();
        m.insert("id".to_owned(), Value::from(self.id()));
        Value::Object(m)
    }
}

impl JoinConfig {
    /// Reads a join payload. Never fails: bad parts fall back to defaults and are noted as warnings.
    pub fn parse(payload: &Value) -> JoinConfig {
        let mut cfg = JoinConfig::default();
        let Some(obj) = payload.as_object() else {
            if !payload.is_null() {
                cfg.warnings
                    .push("join payload is not an object".to_owned());
            }
            return cfg;
        };
        cfg.access_token = obj
            .get("access_token")
            .or_else(|| obj.get("user_token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(config) = obj.get("config") else {
            return cfg;
        };
        let Some(config) = config.as_object() else {
            cfg.warnings.push("config is not an object".to_owned());
            return cfg;
        };
        if let Some(b) = config.get("broadcast") {
            match b.as_object() {
                Some(b) => {
                    cfg.broadcast_self = flag(b.get("self"), "broadcast.self", &mut cfg.warnings);
                    cfg.broadcast_ack = flag(b.get("ack"), "broadcast.ack", &mut cfg.warnings);
                    match b.get("recover") {
                        None | Some(Value::Null) => {}
                        Some(r) => {
                            let epoch = r.get("epoch").and_then(Value::as_str);
                            let offset = r.get("offset").and_then(Value::as_u64);
                            match (epoch, offset) {
                                (Some(e), Some(o)) => cfg.recover = Some((e.to_owned(), o)),
                                _ => cfg
                                    .warnings
                                    .push("config.broadcast.recover needs a string epoch and an integer offset".to_owned()),
                            }
                        }
                    }
                    match b.get("replay") {
                        None | Some(Value::Null) => {}
                        Some(r) => match r.get("since").and_then(Value::as_u64) {
                            Some(since) => {
                                cfg.replay = Some((since, r.get("limit").and_then(Value::as_u64)))
                            }
                            None => cfg
                                .warnings
                                .push("config.broadcast.replay needs an integer since".to_owned()),
                        },
                    }
                }
                None if b.is_null() => {}
                None => cfg
                    .warnings
                    .push("config.broadcast is not an object".to_owned()),
            }
        }
        if let Some(p) = config.get("presence") {
            match p.as_object() {
                Some(p) => {
                    cfg.presence_enabled =
                        flag(p.get("enabled"), "presence.enabled", &mut cfg.warnings);
                    cfg.presence_key = match p.get("key") {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    };
                }
                None if p.is_null() => {}
                None => cfg
                    .warnings
                    .push("config.presence is not an object".to_owned()),
            }
        }
        cfg.private = flag(config.get("private"), "private", &mut cfg.warnings);
        match config.get("postgres_changes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::Object(raw) => cfg
                            .postgres_changes
                            .push(PostgresBinding { raw: raw.clone() }),
                        Value::Null => {}
                        _ => cfg.warnings.push(
                            "config.postgres_changes holds a value that is not an object"
                                .to_owned(),
                        ),
                    }
                }
            }
            Some(_) => cfg
                .warnings
                .push("config.postgres_changes is not an array".to_owned()),
        }
        cfg
    }
}

/// A flexible boolean: `true`/`false`, or the strings `"true"`/`"false"` in any case.
fn flag(value: Option<&Value>, name: &str, warnings: &mut Vec<String>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => {
            warnings.push(format!("config.{name} is not a boolean: {other}"));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_client_join() {
        let cfg = JoinConfig::parse(&json!({
            "config": {"broadcast": {"self": true, "ack": "TRUE"}, "presence": {"key": "me", "enabled": true},
                       "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.1"}],
                       "private": false},
            "access_token": "tok"
        }));
        assert!(cfg.broadcast_self && cfg.broadcast_ack && cfg.presence_enabled && !cfg.private);
        assert_eq!(cfg.presence_key, "me");
        assert_eq!(cfg.access_token.as_deref(), Some("tok"));
        assert_eq!(cfg.postgres_changes.len(), 1);
        let echo = cfg.postgres_changes[0].echo();
        assert_eq!(echo["table"], "todos");
        assert!(echo["id"].is_u64());
        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let cfg = JoinConfig::parse(
            &json!({"config": {"broadcast": {"self": 3}, "presence": 1, "private": "maybe"}}),
        );
        assert!(!cfg.broadcast_self && !cfg.private);
        assert_eq!(cfg.warnings.len(), 3);
        assert_eq!(JoinConfig::parse(&json!([1])).warnings.len(), 1);
    }

    #[test]
    fn recover_and_replay() {
        let cfg = JoinConfig::parse(
            &json!({"config": {"broadcast": {"recover": {"epoch": "e1", "offset": 42}, "replay": {"since": 5, "limit": 3}}}}),
        );
        assert_eq!(cfg.recover, Some(("e1".to_owned(), 42)));
        assert_eq!(cfg.replay, Some((5, Some(3))));
        let cfg = JoinConfig::parse(&json!({"config": {"broadcast": {"recover": {"epoch": 1}}}}));
        assert_eq!(cfg.recover, None);
        assert_eq!(cfg.warnings.len(), 1);
    }

    #[test]
    fn binding_ids_are_stable() {
        let a = PostgresBinding {
            raw: json!({"event":"*","schema":"public"})
                .as_object()
                .unwrap()
                .clone(),
        };
        let b = PostgresBinding {
            raw: json!({"schema":"public","event":"*"})
                .as_object()
                .unwrap()
                .clone(),
        };
        assert_eq!(a.id(), b.id());
    }
}
