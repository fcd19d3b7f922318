//! What Herald installs in the database, idempotently: the publication when it is missing, and the
//! `herald` schema with the `herald.messages` table, `herald.send(...)` and
//! `herald.broadcast_changes(...)`, whose rows travel the replication stream and become broadcasts
//! on commit. Also the clean-up of old message rows.

use tokio_postgres::Client;
use tracing::{info, warn};

use crate::catalog::quote_ident;

/// The schema Herald owns.
pub const SCHEMA: &str = "herald";
/// The table `herald.send` writes to.
pub const MESSAGES: &str = "messages";
/// A one-row table the leader touches every minute, so the slot advances even when no published
/// table changes while the rest of the database writes WAL.
pub const HEARTBEAT: &str = "heartbeat";
/// How long sent rows are kept before clean-up.
pub const MESSAGES_KEEP: &str = "10 minutes";

const INSTALL_SQL: &str = r#"
create schema if not exists herald;
create table if not exists herald.messages (
  id uuid primary key default gen_random_uuid(),
  topic text not null,
  event text not null,
  payload jsonb not null,
  private boolean not null default true,
  inserted_at timestamptz not null default now()
);
create index if not exists messages_inserted_at_idx on herald.messages (inserted_at);
create table if not exists herald.heartbeat (
  id int primary key,
  at timestamptz not null default now()
);
create or replace function herald.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
security definer
set search_path = ''
as $fn$
begin
  begin
    insert into herald.messages (payload, event, topic, private)
    values (
      case when jsonb_typeof(payload) = 'object' and not (payload ? 'id')
           then payload || jsonb_build_object('id', gen_random_uuid())
           else payload end,
      event, topic, private);
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end
$fn$;
create or replace function herald.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW')
returns void
language plpgsql
security definer
set search_path = ''
as $fn$
begin
  if level is distinct from 'ROW' then
    raise exception 'herald.broadcast_changes can only be used in a row-level trigger';
  end if;
  perform herald.send(
    jsonb_build_object(
      'old_record', to_jsonb(old),
      'record', to_jsonb(new),
      'operation', operation,
      'table', table_name,
      'schema', table_schema),
    event_name, topic_name, true);
end
$fn$;
"#;

/// Installs the schema and makes sure the publication exists and carries `herald.messages`.
pub async fn install(client: &mut Client, publication: &str) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Two nodes starting at once install one after the other.
    tx.execute("select pg_advisory_xact_lock(7283551)", &[])
        .await?;
    tx.batch_execute(INSTALL_SQL).await?;
    let exists = tx
        .query_opt(
            "select puballtables from pg_publication where pubname = $1",
            &[&publication],
        )
        .await?;
    let all_tables = match exists {
        Some(row) => row.get::<_, bool>(0),
        None => {
            tx.batch_execute(&format!("create publication {}", quote_ident(publication)))
                .await?;
            info!(
                publication,
                "created the publication (empty: add tables with ALTER PUBLICATION ... ADD TABLE)"
            );
            false
        }
    };
    if !all_tables {
        for table in [MESSAGES, HEARTBEAT] {
            let has = tx
                .query_opt(
                    "select 1 from pg_publication_tables where pubname = $1 and schemaname = 'herald' and tablename = $2",
                    &[&publication, &table],
                )
                .await?;
            if has.is_none() {
                tx.batch_execute(&format!(
                    "alter publication {} add table herald.{table}",
                    quote_ident(publication)
                ))
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Touches the heartbeat row.
pub async fn heartbeat(client: &Client) {
    let sql = "insert into herald.heartbeat (id, at) values (1, now()) \
               on conflict (id) do update set at = excluded.at";
    if let Err(e) = client.execute(sql, &[]).await {
        warn!(error = %e, "could not write the replication heartbeat");
    }
}

/// Deletes sent rows older than [`MESSAGES_KEEP`]; returns how many.
pub async fn clean_messages(client: &Client) -> u64 {
    let sql = format!(
        "delete from herald.messages where inserted_at < now() - interval '{MESSAGES_KEEP}'"
    );
    match client.execute(&sql, &[]).await {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "could not clean herald.messages");
            0
        }
    }
}
