//! Settings: defaults, then the TOML file, then `HERALD_*` environment variables, then flags.
//! Also the development secret kept in the data directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use herald_core::Limits;
use herald_core::history::{HistorySettings, Retention, RetentionRule, parse_duration};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Every setting. Each field is documented in `docs/configuration.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub port: u16,
    pub bind: IpAddr,
    pub data_dir: PathBuf,
    pub jwt_secret: Option<String>,
    /// `HERALD_ENV`: `production` turns production mode on.
    pub env: Option<String>,
    pub production: bool,
    pub shutdown_grace_secs: u64,
    pub test_echo_route: bool,
    pub log_format: String,
    /// Keep channel history (positions, recovery, idempotency).
    pub history_enabled: bool,
    /// Messages kept per channel when no `[[history]]` rule matches.
    pub history_max_messages: usize,
    /// Age limit of messages when no rule matches (`2m`, `24h`, ...).
    pub history_max_age: String,
    /// Per-pattern retention rules.
    pub history: Vec<RetentionRule>,
    /// Sync every append to disk.
    pub history_fsync: bool,
    /// How long an idempotency key is remembered, in seconds.
    pub idempotency_window_secs: u64,
    /// Largest replay served to a recovering client.
    pub max_replay_messages: usize,
    /// Cookie that may carry an SSE stream's token.
    pub sse_cookie: String,
    /// Seconds between SSE keep-alive comments.
    pub sse_keepalive_secs: u64,
    /// Origins browsers may call from (`*`: any, without credentials).
    pub cors_origins: Vec<String>,
    /// Origins whose pages may open WebSockets and SSE streams (empty: any).
    #[serde(deserialize_with = "list_or_commas")]
    pub allowed_origins: Vec<String>,
    /// Only private channels may be joined or streamed.
    pub private_only: bool,
    /// Rules for private channels (`[[policies]]`): per topic pattern and role, what a token may do.
    pub policies: Vec<herald_core::policy::PolicyRule>,
    /// The bearer token `/metrics` requires (required in production mode).
    pub metrics_token: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client: addresses or CIDR ranges, as a
    /// list or one comma-separated string.
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
    /// A file of public keys tokens may be signed with: a PEM public key, a JWK or a JWK set.
    pub jwt_keys_file: Option<PathBuf>,
    /// A JWKS URL whose keys verify tokens (read at start, every `jwt_jwks_refresh_secs`, and on an
    /// unknown `kid`).
    pub jwt_jwks_url: Option<String>,
    pub jwt_jwks_refresh_secs: u64,
    /// The `iss` every token must carry.
    pub jwt_issuer: Option<String>,
    /// Audiences, one of which a token's `aud` must name (none: `aud` is not checked).
    #[serde(deserialize_with = "list_or_commas")]
    pub jwt_audience: Vec<String>,
    /// Seconds a token's `nbf` may be ahead of this node's clock.
    pub jwt_leeway_secs: u64,
    /// This node's id (how messages name their sender); default: a new one at every start.
    pub node_id: Option<String>,
    /// PostgreSQL for Postgres Changes and `herald.send` (`DATABASE_URL` works too). Off when unset.
    pub database_url: Option<String>,
    /// The publication whose tables are streamed.
    pub pg_publication: String,
    /// The permanent logical replication slot.
    pub pg_slot: String,
    /// Pooled connections for row-level security checks.
    pub pg_pool_size: usize,
    /// Changes kept per table for recovering subscribers.
    pub pg_history_max_messages: usize,
    /// Age limit of kept changes.
    pub pg_history_max_age: String,
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            port: 4000,
            bind: IpAddr::from([127, 0, 0, 1]),
            data_dir: PathBuf::from("./data"),
            jwt_secret: None,
            env: None,
            production: false,
            shutdown_grace_secs: 10,
            test_echo_route: false,
            log_format: "text".to_owned(),
            history_enabled: true,
            history_max_messages: 100,
            history_max_age: "2m".to_owned(),
            history: Vec::new(),
            history_fsync: false,
            idempotency_window_secs: 300,
            max_replay_messages: 10_000,
            sse_cookie: "herald_token".to_owned(),
            sse_keepalive_secs: 15,
            cors_origins: vec!["*".to_owned()],
            allowed_origins: Vec::new(),
            private_only: false,
            policies: Vec::new(),
            metrics_token: None,
            trusted_proxies: Vec::new(),
            jwt_keys_file: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh_secs: 300,
            jwt_issuer: None,
            jwt_audience: Vec::new(),
            jwt_leeway_secs: herald_core::auth::NBF_LEEWAY_SECS,
            node_id: None,
            database_url: None,
            pg_publication: "supabase_realtime".to_owned(),
            pg_slot: "herald".to_owned(),
            pg_pool_size: 4,
            pg_history_max_messages: 10_000,
            pg_history_max_age: "10m".to_owned(),
            limits: Limits::default(),
        }
    }
}

/// A list given as a list, or as one string of comma-separated entries (handy in the environment:
/// `HERALD_TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1`).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(list) => list,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Values given as command-line flags (only those given).
#[derive(Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_echo_route: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// The secret in use and where it came from.
#[derive(Debug)]
pub struct Secret {
    pub value: String,
    pub generated: bool,
    pub source: String,
}

impl Settings {
    /// Loads settings in order of precedence.
    pub fn load(config: Option<&Path>, overrides: &CliOverrides) -> Result<Settings> {
        let checked = crate::config_check::check(config, overrides);
        for warning in &checked.warnings {
            eprintln!("warning: {warning}");
        }
        match checked.settings {
            Some(settings) if checked.problems.is_empty() => Ok(settings),
            _ => anyhow::bail!(
                "the configuration has {} problem(s):\n{}\n`herald config check` lists them; docs/configuration.md describes every setting.",
                checked.problems.len().max(1),
                checked.problem_lines()
            ),
        }
    }

    /// The parsed `trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| herald_server::client_addr::parse_proxy(e).map_err(anyhow::Error::msg))
            .collect()
    }

    /// The token checks besides the shared secret: keys from `jwt_keys_file`, `iss`, `aud`, leeway.
    pub fn token_rules(&self) -> Result<herald_core::auth::TokenRules> {
        let keys = match &self.jwt_keys_file {
            None => herald_core::keys::KeyRing::empty(),
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("reading jwt_keys_file {}", path.display()))?;
                herald_core::keys::KeyRing::parse(&text)
                    .with_context(|| format!("jwt_keys_file {}", path.display()))?
            }
        };
        Ok(herald_core::auth::TokenRules {
            keys,
            issuer: self.jwt_issuer.clone().filter(|i| !i.is_empty()),
            audience: self.jwt_audience.clone(),
            leeway_secs: self.jwt_leeway_secs,
            remote_keys: self.jwt_jwks_url.as_deref().is_some_and(|u| !u.is_empty()),
        })
    }

    /// The Postgres Changes configuration, or `None` without a database URL.
    pub fn postgres_config(&self) -> Option<herald_postgres::Settings> {
        Some(herald_postgres::Settings {
            database_url: self.database_url.clone()?,
            publication: self.pg_publication.clone(),
            slot: self.pg_slot.clone(),
            pool_size: self.pg_pool_size,
            spill_dir: self.data_dir.join("pg-spill"),
        })
    }

    /// The history configuration, or `None` when history is off.
    pub fn history_config(&self) -> Result<Option<herald_server::HistoryConfig>> {
        if !self.history_enabled {
            return Ok(None);
        }
        let settings = HistorySettings {
            default: Retention {
                max_messages: self.history_max_messages,
                max_age: parse_duration(&self.history_max_age)?,
            },
            // Table logs of Postgres Changes, unless a rule of the file names them.
            rules: if self
                .history
                .iter()
                .any(|r| r.topics.starts_with(herald_postgres::LOG_PREFIX))
            {
                Vec::new()
            } else {
                vec![(
                    format!("{}*", herald_postgres::LOG_PREFIX),
                    Retention {
                        max_messages: self.pg_history_max_messages,
                        max_age: parse_duration(&self.pg_history_max_age)?,
                    },
                )]
            },
            idempotency_window: std::time::Duration::from_secs(self.idempotency_window_secs),
            max_replay: self.max_replay_messages,
        }
        .with_rules(&self.history)?;
        Ok(Some(herald_server::HistoryConfig {
            dir: self.data_dir.join("history"),
            settings,
            fsync: self.history_fsync,
            sweep_every: std::time::Duration::from_secs(1),
        }))
    }

    /// Production mode, by flag, setting or `HERALD_ENV=production`.
    pub fn is_production(&self) -> bool {
        self.production || self.env.as_deref() == Some("production")
    }

    /// The configured secret, or (outside production) the development secret from the data dir,
    /// generated on first use.
    pub fn resolve_secret(&self) -> Result<Secret> {
        if let Some(value) = self.jwt_secret.clone().filter(|s| !s.is_empty()) {
            return Ok(Secret {
                value,
                generated: false,
                source: "configuration".to_owned(),
            });
        }
        let path = self.data_dir.join("dev-jwt-secret");
        if self.is_production() {
            return Ok(Secret {
                value: String::new(),
                generated: true,
                source: path.display().to_string(),
            });
        }
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let value = existing.trim().to_owned();
            if !value.is_empty() {
                return Ok(Secret {
                    value,
                    generated: true,
                    source: path.display().to_string(),
                });
            }
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data dir {}", self.data_dir.display()))?;
        let value: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        write_private(&path, &value).with_context(|| format!("writing {}", path.display()))?;
        Ok(Secret {
            value,
            generated: true,
            source: path.display().to_string(),
        })
    }
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn defaults_file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "port = 5000\nidle_timeout_secs = 30\nmax_payload_bytes = 10\n\n[[history]]\ntopics = \"chat:*\"\nmax_messages = 1000\nmax_age = \"24h\"\n",
            )?;
            jail.set_env("HERALD_PORT", "6000");
            jail.set_env("HERALD_MAX_CHANNELS_PER_CONNECTION", "7");
            let s = Settings::load(Some(Path::new("h.toml")), &CliOverrides::default()).unwrap();
            assert_eq!(s.port, 6000);
            assert_eq!(s.limits.idle_timeout_secs, 30);
            assert_eq!(s.limits.max_payload_bytes, 10);
            assert_eq!(s.limits.max_channels_per_connection, 7);
            let h = s.history_config().unwrap().unwrap();
            assert_eq!(h.settings.retention("chat:x").max_messages, 1000);
            assert_eq!(h.settings.retention("other").max_messages, 100);
            let flags = CliOverrides {
                port: Some(7000),
                ..CliOverrides::default()
            };
            let s = Settings::load(Some(Path::new("h.toml")), &flags).unwrap();
            assert_eq!(s.port, 7000);
            jail.set_env("HERALD_ENV", "production");
            let refused = Settings::load(None, &CliOverrides::default()).unwrap_err();
            assert!(
                format!("{refused}").contains("production mode needs a secret"),
                "{refused}"
            );
            jail.set_env("HERALD_JWT_SECRET", "a-secret-of-the-production-kind-0123");
            jail.set_env("HERALD_METRICS_TOKEN", "scraper-token");
            let s = Settings::load(None, &CliOverrides::default()).unwrap();
            assert!(s.is_production());
            Ok(())
        });
    }

    #[test]
    fn development_secret_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            data_dir: dir.path().join("d"),
            ..Settings::default()
        };
        let a = s.resolve_secret().unwrap();
        let b = s.resolve_secret().unwrap();
        assert!(a.generated && a.value.len() == 48);
        assert_eq!(a.value, b.value);
        let prod = Settings {
            production: true,
            ..s
        };
        assert!(prod.resolve_secret().unwrap().generated);
    }
}
