//! Row-level security and column privileges for subscribers: which roles bypass RLS, which columns a
//! role may SELECT, and which changed rows a (role, claims) group can see. One query per group per
//! table per batch, run on the pool as that role with those claims, never one per subscriber per row.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::SimpleQueryMessage;
use tracing::warn;

use crate::catalog::{Table, quote_ident};
use crate::index::Group;

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum RlsError {
    /// No connection from the pool.
    #[error("no database connection for a row-level security check: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The query failed.
    #[error("row-level security check failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// Which columns of a table a role may read (`None`: all of them).
pub type Visible = Option<Arc<[bool]>>;

/// Caches of role facts, cleared when the catalog changes.
#[derive(Debug, Default)]
pub struct Roles {
    bypass: HashMap<Arc<str>, bool>,
    columns: HashMap<(Arc<str>, u32), Visible>,
}

impl Roles {
    /// Forgets what was learned (tables or grants may have changed).
    pub fn clear(&mut self) {
        self.bypass.clear();
        self.columns.clear();
    }

    /// True when the role sees every row: `service_role`, or a role with BYPASSRLS or superuser.
    pub async fn bypasses(&mut self, pool: &Pool, role: &Arc<str>) -> bool {
        if &**role == herald_core::auth::roles::SERVICE_ROLE {
            return true;
        }
        if let Some(b) = self.bypass.get(role) {
            return *b;
        }
        let found = async {
            let client = pool.get().await?;
            let row = client
                .query_opt(
                    "select rolbypassrls or rolsuper from pg_roles where rolname = $1",
                    &[&&**role],
                )
                .await?;
            Ok::<bool, RlsError>(row.is_some_and(|r| r.get::<_, bool>(0)))
        }
        .await;
        match found {
            Ok(b) => {
                self.bypass.insert(role.clone(), b);
                b
            }
            Err(e) => {
                warn!(role = %role, error = %e, "could not read the role");
                false
            }
        }
    }

    /// The columns of `table` the role may SELECT; `Some` of all false when it may read none (or the
    /// role does not exist).
    pub async fn columns(&mut self, pool: &Pool, role: &Arc<str>, table: &Table) -> Visible {
        // The server's own role reads everything, whether or not the database has such a role.
        if &**role == herald_core::auth::roles::SERVICE_ROLE {
            return None;
        }
        let key = (role.clone(), table.oid);
        if let Some(v) = self.columns.get(&key) {
            return v.clone();
        }
        let found = async {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "select coalesce(has_column_privilege(r.oid, a.attrelid, a.attnum, 'SELECT'), false) \
                     from pg_attribute a left join pg_roles r on r.rolname = $1 \
                     where a.attrelid = $2 and a.attnum > 0 and not a.attisdropped order by a.attnum",
                    &[&&**role, &table.oid],
                )
                .await?;
            Ok::<Vec<bool>, RlsError>(rows.iter().map(|r| r.get::<_, bool>(0)).collect())
        }
        .await;
        let visible: Visible = match found {
            Ok(v) if v.len() == table.columns.len() && v.iter().all(|b| *b) => None,
            Ok(v) if v.len() == table.columns.len() && v.iter().any(|b| *b) => Some(Arc::from(v)),
            Ok(_) => {
                warn!(role = %role, table = %table.log_name(), "the role may read no column of the table (or does not exist): its subscribers get none of its changes");
                Some(Arc::from(vec![false; table.columns.len()]))
            }
            Err(e) => {
                warn!(role = %role, table = %table.log_name(), error = %e, "could not read column privileges");
                return Some(Arc::from(vec![false; table.columns.len()]));
            }
        };
        self.columns.insert(key, visible.clone());
        visible
    }
}

/// A string as an SQL literal (as PostgreSQL's `quote_literal` writes it).
pub fn quote_literal(text: &str) -> String {
    let body = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// How long a check waits for its transaction to become visible before it runs anyway.
const VISIBLE_WAIT: Duration = Duration::from_secs(5);

/// SQL answering whether the recent transaction `xid` (the 32 bits the stream carries) is visible to
/// a snapshot taken now. The epoch is taken from the snapshot's xmax: the transaction is less than
/// 2^31 transactions old.
pub fn visible_sql(xid: u32) -> String {
    format!(
        "select pg_visible_in_snapshot(\
         (q.m - ((q.m % 4294967296) - {xid} + 4294967296) % 4294967296)::text::xid8, q.s) \
         from (select s, pg_snapshot_xmax(s)::text::bigint as m from pg_current_snapshot() as s) q"
    )
}

/// Runs a simple-protocol batch whose last row is one boolean, and returns it.
pub async fn last_bool(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<bool, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    }) == Some("t"))
}

/// The primary keys (as text) among `keys` that the group can SELECT from `table` now.
///
/// `xid` is the transaction the changes come from. A commit reaches the replication stream a moment
/// before other sessions can see it, so the check first waits (polling every millisecond, at most
/// five seconds) until that transaction is visible: a row checked in that moment would otherwise be
/// withheld.
pub async fn visible_rows(
    pool: &Pool,
    group: &Group,
    table: &Table,
    keys: &[Vec<String>],
    xid: Option<u32>,
) -> Result<HashSet<Vec<String>>, RlsError> {
    let pk: Vec<_> = table.columns.iter().filter(|c| c.primary_key).collect();
    if pk.is_empty() || keys.is_empty() {
        return Ok(HashSet::new());
    }
    let select: Vec<String> = pk
        .iter()
        .map(|c| format!("t.{}::text", quote_ident(&c.name)))
        .collect();
    let tuple: Vec<String> = pk
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect();
    let casts: Vec<String> = pk
        .iter()
        .enumerate()
        .map(|(i, c)| format!("u.c{i}::{}", c.sql_type))
        .collect();
    let params: Vec<String> = (1..=pk.len()).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (0..pk.len()).map(|i| format!("c{i}")).collect();
    // A single-column key is looked up with `= any(array)`, which the planner serves from the primary
    // key index (an `in (select ... unnest ...)` may become a scan evaluating the policy on every row).
    let sql = match pk.as_slice() {
        [col] => format!(
            "select {} from {} t where t.{} = any($1::text[]::{}[])",
            select.join(", "),
            table.sql_name(),
            quote_ident(&col.name),
            col.sql_type,
        ),
        _ => format!(
            "select {} from {} t where ({}) in (select {} from unnest({}) as u({}))",
            select.join(", "),
            table.sql_name(),
            tuple.join(", "),
            casts.join(", "),
            params.join(", "),
            aliases.join(", "),
        ),
    };
    let columns: Vec<Vec<String>> = (0..pk.len())
        .map(|i| {
            keys.iter()
                .map(|k| k.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let client = pool.get().await?;
    // Three round trips: begin with the role and claims set (one simple-protocol batch), the check
    // (a statement prepared once per connection), rollback. The check is a primary key lookup; with
    // sequential scans off, the planner uses the key's index even when the table's statistics are
    // stale (a table that grew fast since it was last analysed), instead of evaluating the policy on
    // every row.
    let sub = group.sub.as_deref().unwrap_or("");
    let setup = format!(
        "begin isolation level read committed; set local role {}; set local enable_seqscan = off; select set_config('request.jwt.claims', {}, true), \
         set_config('request.jwt.claim.sub', {}, true), set_config('request.jwt.claim.role', {}, true)",
        quote_ident(&group.role),
        quote_literal(&group.claims),
        quote_literal(sub),
        quote_literal(&group.role),
    );
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let checked = async {
        match xid {
            None => client.batch_execute(&setup).await?,
            Some(xid) => {
                // In READ COMMITTED each statement takes a new snapshot: once one sees the
                // transaction, the check that follows does too.
                let wait = visible_sql(xid);
                let mut visible = last_bool(&client, &format!("{setup}; {wait}")).await?;
                let deadline = tokio::time::Instant::now() + VISIBLE_WAIT;
                while !visible {
                    metrics::counter!("herald_pg_rls_visibility_waits_total").increment(1);
                    if tokio::time::Instant::now() >= deadline {
                        warn!(xid, table = %table.log_name(), "a replicated transaction is still not visible; checking anyway");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    visible = last_bool(&client, &wait).await?;
                }
            }
        }
        let stmt = client.prepare_cached(&sql).await?;
        client.query(&stmt, &refs).await
    }
    .await;
    // Always end the transaction, so the connection goes back to the pool clean.
    let ended = client.batch_execute("rollback").await;
    let rows = checked?;
    ended?;
    Ok(rows
        .iter()
        .map(|r| (0..pk.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::quote_literal;

    #[test]
    fn literals_are_quoted_like_postgres_does() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r#"{"a":"b\\c'"}"#), r#"E'{"a":"b\\\\c''"}'"#);
    }
}
