//! A row-level security check for a replicated transaction waits until that transaction is visible
//! to other sessions. PostgreSQL writes a commit to the WAL (and so to the replication stream) a
//! moment before it shows the transaction to new snapshots; a check in that moment must not
//! withhold the row.
//!
//! Needs a PostgreSQL: `HERALD_TEST_DATABASE_URL`, which `scripts/test` sets to a throwaway cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_postgres::Group;
use herald_postgres::catalog::Catalog;
use herald_postgres::rls::{last_bool, visible_rows, visible_sql};

mod support;
use support::{admin_url, connect, pool};

#[tokio::test]
async fn a_check_sees_the_row_of_a_transaction_that_becomes_visible_after_it_started() {
    let url = admin_url();
    let admin = connect(&url).await;
    admin
        .batch_execute(
            "drop publication if exists vis_pub; drop table if exists public.vis_items; \
             do $$ begin create role vis_reader nologin; exception when duplicate_object then null; end $$; \
             create table public.vis_items (id int primary key, owner text not null); \
             alter table public.vis_items enable row level security; \
             create policy own on public.vis_items for select to vis_reader \
               using (owner = current_setting('request.jwt.claim.sub', true)); \
             grant select on public.vis_items to vis_reader; \
             create publication vis_pub for table public.vis_items;",
        )
        .await
        .unwrap();
    let catalog = Catalog::load(&admin, "vis_pub").await.unwrap();
    let table = catalog.table("public", "vis_items").unwrap().clone();

    // The writer's transaction is open: no other session sees its row yet.
    let writer = connect(&url).await;
    writer
        .batch_execute("begin; insert into public.vis_items values (1, 'alice')")
        .await
        .unwrap();
    let xid: u64 = writer
        .query_one("select pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    let xid = xid as u32;
    let reader = connect(&url).await;
    assert!(!last_bool(&reader, &visible_sql(xid)).await.unwrap());

    // The check starts while the transaction is still invisible...
    let pool = pool(&url, 2);
    let group = Group {
        role: Arc::from("vis_reader"),
        claims: Arc::from(r#"{"sub":"alice","role":"vis_reader"}"#),
        sub: Some(Arc::from("alice")),
    };
    let check = {
        let (pool, table) = (pool.clone(), table.clone());
        tokio::spawn(async move {
            visible_rows(&pool, &group, &table, &[vec!["1".to_string()]], Some(xid)).await
        })
    };
    // ...and is seen waiting for it (its session is inside the check's transaction, having asked
    // whether the writer's transaction is visible yet).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = reader
            .query_one(
                "select count(*) from pg_stat_activity \
                 where query like '%pg_visible_in_snapshot%' and pid <> pg_backend_pid() \
                   and state = 'idle in transaction'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !check.is_finished(),
            "the check did not wait for the transaction"
        );
        assert!(Instant::now() < deadline, "the check never started");
        tokio::task::yield_now().await;
    }

    // The commit makes the row visible, and the check reports it.
    writer.batch_execute("commit").await.unwrap();
    assert!(last_bool(&reader, &visible_sql(xid)).await.unwrap());
    let seen = tokio::time::timeout(Duration::from_secs(10), check)
        .await
        .expect("the check did not finish after the commit")
        .unwrap()
        .unwrap();
    assert!(
        seen.contains(&vec!["1".to_string()]),
        "the row was withheld: {seen:?}"
    );

    // A check without a transaction to wait for runs at once, and the policy still applies.
    let bob = Group {
        role: Arc::from("vis_reader"),
        claims: Arc::from(r#"{"sub":"bob","role":"vis_reader"}"#),
        sub: Some(Arc::from("bob")),
    };
    let seen = visible_rows(&pool, &bob, &table, &[vec!["1".to_string()]], Some(xid))
        .await
        .unwrap();
    assert!(seen.is_empty(), "bob must not see alice's row: {seen:?}");
    admin
        .batch_execute("drop publication vis_pub; drop table public.vis_items;")
        .await
        .unwrap();
}
