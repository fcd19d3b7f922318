//! Channel policies that Herald decides itself: the rights a token has on a channel (read,
//! write, presence) when no database policy decides them. Without configured rules a private
//! channel follows the role rule (every role but `anon`); with `[[policies]]` rules in the
//! configuration, a private channel grants what the rules matching its name and the token's role
//! allow. One evaluator serves WebSocket, SSE and the HTTP API.
//!
//! A rule's `topics` is a pattern: `*` matches any run of characters, and `{sub}`, `{role}` and
//! `{claims.<path>}` stand for the token's claims (`{claims.app_metadata.org_id}` reads a nested
//! claim). A placeholder whose claim is missing, empty, or not a string, number or boolean makes the
//! rule match nothing for that token: a rule never opens more than it names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Claims, roles};
use crate::channel::ChannelKey;

/// What a token may do on a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Permissions {
    /// It receives broadcasts.
    pub broadcast_read: bool,
    /// It may send broadcasts.
    pub broadcast_write: bool,
    /// It receives presence state and diffs.
    pub presence_read: bool,
    /// It may track its presence.
    pub presence_write: bool,
}

impl Permissions {
    /// Everything.
    pub const ALL: Permissions = Permissions {
        broadcast_read: true,
        broadcast_write: true,
        presence_read: true,
        presence_write: true,
    };

    /// Nothing.
    pub const NONE: Permissions = Permissions {
        broadcast_read: false,
        broadcast_write: false,
        presence_read: false,
        presence_write: false,
    };

    /// A join is allowed when the token reads broadcasts, or presence when presence is enabled.
    pub fn may_join(&self, presence_enabled: bool) -> bool {
        self.broadcast_read || (presence_enabled && self.presence_read)
    }

    fn union(self, other: Permissions) -> Permissions {
        Permissions {
            broadcast_read: self.broadcast_read || other.broadcast_read,
            broadcast_write: self.broadcast_write || other.broadcast_write,
            presence_read: self.presence_read || other.presence_read,
            presence_write: self.presence_write || other.presence_write,
        }
    }
}

/// A right a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Join the channel and receive its broadcasts.
    Read,
    /// Send broadcasts (WebSocket pushes and HTTP publishes).
    Write,
    /// See who is present and track one's own presence.
    Presence,
}

/// One `[[policies]]` entry of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// The channel names the rule covers, e.g. `room:{sub}` or `org:{claims.org_id}:*`.
    pub topics: String,
    /// The roles it applies to (none listed: every role).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// What it grants.
    pub allow: Vec<Action>,
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A `{` without its `}`.
    #[error("policy {index}: `{topics}` has a `{{` without a closing `}}`")]
    Unclosed { index: usize, topics: String },
    /// A placeholder that names no claim.
    #[error(
        "policy {index}: `{{{name}}}` is not a placeholder: write `{{sub}}`, `{{role}}` or `{{claims.<name>}}`"
    )]
    UnknownPlaceholder { index: usize, name: String },
    /// A rule that grants nothing.
    #[error("policy {index}: `allow` is empty: list `read`, `write` or `presence`")]
    NothingAllowed { index: usize },
    /// An empty pattern.
    #[error("policy {index}: `topics` is empty")]
    EmptyTopics { index: usize },
}

/// A piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Star,
    Claim(Vec<String>),
}

#[derive(Debug, Clone)]
struct Rule {
    pieces: Vec<Piece>,
    roles: Vec<String>,
    grants: Permissions,
}

/// The compiled rules; empty means the role rule.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Compiles the configured rules, naming every rule that cannot be used.
    pub fn compile(specs: &[PolicyRule]) -> Result<Policy, Vec<PolicyError>> {
        let mut rules = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let index = i + 1;
            if spec.allow.is_empty() {
                errors.push(PolicyError::NothingAllowed { index });
            }
            match compile_pattern(index, &spec.topics) {
                Ok(pieces) => rules.push(Rule {
                    pieces,
                    roles: spec.roles.clone(),
                    grants: grants(&spec.allow),
                }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Policy { rules })
        } else {
            Err(errors)
        }
    }

    /// True when rules are configured (private channels follow them, not the role rule nor the
    /// database's policies).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// What these claims may do on the channel, as Herald decides it: everything on a public
    /// channel and for the service role; on a private channel what the matching rules grant
    /// together, or without rules, everything for every role but `anon`.
    pub fn permissions(&self, claims: &Claims, key: &ChannelKey) -> Permissions {
        if !key.private || claims.is_service() {
            return Permissions::ALL;
        }
        if self.rules.is_empty() {
            return if claims.role == roles::ANON {
                Permissions::NONE
            } else {
                Permissions::ALL
            };
        }
        self.rules
            .iter()
            .filter(|r| r.roles.is_empty() || r.roles.contains(&claims.role))
            .filter(|r| matches(&r.pieces, claims, &key.name))
            .fold(Permissions::NONE, |acc, r| acc.union(r.grants))
    }
}

fn grants(allow: &[Action]) -> Permissions {
    let mut p = Permissions::NONE;
    for a in allow {
        match a {
            Action::Read => p.broadcast_read = true,
            Action::Write => p.broadcast_write = true,
            Action::Presence => {
                p.presence_read = true;
                p.presence_write = true;
            }
        }
    }
    p
}

fn compile_pattern(index: usize, topics: &str) -> Result<Vec<Piece>, PolicyError> {
    if topics.is_empty() {
        return Err(PolicyError::EmptyTopics { index });
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = topics;
    while let Some(c) = rest.chars().next() {
        match c {
            '*' => {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                if pieces.last() != Some(&Piece::Star) {
                    pieces.push(Piece::Star);
                }
                rest = &rest[1..];
            }
            '{' => {
                let Some(end) = rest.find('}') else {
                    return Err(PolicyError::Unclosed {
                        index,
                        topics: topics.to_owned(),
                    });
                };
                let name = &rest[1..end];
                let path = match name {
                    "sub" | "role" => vec![name.to_owned()],
                    _ => match name.strip_prefix("claims.") {
                        Some(p) if !p.is_empty() && p.split('.').all(|s| !s.is_empty()) => {
                            p.split('.').map(str::to_owned).collect()
                        }
                        _ => {
                            return Err(PolicyError::UnknownPlaceholder {
                                index,
                                name: name.to_owned(),
                            });
                        }
                    },
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Claim(path));
                rest = &rest[end + 1..];
            }
            _ => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// The text a placeholder stands for, or `None` when the claim cannot stand in a name.
fn claim_text(claims: &Claims, path: &[String]) -> Option<String> {
    let text = match path {
        [one] if one == "sub" => claims.sub.clone(),
        [one] if one == "role" => Some(claims.role.clone()),
        _ => {
            let (first, rest) = path.split_first()?;
            let mut v = claims.all.get(first)?;
            for p in rest {
                v = v.get(p)?;
            }
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
    };
    text.filter(|t| !t.is_empty())
}

/// Does `name` match the pattern with the claims filled in? Placeholders match their text
/// literally (a `*` inside a claim is no wildcard).
fn matches(pieces: &[Piece], claims: &Claims, name: &str) -> bool {
    // Fill in the claims, then fold the pattern into literal runs separated by stars.
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(s) => run.push_str(s),
            Piece::Claim(path) => match claim_text(claims, path) {
                Some(t) => run.push_str(&t),
                None => return false,
            },
            Piece::Star => runs.push(std::mem::take(&mut run)),
        }
    }
    runs.push(run);
    glob(&runs, name)
}

/// `runs` joined by stars: the first must start the name, the last must end it, the others appear
/// in order between them (leftmost first, which is exact for star-only patterns).
fn glob(runs: &[String], name: &str) -> bool {
    let (first, rest) = match runs.split_first() {
        Some(x) => x,
        None => return name.is_empty(),
    };
    let Some((last, middle)) = rest.split_last() else {
        return name == first;
    };
    let Some(mut tail) = name.strip_prefix(first.as_str()) else {
        return false;
    };
    if tail.len() < last.len() {
        return false;
    }
    let end = tail.len() - last.len();
    if !tail.is_char_boundary(end) || &tail[end..] != last {
        return false;
    }
    tail = &tail[..end];
    for run in middle {
        match tail.find(run.as_str()) {
            Some(at) => tail = &tail[at + run.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(role: &str, sub: Option<&str>, extra: Value) -> Claims {
        let mut all = extra.as_object().cloned().unwrap_or_default();
        all.insert("role".into(), json!(role));
        if let Some(s) = sub {
            all.insert("sub".into(), json!(s));
        }
        Claims {
            role: role.to_owned(),
            exp: u64::MAX,
            sub: sub.map(str::to_owned),
            all,
        }
    }

    fn rule(topics: &str, roles: &[&str], allow: &[Action]) -> PolicyRule {
        PolicyRule {
            topics: topics.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            allow: allow.to_vec(),
        }
    }

    fn private(name: &str) -> ChannelKey {
        ChannelKey::new(name, true)
    }

    /// Read, write and presence as letters, for a readable table.
    fn rights(p: Permissions) -> String {
        let mut s = String::new();
        if p.broadcast_read {
            s.push('r');
        }
        if p.broadcast_write {
            s.push('w');
        }
        if p.presence_read && p.presence_write {
            s.push('p');
        }
        s
    }

    #[test]
    fn rules_by_token_and_channel() {
        use Action::*;
        let policy = Policy::compile(&[
            rule("room:{sub}", &["authenticated"], &[Read, Write]),
            rule("org:{claims.org_id}:*", &[], &[Read]),
            rule(
                "org:{claims.org_id}:chat",
                &["authenticated"],
                &[Write, Presence],
            ),
            rule("lobby", &["authenticated", "anon"], &[Read, Presence]),
            rule("team:{claims.app.team}", &["authenticated"], &[Read]),
            rule("*:announcements", &["editor"], &[Write]),
        ])
        .unwrap();
        let alice = claims("authenticated", Some("alice"), json!({"org_id": 7}));
        let bob = claims("authenticated", Some("bob"), json!({"org_id": "acme"}));
        let anon = claims("anon", None, json!({}));
        let nested = claims("authenticated", Some("n"), json!({"app": {"team": "red"}}));
        let editor = claims("editor", Some("e"), json!({"org_id": 7}));
        let service = claims("service_role", None, json!({}));
        let no_org = claims("authenticated", Some("carol"), json!({"org_id": null}));
        let starry = claims("authenticated", Some("*"), json!({"org_id": "*"}));
        let table: &[(&Claims, &str, &str)] = &[
            (&alice, "room:alice", "rw"),
            (&alice, "room:bob", ""),
            (&bob, "room:bob", "rw"),
            (&alice, "room:alice:extra", ""),
            (&alice, "org:7:news", "r"),
            (&alice, "org:7:chat", "rwp"),
            (&alice, "org:8:news", ""),
            (&alice, "org:7", ""),
            (&bob, "org:acme:chat", "rwp"),
            (&bob, "org:7:chat", ""),
            (&anon, "lobby", "rp"),
            (&anon, "room:", ""),
            (&anon, "org:7:news", ""),
            (&alice, "lobby", "rp"),
            (&nested, "team:red", "r"),
            (&nested, "team:blue", ""),
            (&editor, "org:7:announcements", "rw"),
            (&editor, "room:e", ""),
            (&alice, "org:7:announcements", "r"),
            (&service, "anything:at:all", "rwp"),
            (&no_org, "org::news", ""),
            (&starry, "room:*", "rw"),
            (&starry, "room:alice", ""),
            (&starry, "org:*:x", "r"),
            (&starry, "org:7:x", ""),
        ];
        for (who, name, want) in table {
            let got = rights(policy.permissions(who, &private(name)));
            assert_eq!(&got, want, "{} ({:?}) on {name}", who.role, who.sub);
        }
        // Public channels are not governed by the rules.
        assert_eq!(
            policy.permissions(&anon, &ChannelKey::new("room:x", false)),
            Permissions::ALL
        );
    }

    #[test]
    fn without_rules_the_role_rule_holds() {
        let policy = Policy::default();
        assert!(!policy.has_rules());
        let anon = claims("anon", None, json!({}));
        let user = claims("authenticated", Some("u"), json!({}));
        let custom = claims("moderator", Some("m"), json!({}));
        assert_eq!(policy.permissions(&anon, &private("a")), Permissions::NONE);
        assert_eq!(policy.permissions(&user, &private("a")), Permissions::ALL);
        assert_eq!(policy.permissions(&custom, &private("a")), Permissions::ALL);
        assert_eq!(
            policy.permissions(&anon, &ChannelKey::new("a", false)),
            Permissions::ALL
        );
    }

    #[test]
    fn presence_alone_opens_a_join_only_with_presence_enabled() {
        let policy =
            Policy::compile(&[rule("stage", &["authenticated"], &[Action::Presence])]).unwrap();
        let p = policy.permissions(
            &claims("authenticated", Some("u"), json!({})),
            &private("stage"),
        );
        assert!(p.may_join(true) && !p.may_join(false));
        assert!(!p.broadcast_write && p.presence_write);
    }

    #[test]
    fn bad_rules_are_named() {
        let errors = Policy::compile(&[
            rule("room:{sub", &[], &[Action::Read]),
            rule("room:{user}", &[], &[Action::Read]),
            rule("room:{claims.}", &[], &[Action::Read]),
            rule("room", &[], &[]),
            rule("", &[], &[Action::Read]),
        ])
        .unwrap_err();
        let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "policy 1: `room:{sub` has a `{` without a closing `}`",
                "policy 2: `{user}` is not a placeholder: write `{sub}`, `{role}` or `{claims.<name>}`",
                "policy 3: `{claims.}` is not a placeholder: write `{sub}`, `{role}` or `{claims.<name>}`",
                "policy 4: `allow` is empty: list `read`, `write` or `presence`",
                "policy 5: `topics` is empty",
            ]
        );
    }

    #[test]
    fn globs() {
        let g = |p: &[&str], n: &str| glob(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>(), n);
        assert!(g(&["a"], "a") && !g(&["a"], "ab"));
        assert!(g(&["", ""], "") && g(&["", ""], "anything"));
        assert!(g(&["a", "c"], "abc") && g(&["a", "c"], "ac") && !g(&["a", "c"], "ab"));
        assert!(g(&["a", "b", "c"], "abc") && g(&["a", "b", "c"], "axbyc"));
        assert!(!g(&["ab", "ba"], "aba"));
        assert!(g(&["", "é", ""], "café!") && !g(&["x", "é"], "xé!"));
    }
}
