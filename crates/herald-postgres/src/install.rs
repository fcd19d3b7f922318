//! What Herald installs in the database, idempotently: the publication when it is missing; the
//! `herald` schema with the `herald.messages` table, `herald.send(...)`,
//! `herald.broadcast_changes(...)` and `herald.authorize(...)` (the policy check of private channels);
//! and, only where they are missing, Supabase's `realtime` objects (`realtime.messages`,
//! `realtime.topic()`, `realtime.send(...)`, `realtime.broadcast_changes(...)`) and `auth.uid()`,
//! `auth.role()`, `auth.jwt()`. Rows of both message tables travel the replication stream and become
//! broadcasts on commit. Also the clean-up of old message rows.

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
/// Supabase's schema for broadcasts and their policies.
pub const REALTIME_SCHEMA: &str = "realtime";
/// How the comment of a `realtime.messages` that Herald created begins: only that table is cleaned.
pub const OWNED_COMMENT: &str = "herald:";

/// True for rows of `realtime.messages`, or of one of its partitions (a Supabase database partitions
/// it by day, and a publication without `publish_via_partition_root` names the partitions).
pub fn is_realtime_messages(schema: &str, table: &str) -> bool {
    schema == REALTIME_SCHEMA
        && (table == MESSAGES
            || table.strip_prefix("messages_").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'_')
            }))
}

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

/// Supabase's objects, each created only when missing: nothing that exists (a Supabase database
/// has them all) is replaced or altered. Functions are looked up by name in `pg_proc`.
/// `realtime.messages` is a plain table here (Supabase partitions it by day), with row-level
/// security on and `select, insert` granted to the roles tokens carry, and a comment that tells
/// the janitor it may delete old rows. `realtime.send` and `realtime.broadcast_changes` run with
/// the caller's rights, as Supabase's do: the caller's insert policy on `realtime.messages` applies.
const REALTIME_SQL: &str = r#"
do $install$
declare
  r text;
begin
  if not exists (select 1 from pg_namespace where nspname = 'realtime') then
    create schema realtime;
    for r in select rolname from pg_roles where rolname in ('anon', 'authenticated', 'service_role') loop
      execute format('grant usage on schema realtime to %I', r);
    end loop;
  end if;
  if to_regclass('realtime.messages') is null then
    create table realtime.messages (
      topic text not null,
      extension text not null,
      payload jsonb,
      event text,
      private boolean default false,
      updated_at timestamp without time zone not null default now(),
      inserted_at timestamp without time zone not null default now(),
      id uuid not null default gen_random_uuid(),
      binary_payload bytea,
      primary key (id, inserted_at)
    );
    create index messages_inserted_at_idx on realtime.messages (inserted_at);
    comment on table realtime.messages is 'herald: created by Herald, which deletes rows older than 10 minutes';
    alter table realtime.messages enable row level security;
    for r in select rolname from pg_roles where rolname in ('anon', 'authenticated', 'service_role') loop
      execute format('grant select, insert on realtime.messages to %I', r);
    end loop;
  end if;
  if not exists (select 1 from pg_proc where proname = 'topic' and pronamespace = 'realtime'::regnamespace) then
    create function realtime.topic() returns text
    language sql stable
    as $fn$ select nullif(current_setting('realtime.topic', true), '') $fn$;
  end if;
  if not exists (select 1 from pg_proc where proname = 'send' and pronamespace = 'realtime'::regnamespace) then
    create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
    returns void
    language plpgsql
    set search_path = ''
    as $fn$
    declare
      message_id uuid := gen_random_uuid();
    begin
      begin
        perform set_config('realtime.topic', topic, true);
        insert into realtime.messages (id, payload, event, topic, private, extension)
        values (
          message_id,
          case when jsonb_typeof(payload) = 'object' and not (payload ? 'id')
               then payload || jsonb_build_object('id', message_id)
               else payload end,
          event, topic, private, 'broadcast');
      exception when others then
        raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
      end;
    end
    $fn$;
  end if;
  if not exists (select 1 from pg_proc where proname = 'broadcast_changes' and pronamespace = 'realtime'::regnamespace) then
    create function realtime.broadcast_changes(
      topic_name text, event_name text, operation text, table_name text, table_schema text,
      new record, old record, level text default 'ROW')
    returns void
    language plpgsql
    set search_path = ''
    as $fn$
    begin
      if level is distinct from 'ROW' then
        raise exception 'realtime.broadcast_changes can only be used in a row-level trigger';
      end if;
      perform realtime.send(
        jsonb_build_object(
          'old_record', to_jsonb(old),
          'record', to_jsonb(new),
          'operation', operation,
          'table', table_name,
          'schema', table_schema),
        event_name, topic_name, true);
    end
    $fn$;
  end if;
  if not exists (select 1 from pg_namespace where nspname = 'auth') then
    create schema auth;
    for r in select rolname from pg_roles where rolname in ('anon', 'authenticated', 'service_role') loop
      execute format('grant usage on schema auth to %I', r);
    end loop;
  end if;
  if not exists (select 1 from pg_proc where proname = 'jwt' and pronamespace = 'auth'::regnamespace) then
    create function auth.jwt() returns jsonb
    language sql stable
    as $fn$
      select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                      nullif(current_setting('request.jwt.claims', true), ''))::jsonb
    $fn$;
  end if;
  if not exists (select 1 from pg_proc where proname = 'uid' and pronamespace = 'auth'::regnamespace) then
    create function auth.uid() returns uuid
    language sql stable
    as $fn$
      select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                      nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
    $fn$;
  end if;
  if not exists (select 1 from pg_proc where proname = 'role' and pronamespace = 'auth'::regnamespace) then
    create function auth.role() returns text
    language sql stable
    as $fn$
      select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                      nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    $fn$;
  end if;
end
$install$;
"#;

/// The policy check of private channels (see `authz`). `herald.authorize_batch` answers a batch in
/// one pass: the read probes of every check are inserted by one statement (as Herald's own role),
/// then each check, with the token's settings and role in place, looks its probes up with a static,
/// plan-cached statement (read) and tries an insert per extension in a savepoint (write).
/// `herald.authorize` runs that pass on the whole batch and, when anything in it fails (a role that
/// does not exist, a failing policy), once per check, so that the failure stays with its check.
/// The caller rolls everything back.
const AUTHORIZE_SQL: &str = r#"
create or replace function herald.authorize_batch(checks jsonb) returns jsonb
language plpgsql
as $fn$
declare
  c jsonb;
  n bigint;
  found jsonb;
  answers jsonb[] := array[]::jsonb[];
  b uuid; p uuid;
  br boolean; bw boolean; pr boolean; pw boolean;
  ext text;
begin
  perform set_config('role', 'none', true);
  with ins as (
    insert into realtime.messages (topic, extension, private, event)
    select e.value->>'topic', x.ext, true, e.n::text
    from jsonb_array_elements(checks) with ordinality as e(value, n)
    cross join lateral unnest(
      case when not coalesce((e.value->>'reads')::boolean, true) then array[]::text[]
           when (e.value->>'presence')::boolean then array['broadcast', 'presence']
           else array['broadcast'] end) as x(ext)
    returning id, extension, event)
  select coalesce(jsonb_object_agg(event || extension, id), '{}'::jsonb) into found from ins;
  for c, n in select e.value, e.n from jsonb_array_elements(checks) with ordinality as e(value, n) loop
    br := false; bw := false; pr := false; pw := false;
    perform set_config('realtime.topic', c->>'topic', true);
    perform set_config('request.jwt.claims', c->>'claims', true);
    perform set_config('request.jwt.claim.sub', coalesce(c->>'sub', ''), true);
    perform set_config('request.jwt.claim.role', c->>'role', true);
    perform set_config('role', c->>'role', true);
    b := (found->>(n || 'broadcast'))::uuid;
    p := (found->>(n || 'presence'))::uuid;
    -- A role without the grant reads nothing (rather than failing the batch).
    if (b is not null or p is not null)
       and has_table_privilege(c->>'role', 'realtime.messages', 'select') then
      select b is not null and exists (select from realtime.messages m where m.id = b),
             p is not null and exists (select from realtime.messages m where m.id = p)
        into br, pr;
    end if;
    if coalesce((c->>'writes')::boolean, true) then
      foreach ext in array array['broadcast', 'presence'] loop
        begin
          insert into realtime.messages (topic, extension, private) values (c->>'topic', ext, true);
          raise exception using errcode = 'HR001';
        exception
          when sqlstate 'HR001' then
            if ext = 'broadcast' then bw := true; else pw := true; end if;
          when insufficient_privilege then
            null;
        end;
      end loop;
    end if;
    answers := answers || jsonb_build_object(
      'broadcast_read', br, 'broadcast_write', bw, 'presence_read', pr, 'presence_write', pw, 'error', null,
      'pass', 'fast');
  end loop;
  perform set_config('role', 'none', true);
  return to_jsonb(answers);
end
$fn$;
revoke all on function herald.authorize_batch(jsonb) from public;

create or replace function herald.authorize(checks jsonb) returns jsonb
language plpgsql
as $fn$
declare
  c jsonb;
  answers jsonb[] := array[]::jsonb[];
begin
  begin
    return herald.authorize_batch(checks);
  exception when others then
    null;
  end;
  for c in select value from jsonb_array_elements(checks) loop
    begin
      answers := answers || ((herald.authorize_batch(jsonb_build_array(c)) -> 0) || '{"pass": "careful"}'::jsonb);
    exception when others then
      answers := answers || jsonb_build_object(
        'broadcast_read', false, 'broadcast_write', false, 'presence_read', false,
        'presence_write', false, 'error', sqlerrm);
    end;
  end loop;
  return to_jsonb(answers);
end
$fn$;
-- Only Herald (the owner) runs them.
revoke all on function herald.authorize(jsonb) from public;
"#;

/// Installs the schema and makes sure the publication exists and carries `herald.messages`.
pub async fn install(client: &mut Client, publication: &str) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Two nodes starting at once install one after the other.
    tx.execute("select pg_advisory_xact_lock(7283551)", &[])
        .await?;
    tx.batch_execute(INSTALL_SQL).await?;
    tx.batch_execute(REALTIME_SQL).await?;
    tx.batch_execute(AUTHORIZE_SQL).await?;
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
        for table in [
            format!("{SCHEMA}.{MESSAGES}"),
            format!("{SCHEMA}.{HEARTBEAT}"),
            format!("{REALTIME_SCHEMA}.{MESSAGES}"),
        ] {
            // pg_publication_rel names a partitioned table itself, pg_publication_tables its partitions.
            let has = tx
                .query_opt(
                    "select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid \
                     where p.pubname = $1 and r.prrelid = to_regclass($2)",
                    &[&publication, &table],
                )
                .await?;
            if has.is_none() {
                tx.batch_execute(&format!(
                    "alter publication {} add table {table}",
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

/// Deletes sent rows older than [`MESSAGES_KEEP`] from `herald.messages`, and from
/// `realtime.messages` when Herald created that table; returns how many.
pub async fn clean_messages(client: &Client) -> u64 {
    let mut deleted = 0;
    let sql = format!(
        "delete from herald.messages where inserted_at < now() - interval '{MESSAGES_KEEP}'"
    );
    match client.execute(&sql, &[]).await {
        Ok(n) => deleted += n,
        Err(e) => warn!(error = %e, "could not clean herald.messages"),
    }
    let owned = client
        .query_one(
            "select coalesce(obj_description(to_regclass('realtime.messages'), 'pg_class') like $1, false)",
            &[&format!("{OWNED_COMMENT}%")],
        )
        .await
        .map(|row| row.get::<_, bool>(0));
    match owned {
        Ok(true) => {
            let sql = format!(
                "delete from realtime.messages where inserted_at < now() - interval '{MESSAGES_KEEP}'"
            );
            match client.execute(&sql, &[]).await {
                Ok(n) => deleted += n,
                Err(e) => warn!(error = %e, "could not clean realtime.messages"),
            }
        }
        Ok(false) => {}
        Err(e) => warn!(error = %e, "could not read the comment of realtime.messages"),
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::is_realtime_messages;

    #[test]
    fn realtime_messages_and_its_partitions_are_recognised() {
        assert!(is_realtime_messages("realtime", "messages"));
        assert!(is_realtime_messages("realtime", "messages_2026_12_04"));
        assert!(!is_realtime_messages("realtime", "messages_"));
        assert!(!is_realtime_messages("realtime", "messages_archive"));
        assert!(!is_realtime_messages("realtime", "subscription"));
        assert!(!is_realtime_messages("public", "messages"));
    }
}
