//! Realtime Authorization: what a token may do on a private channel, decided by the database's
//! row-level security policies on `realtime.messages`, as Supabase Realtime decides it.
//!
//! A check runs `herald.authorize(...)` (installed by `install`): with `role`, `request.jwt.claims`,
//! `request.jwt.claim.sub`, `request.jwt.claim.role` and `realtime.topic` set for the transaction,
//! probe rows are inserted as Herald's own role and selected back as the token's role (read), and
//! an insert is tried as the token's role in a savepoint (write); everything is rolled back. Checks
//! that arrive together, from any connection, go to the database as one statement: a batching task
//! takes every queued check whenever a pooled connection is free.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
pub use herald_core::policy::Permissions;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::SimpleQueryMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::rls::quote_literal;

/// Checks sent to the database in one statement, at most.
pub const MAX_BATCH: usize = 256;
/// How long a check may take before the caller gives up on it.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Checks waiting for a batch, at most; more are refused as if the database were unavailable.
const QUEUE: usize = 16 * 1024;

/// One question: what may this token do on this private channel?
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The token's `role` (the database role the policies run as).
    pub role: String,
    /// Every claim of the token, as JSON text (`request.jwt.claims`).
    pub claims: String,
    /// The token's `sub` (`request.jwt.claim.sub`).
    pub sub: Option<String>,
    /// The channel name, without `realtime:` (`realtime.topic()`).
    pub topic: String,
    /// Presence is enabled on the channel: presence read counts for the join.
    pub presence: bool,
    /// Ask the select policies (read broadcasts, and presence with `presence`).
    pub reads: bool,
    /// Ask the insert policies (send broadcasts, track presence).
    pub writes: bool,
}

/// Why a check gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthzError {
    /// The database could not be asked (down, no connection, not installed yet, too slow).
    #[error("the database could not check the channel's policies: {0}")]
    Unavailable(String),
}

/// One check's answer from `herald.authorize`.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(flatten)]
    permissions: Permissions,
    error: Option<String>,
}

type Reply = oneshot::Sender<Result<Permissions, AuthzError>>;

/// Runs the policy checks of a node.
#[derive(Debug)]
pub struct Authorizer {
    queue: mpsc::Sender<(Check, Reply)>,
}

impl Authorizer {
    /// Starts the batching task on `pool`; at most `connections` batches run at once.
    pub fn start(pool: Pool, connections: usize, shutdown: CancellationToken) -> Authorizer {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(batcher(pool, connections.max(1), rx, shutdown));
        Authorizer { queue }
    }

    /// What the token may do on the channel. The service role may do everything, unasked.
    pub async fn check(&self, check: Check) -> Result<Permissions, AuthzError> {
        if check.role == herald_core::auth::roles::SERVICE_ROLE {
            return Ok(Permissions::ALL);
        }
        let (tx, rx) = oneshot::channel();
        self.queue
            .try_send((check, tx))
            .map_err(|_| AuthzError::Unavailable("too many checks waiting".to_owned()))?;
        match tokio::time::timeout(CHECK_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(AuthzError::Unavailable("the checker stopped".to_owned())),
            Err(_) => Err(AuthzError::Unavailable("the check timed out".to_owned())),
        }
    }
}

/// Takes every queued check whenever a connection is free, and runs them as one batch.
async fn batcher(
    pool: Pool,
    connections: usize,
    mut rx: mpsc::Receiver<(Check, Reply)>,
    shutdown: CancellationToken,
) {
    let free = Arc::new(Semaphore::new(connections));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = free.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            first = rx.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run_batch(&pool, batch).await;
            drop(permit);
        });
    }
}

/// Runs one batch and answers each of its checks.
async fn run_batch(pool: &Pool, batch: Vec<(Check, Reply)>) {
    let (checks, replies): (Vec<Check>, Vec<Reply>) = batch.into_iter().unzip();
    metrics::counter!("herald_pg_authz_queries_total").increment(1);
    metrics::counter!("herald_pg_authz_checks_total").increment(checks.len() as u64);
    debug!(checks = checks.len(), "channel policy checks");
    let answers = ask(pool, &checks).await;
    match answers {
        Ok(answers) => {
            for ((reply, answer), check) in replies.into_iter().zip(answers).zip(&checks) {
                let _ = reply.send(Ok(answer.unwrap_or_else(|error| {
                    // A check that failed in the database (a role that does not exist, a policy that
                    // errors) grants nothing.
                    warn!(role = %check.role, topic = %check.topic, error = %error, "a channel policy check failed: nothing is allowed");
                    Permissions::default()
                })));
            }
        }
        Err(e) => {
            herald_core::stats::error("pg_authz");
            warn!(error = %e, checks = checks.len(), "channel policy checks failed");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One round trip: `begin; select herald.authorize(<checks>); rollback`.
async fn ask(
    pool: &Pool,
    checks: &[Check],
) -> Result<Vec<Result<Permissions, String>>, AuthzError> {
    let unavailable = |e: &dyn std::fmt::Display| AuthzError::Unavailable(e.to_string());
    let json = serde_json::to_string(checks).map_err(|e| unavailable(&e))?;
    let sql = authorize_sql(&json);
    let client = pool.get().await.map_err(|e| unavailable(&e))?;
    let messages = match client.simple_query(&sql).await {
        Ok(m) => m,
        Err(e) => {
            // Whatever failed, the connection goes back to the pool outside a transaction.
            let _ = client.batch_execute("rollback").await;
            return Err(unavailable(&e));
        }
    };
    let text = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| AuthzError::Unavailable("herald.authorize returned nothing".to_owned()))?;
    parse_answers(&text, checks.len())
}

/// The statement of one batch.
fn authorize_sql(checks_json: &str) -> String {
    format!(
        "begin; select herald.authorize({}::jsonb)::text; rollback",
        quote_literal(checks_json)
    )
}

/// Reads `herald.authorize`'s answer: one entry per check, in order.
fn parse_answers(
    text: &str,
    expected: usize,
) -> Result<Vec<Result<Permissions, String>>, AuthzError> {
    let answers: Vec<Answer> = serde_json::from_str(text).map_err(|e| {
        AuthzError::Unavailable(format!("unreadable answer of herald.authorize: {e}"))
    })?;
    if answers.len() != expected {
        return Err(AuthzError::Unavailable(format!(
            "herald.authorize answered {} checks of {expected}",
            answers.len()
        )));
    }
    Ok(answers
        .into_iter()
        .map(|a| match a.error {
            Some(error) => Err(error),
            None => Ok(a.permissions),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_needs_broadcast_read_or_presence_read_with_presence_on() {
        let none = Permissions::default();
        assert!(!none.may_join(true));
        let broadcast = Permissions {
            broadcast_read: true,
            ..none
        };
        assert!(broadcast.may_join(false) && broadcast.may_join(true));
        let presence = Permissions {
            presence_read: true,
            ..none
        };
        assert!(presence.may_join(true));
        assert!(!presence.may_join(false));
        let write_only = Permissions {
            broadcast_write: true,
            presence_write: true,
            ..none
        };
        assert!(!write_only.may_join(true));
    }

    #[test]
    fn answers_are_read_in_order_and_errors_kept_per_check() {
        let text = r#"[{"broadcast_read":true,"broadcast_write":false,"presence_read":false,"presence_write":true,"error":null},
                       {"broadcast_read":false,"broadcast_write":false,"presence_read":false,"presence_write":false,"error":"role \"x\" does not exist"}]"#;
        let answers = parse_answers(text, 2).unwrap();
        assert_eq!(
            answers[0],
            Ok(Permissions {
                broadcast_read: true,
                presence_write: true,
                ..Permissions::default()
            })
        );
        assert_eq!(answers[1], Err("role \"x\" does not exist".to_owned()));
        assert!(parse_answers(text, 3).is_err());
        assert!(parse_answers("not json", 1).is_err());
    }

    #[test]
    fn the_batch_is_one_quoted_literal() {
        let checks = vec![Check {
            role: "authenticated".to_owned(),
            claims: r#"{"sub":"o'brien"}"#.to_owned(),
            sub: Some("o'brien".to_owned()),
            topic: "room:1".to_owned(),
            presence: true,
            reads: true,
            writes: true,
        }];
        let json = serde_json::to_string(&checks).unwrap();
        let sql = authorize_sql(&json);
        // The claims JSON sits in a JSON string, so it has backslashes: an escape string literal.
        assert!(
            sql.starts_with("begin; select herald.authorize(E'[{"),
            "{sql}"
        );
        assert!(
            sql.contains(r#""claims":"{\\"sub\\":\\"o''brien\\"}""#),
            "{sql}"
        );
        assert!(sql.ends_with("::jsonb)::text; rollback"), "{sql}");
    }

    #[tokio::test]
    async fn the_service_role_is_not_asked() {
        let (queue, _rx) = mpsc::channel(1);
        let authorizer = Authorizer { queue };
        let check = Check {
            role: herald_core::auth::roles::SERVICE_ROLE.to_owned(),
            claims: "{}".to_owned(),
            sub: None,
            topic: "t".to_owned(),
            presence: false,
            reads: true,
            writes: false,
        };
        assert_eq!(authorizer.check(check).await.unwrap(), Permissions::ALL);
    }
}
