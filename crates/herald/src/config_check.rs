//! `herald config check` and `herald config print`: every problem of a configuration (the file, the
//! `HERALD_*` environment and the flags) with the place it came from, and the effective settings with
//! the source of each value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde_json::Value;

use crate::settings::{CliOverrides, Settings};

/// The shortest secret production mode accepts (HS256 wants a key as long as its hash).
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Environment variables with Herald's prefix that are read elsewhere, not settings.
const NON_SETTING_VARS: &[&str] = &["HERALD_LOG", "HERALD_BIN"];

/// Where a value came from, highest precedence first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(String),
    Env(String),
    File(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::File(path) => write!(f, "file {path}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One bad value: the setting, where it was given, and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Problem {
    pub key: String,
    pub source: Source,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.source, self.message)
    }
}

/// The outcome of reading a configuration.
#[derive(Debug)]
pub struct Checked {
    /// The settings, when every value could be read (problems of meaning may remain).
    pub settings: Option<Settings>,
    pub problems: Vec<Problem>,
    /// Things that do not stop Herald but are probably not what was meant.
    pub warnings: Vec<String>,
    layers: Layers,
}

/// What each layer set, to attribute every value to its source.
#[derive(Debug, Default)]
struct Layers {
    file: Option<(String, toml::Table)>,
    flags: serde_json::Map<String, Value>,
    env: BTreeMap<String, String>,
}

impl Layers {
    fn source_of(&self, key: &str) -> Source {
        if self.flags.contains_key(key) {
            return Source::Flag(format!("--{}", key.replace('_', "-")));
        }
        let var = env_name(key);
        if self.env.contains_key(&var) {
            return Source::Env(var);
        }
        if key == "database_url" && self.env.contains_key("DATABASE_URL") {
            return Source::Env("DATABASE_URL".to_owned());
        }
        if let Some((path, table)) = &self.file
            && table.contains_key(key)
        {
            return Source::File(path.clone());
        }
        Source::Default
    }
}

fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.to_uppercase())
}

/// The names of every setting, with their default values.
fn defaults() -> serde_json::Map<String, Value> {
    match serde_json::to_value(Settings::default()) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Reads the configuration from its layers and collects every problem instead of stopping at the
/// first.
pub fn check(config: Option<&Path>, overrides: &CliOverrides) -> Checked {
    let defaults = defaults();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut layers = Layers {
        env: std::env::vars()
            .filter(|(k, _)| k.starts_with("HERALD_") || k == "DATABASE_URL")
            .collect(),
        ..Layers::default()
    };
    if let Ok(Value::Object(flags)) = serde_json::to_value(overrides) {
        layers.flags = flags;
    }

    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = config {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => problems.push(Problem {
                key: "--config".to_owned(),
                source: Source::Flag("--config".to_owned()),
                message: format!("cannot read {shown}: {e}"),
            }),
            Ok(text) => match text.parse::<toml::Table>() {
                Err(e) => problems.push(Problem {
                    key: "--config".to_owned(),
                    source: Source::File(shown.clone()),
                    message: format!("not valid TOML: {}", e.message()),
                }),
                Ok(table) => {
                    for key in table.keys().filter(|k| !defaults.contains_key(*k)) {
                        problems.push(Problem {
                            key: key.clone(),
                            source: Source::File(shown.clone()),
                            message: unknown_setting(key, &defaults),
                        });
                    }
                    figment = figment.merge(Toml::file(path));
                    layers.file = Some((shown, table));
                }
            },
        }
    }
    for var in layers.env.keys() {
        let Some(key) = var.strip_prefix("HERALD_") else {
            continue;
        };
        let key = key.to_lowercase();
        if !defaults.contains_key(&key)
            && !NON_SETTING_VARS.contains(&var.as_str())
            && !var.starts_with("HERALD_TEST_")
        {
            warnings.push(format!(
                "{var} is not a setting and is ignored ({})",
                unknown_setting(&key, &defaults)
            ));
        }
    }
    figment = figment
        .merge(Env::prefixed("HERALD_"))
        .merge(Serialized::defaults(overrides));

    // serde stops at the first bad value: report it, put the default in its place, and read again,
    // so that every bad value is named at once. The limits first, on their own: flattened into the
    // settings, their errors would not say which key they are about.
    let mut limits_read = false;
    let mut settings = None;
    for _ in 0..=2 * defaults.len() {
        let extracted = if limits_read {
            figment.extract::<Settings>().map(Some)
        } else {
            figment.extract::<herald_core::Limits>().map(|_| None)
        };
        match extracted {
            Ok(None) => limits_read = true,
            Ok(Some(s)) => {
                settings = Some(s);
                break;
            }
            Err(errors) => {
                let mut replaced = false;
                for error in errors {
                    let key = error.path.first().cloned();
                    let Some(key) = key.filter(|k| defaults.contains_key(k)) else {
                        problems.push(Problem {
                            key: "configuration".to_owned(),
                            source: Source::Default,
                            message: error.kind.to_string(),
                        });
                        continue;
                    };
                    problems.push(Problem {
                        source: layers.source_of(&key),
                        message: error.kind.to_string(),
                        key: key.clone(),
                    });
                    if let Some(value) = defaults.get(&key) {
                        figment = figment.merge(Serialized::default(&key, value.clone()));
                        replaced = true;
                    }
                }
                if !replaced {
                    if limits_read {
                        break;
                    }
                    limits_read = true;
                }
            }
        }
    }
    if let Some(s) = settings.as_mut() {
        if s.database_url.as_deref().is_none_or(str::is_empty) {
            s.database_url = layers.env.get("DATABASE_URL").cloned();
        }
        s.database_url = s.database_url.take().filter(|u| !u.is_empty());
        check_meaning(s, &layers, &mut problems, &mut warnings);
    }
    Checked {
        settings,
        problems,
        warnings,
        layers,
    }
}

fn unknown_setting(key: &str, defaults: &serde_json::Map<String, Value>) -> String {
    let closest = defaults
        .keys()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((score, k)) if score > 0.85 => format!("unknown setting; did you mean `{k}`?"),
        _ => "unknown setting; `herald config print` lists them all".to_owned(),
    }
}

/// Values that read as the right type but cannot work.
fn check_meaning(
    s: &Settings,
    layers: &Layers,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) {
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_owned(),
            source: layers.source_of(key),
            message,
        })
    };
    let mut durations_read = true;
    for (key, text) in [
        ("history_max_age", &s.history_max_age),
        ("pg_history_max_age", &s.pg_history_max_age),
    ] {
        if let Err(e) = herald_core::history::parse_duration(text) {
            durations_read = false;
            bad(
                key,
                format!("{e} (write e.g. `500ms`, `30s`, `2m`, `24h`, `7d`)"),
            );
        }
    }
    if durations_read && let Err(e) = s.history_config() {
        bad("history", format!("{e:#}"));
    }
    if !matches!(s.log_format.as_str(), "text" | "json") {
        bad(
            "log_format",
            format!("`{}` is neither `text` nor `json`", s.log_format),
        );
    }
    if let Some(env) = s.env.as_deref()
        && !matches!(env, "production" | "development" | "")
    {
        bad(
            "env",
            format!("`{env}` is neither `production` nor `development`"),
        );
    }
    let is_origin = |o: &str| {
        (o.starts_with("http://") || o.starts_with("https://"))
            && !o
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .contains('/')
    };
    for origin in &s.cors_origins {
        if !(origin == "*" || is_origin(origin)) {
            bad(
                "cors_origins",
                format!(
                    "`{origin}` is not an origin: write `*` or `https://host[:port]` without a path"
                ),
            );
        }
    }
    for origin in &s.allowed_origins {
        if !is_origin(origin) {
            bad(
                "allowed_origins",
                format!("`{origin}` is not an origin: write `https://host[:port]` without a path"),
            );
        }
    }
    if let Err(errors) = herald_core::policy::Policy::compile(&s.policies) {
        for e in errors {
            bad("policies", e.to_string());
        }
    }
    if !s.policies.is_empty() && s.database_url.is_some() {
        warnings.push(
            "policies: rules are configured, so private channels follow them and not the database's \
             policies on realtime.messages"
                .to_owned(),
        );
    }
    if let Some(path) = &s.jwt_keys_file {
        match std::fs::read(path) {
            Err(e) => bad(
                "jwt_keys_file",
                format!("cannot read {}: {e}", path.display()),
            ),
            Ok(text) => {
                if let Err(e) = herald_core::keys::KeyRing::parse(&text) {
                    bad("jwt_keys_file", format!("{}: {e}", path.display()));
                }
            }
        }
    }
    if let Some(url) = s.jwt_jwks_url.as_deref().filter(|u| !u.is_empty())
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        bad(
            "jwt_jwks_url",
            format!("`{url}` is not an http:// or https:// URL"),
        );
    }
    for entry in &s.trusted_proxies {
        if let Err(e) = herald_server::client_addr::parse_proxy(entry) {
            bad("trusted_proxies", e);
        }
    }
    if let Some(url) = s.database_url.as_deref()
        && url.contains("://")
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        bad(
            "database_url",
            "must start with postgres:// or postgresql://".to_owned(),
        );
    }
    let at_least_one = [
        ("max_connections", s.limits.max_connections),
        (
            "max_channels_per_connection",
            s.limits.max_channels_per_connection,
        ),
        ("max_http_batch", s.limits.max_http_batch),
        ("outbound_queue_frames", s.limits.outbound_queue_frames),
        ("max_frame_bytes", s.limits.max_frame_bytes),
        ("max_payload_bytes", s.limits.max_payload_bytes),
        ("pg_pool_size", s.pg_pool_size),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            bad(key, "must be at least 1".to_owned());
        }
    }
    if s.data_dir.exists() && !s.data_dir.is_dir() {
        bad(
            "data_dir",
            format!("{} exists and is not a directory", s.data_dir.display()),
        );
    }
    if s.is_production() {
        match s.jwt_secret.as_deref().map(str::len).unwrap_or(0) {
            0 => bad(
                "jwt_secret",
                "production mode needs a secret: set HERALD_JWT_SECRET (or jwt_secret in the config file)"
                    .to_owned(),
            ),
            n if n < MIN_PRODUCTION_SECRET_BYTES => bad(
                "jwt_secret",
                format!(
                    "is {n} bytes; production mode needs at least {MIN_PRODUCTION_SECRET_BYTES} (e.g. `openssl rand -base64 48`)"
                ),
            ),
            _ => {}
        }
        if s.test_echo_route {
            bad(
                "test_echo_route",
                "the conformance suite's echo route is refused in production mode".to_owned(),
            );
        }
        if s.metrics_token.as_deref().is_none_or(str::is_empty) {
            bad(
                "metrics_token",
                "production mode keeps /metrics private: set HERALD_METRICS_TOKEN; scrapers send `Authorization: Bearer <it>`"
                    .to_owned(),
            );
        }
    }
    if s.limits.max_payload_bytes > s.limits.max_frame_bytes {
        warnings.push(format!(
            "max_payload_bytes ({}) is larger than max_frame_bytes ({}): WebSocket clients cannot send a payload that large",
            s.limits.max_payload_bytes, s.limits.max_frame_bytes
        ));
    }
}

impl Checked {
    /// Every problem, one a line, for an error message.
    pub fn problem_lines(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The effective configuration as TOML, each value followed by its source; secrets are masked.
    pub fn render(&self) -> String {
        let Some(settings) = &self.settings else {
            return String::new();
        };
        let Ok(Value::Object(values)) = serde_json::to_value(settings) else {
            return String::new();
        };
        let mut out = String::from(
            "# Herald's effective configuration. Each value is followed by its source;\n\
             # a flag overrides the environment, which overrides the file, which overrides the default.\n",
        );
        let mut tables = String::new();
        for (key, value) in values {
            let source = self.layers.source_of(&key);
            let value = masked(&key, value);
            if key == "history" || key == "policies" {
                // Arrays of tables go last, where TOML wants them.
                if let Value::Array(rules) = &value {
                    for rule in rules {
                        tables.push_str(&format!("\n[[{key}]]  # {source}\n{}", toml_body(rule)));
                    }
                }
                continue;
            }
            match value {
                Value::Null => out.push_str(&format!("# {key} is not set  # {source}\n")),
                // A masked secret is written as a comment, so that the output used as a file
                // never turns the mask into the secret.
                Value::String(text) if text.contains(MASK) => {
                    out.push_str(&format!("# {key} = {text}  # {source}\n"));
                }
                other => out.push_str(&format!("{key} = {}  # {source}\n", toml_value(&other))),
            }
        }
        out.push_str(&tables);
        out
    }
}

/// What stands for a secret in printed values.
const MASK: &str = "***";

fn masked(key: &str, value: Value) -> Value {
    match (key, value) {
        ("jwt_secret" | "metrics_token", Value::String(s)) => {
            Value::String(format!("{MASK} ({} bytes)", s.len()))
        }
        ("database_url", Value::String(url)) => Value::String(mask_password(&url)),
        (_, v) => v,
    }
}

/// `postgres://user:pass@host/db` -> `postgres://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:{MASK}{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

fn toml_value(value: &Value) -> String {
    match toml::Value::try_from(value) {
        Ok(v) => v.to_string(),
        Err(_) => value.to_string(),
    }
}

fn toml_body(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} = {}\n", toml_value(v)))
            .collect(),
        other => format!("# {other}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn every_bad_value_is_named_with_its_source() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "h.toml",
                "prot = 5000\nidle_timeout_secs = \"soon\"\nhistory_max_age = \"forever\"\nlog_format = \"xml\"\n",
            )?;
            jail.set_env("HERALD_PORT", "abc");
            jail.set_env("HERALD_MAX_CONNECTIONS", "0");
            jail.set_env("HERALD_CORS_ORIGINS", "[\"https://app.example/path\"]");
            jail.set_env("HERALD_TYPO_SETTING", "1");
            jail.set_env("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal");
            let checked = check(Some(Path::new("h.toml")), &CliOverrides::default());
            let lines = checked.problem_lines();
            let expect = [
                "prot (file h.toml): unknown setting; did you mean `port`?",
                "port (environment HERALD_PORT): invalid type",
                "idle_timeout_secs (file h.toml): invalid type",
                "history_max_age (file h.toml):",
                "log_format (file h.toml): `xml` is neither",
                "max_connections (environment HERALD_MAX_CONNECTIONS): must be at least 1",
                "cors_origins (environment HERALD_CORS_ORIGINS): `https://app.example/path` is not an origin",
                "trusted_proxies (environment HERALD_TRUSTED_PROXIES): `proxy.internal` is neither an IP address nor a CIDR range",
            ];
            for e in expect {
                assert!(lines.contains(e), "missing {e:?} in\n{lines}");
            }
            assert_eq!(checked.problems.len(), expect.len(), "{lines}");
            assert!(
                checked
                    .warnings
                    .iter()
                    .any(|w| w.contains("HERALD_TYPO_SETTING")),
                "{:?}",
                checked.warnings
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn policy_rules_are_checked_and_printed_back() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "[[policies]]\ntopics = \"room:{sub}\"\nroles = [\"authenticated\"]\nallow = [\"read\", \"write\"]\n\
                 [[policies]]\ntopics = \"org:{user}\"\nallow = [\"read\"]\n\
                 [[policies]]\ntopics = \"x\"\nallow = [\"fly\"]\n",
            )?;
            let checked = check(Some(Path::new("p.toml")), &CliOverrides::default());
            let lines = checked.problem_lines();
            assert!(
                lines.contains("policies (file p.toml): unknown variant: found `fly`"),
                "{lines}"
            );
            jail.create_file(
                "p.toml",
                "[[policies]]\ntopics = \"room:{sub}\"\nroles = [\"authenticated\"]\nallow = [\"read\", \"write\"]\n\
                 [[policies]]\ntopics = \"org:{user}\"\nallow = [\"read\"]\n",
            )?;
            let checked = check(Some(Path::new("p.toml")), &CliOverrides::default());
            assert_eq!(
                checked.problem_lines().trim(),
                "- policies (file p.toml): policy 2: `{user}` is not a placeholder: write `{sub}`, `{role}` or `{claims.<name>}`"
            );
            jail.create_file(
                "p.toml",
                "[[policies]]\ntopics = \"room:{sub}\"\nroles = [\"authenticated\"]\nallow = [\"read\", \"write\"]\n",
            )?;
            let checked = check(Some(Path::new("p.toml")), &CliOverrides::default());
            assert!(checked.problems.is_empty(), "{}", checked.problem_lines());
            let printed = checked.render();
            assert!(
                printed.contains("[[policies]]  # file p.toml\nallow = [\"read\", \"write\"]\nroles = [\"authenticated\"]\ntopics = \"room:{sub}\"\n"),
                "{printed}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn production_refuses_a_short_secret_the_echo_route_and_open_metrics() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_ENV", "production");
            jail.set_env("HERALD_JWT_SECRET", "a");
            let flags = CliOverrides {
                test_echo_route: Some(true),
                ..CliOverrides::default()
            };
            let lines = check(None, &flags).problem_lines();
            for e in [
                "jwt_secret (environment HERALD_JWT_SECRET): is 1 bytes; production mode needs at least 32",
                "test_echo_route (flag --test-echo-route): the conformance suite's echo route is refused",
                "metrics_token (default): production mode keeps /metrics private",
            ] {
                assert!(lines.contains(e), "missing {e:?} in\n{lines}");
            }
            jail.set_env("HERALD_JWT_SECRET", "s".repeat(32));
            jail.set_env("HERALD_METRICS_TOKEN", "m");
            let checked = check(None, &CliOverrides::default());
            assert!(checked.problems.is_empty(), "{}", checked.problem_lines());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn print_names_the_source_of_each_value_and_masks_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("h.toml", "port = 5000\n\n[[history]]\ntopics = \"chat:*\"\nmax_messages = 1000\nmax_age = \"24h\"\n")?;
            jail.set_env("HERALD_JWT_SECRET", "very-secret-value");
            jail.set_env("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:5432/app");
            let flags = CliOverrides {
                bind: Some([127, 0, 0, 2].into()),
                ..CliOverrides::default()
            };
            let checked = check(Some(Path::new("h.toml")), &flags);
            assert!(checked.problems.is_empty(), "{}", checked.problem_lines());
            let text = checked.render();
            for line in [
                "port = 5000  # file h.toml",
                "bind = \"127.0.0.2\"  # flag --bind",
                "# jwt_secret = *** (17 bytes)  # environment HERALD_JWT_SECRET",
                "# database_url = postgres://app:***@127.0.0.1:5432/app  # environment DATABASE_URL",
                "max_payload_bytes = 262144  # default",
                "[[history]]  # file h.toml",
                "topics = \"chat:*\"",
            ] {
                assert!(text.contains(line), "missing {line:?} in\n{text}");
            }
            assert!(!text.contains("hunter2") && !text.contains("very-secret-value"));
            // What it prints reads back as a configuration file with the same values, the
            // secrets left out.
            jail.create_file("printed.toml", &text)?;
            jail.clear_env();
            let again = check(Some(Path::new("printed.toml")), &CliOverrides::default());
            assert!(again.problems.is_empty(), "{}", again.problem_lines());
            let s = again.settings.unwrap();
            assert_eq!(s.port, 5000);
            assert_eq!(s.bind, std::net::IpAddr::from([127, 0, 0, 2]));
            assert_eq!(s.history.len(), 1);
            assert_eq!(s.jwt_secret, None);
            assert_eq!(s.database_url, None);
            Ok(())
        });
    }
}
