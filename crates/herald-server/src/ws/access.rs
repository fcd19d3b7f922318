//! Access to channels on a WebSocket connection, SSE streams and HTTP publishes: what a token may
//! do on a channel (read, write, presence) by the configured rules, the role rule or the database's
//! policies, the questions asked of the database, and the claims a channel keeps.

use herald_core::Claims;
use herald_core::channel::ChannelKey;
use herald_core::policy::Permissions;
use serde_json::Value;
use tracing::warn;

use crate::state::AppState;

/// Why a private channel may not be read.
pub(super) enum Denied {
    /// The policies (or, without a database, the role rule) do not allow it.
    Unauthorized,
    /// The database could not be asked.
    Unavailable,
}

/// The join refusal when the database cannot check a private channel's policies.
pub(super) const UNAVAILABLE_REASON: &str =
    "UnableToConnectToProject: Realtime was unable to connect to the project database";
/// The channel-closing message for the same.
pub(super) const UNAVAILABLE_MESSAGE: &str =
    "Realtime was unable to connect to the project database";

/// What the token may do on the channel: `Ok(None)` for a public channel; for a private one,
/// what the configured rules (or without them and without a database, the role rule) grant, or
/// else the database's policies.
///
/// With the database's policies only the select policies are asked here (the `bool` says the
/// insert policies are still to be asked).
pub(super) async fn read_rights(
    app: &AppState,
    conn: u64,
    claims: &Claims,
    key: &ChannelKey,
    presence: bool,
) -> Result<(Option<Permissions>, bool), Denied> {
    if !key.private {
        return Ok((None, false));
    }
    let policy = &app.config.policy;
    let pg = match &app.postgres {
        Some(pg) if !policy.has_rules() => pg,
        _ => {
            let p = policy.permissions(claims, key);
            return if p.may_join(presence) {
                Ok((Some(p), false))
            } else {
                Err(Denied::Unauthorized)
            };
        }
    };
    match pg.authorize(read_check(claims, key, presence)).await {
        Ok(p) if p.may_join(presence) => Ok((Some(p), true)),
        Ok(_) => Err(Denied::Unauthorized),
        Err(e) => {
            herald_core::stats::error("pg_authz_unavailable");
            warn!(conn, topic = %key.name, error = %e, "channel policies could not be checked");
            Err(Denied::Unavailable)
        }
    }
}

/// What the insert policies allow a token on a private channel (send broadcasts, track presence),
/// asked of the database; the read rights of the answer are not asked and stay false.
pub(super) async fn insert_rights(
    pg: &herald_postgres::Postgres,
    conn: u64,
    claims: &Claims,
    key: &ChannelKey,
) -> Result<Permissions, Denied> {
    pg.authorize(write_check(claims, key)).await.map_err(|e| {
        herald_core::stats::error("pg_authz_unavailable");
        warn!(conn, topic = %key.name, error = %e, "channel insert policies could not be checked");
        Denied::Unavailable
    })
}

/// The claims a channel keeps: all of them when Postgres Changes may need them for row-level
/// security or the configured rules may read them, otherwise only what the role rule reads.
pub fn keep_claims(app: &AppState, claims: Claims) -> Claims {
    if app.postgres.is_some() || app.config.policy.has_rules() {
        claims
    } else {
        claims.compact()
    }
}

/// The select-policy question of a private channel for a token (may it read broadcasts, and
/// presence when `presence` is on?).
pub fn read_check(claims: &Claims, key: &ChannelKey, presence: bool) -> herald_postgres::Check {
    herald_postgres::Check {
        role: claims.role.clone(),
        claims: Value::Object(claims.all.clone()).to_string(),
        sub: claims.sub.clone(),
        topic: key.name.to_string(),
        presence,
        reads: true,
        writes: false,
    }
}

/// The insert-policy question of a private channel for a token (may it send broadcasts, track
/// presence?).
pub fn write_check(claims: &Claims, key: &ChannelKey) -> herald_postgres::Check {
    herald_postgres::Check {
        presence: false,
        reads: false,
        writes: true,
        ..read_check(claims, key, false)
    }
}
