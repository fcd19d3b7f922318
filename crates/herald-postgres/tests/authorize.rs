//! `herald.authorize`, the policy check of private channels, against a real PostgreSQL: its fast
//! pass (every check of a batch in one go) and its careful pass (taken when any check of the batch
//! fails, for example a role the database does not know) give the same answers, reads and writes
//! are asked separately, and the batching checker answers many checks at once.
//!
//! Needs a PostgreSQL: `HERALD_TEST_DATABASE_URL`, which `scripts/test` sets to a throwaway cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_postgres::authz::Authorizer;
use herald_postgres::{Check, Permissions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;
use support::{admin_url, connect, pool};

/// A fresh database with Herald's objects and the per-user room policies of the docs.
async fn database(label: &str) -> String {
    let admin_url = admin_url();
    let admin = connect(&admin_url).await;
    let name = format!("authorize_{label}_{}", std::process::id());
    for sql in [
        format!("drop database if exists {name}"),
        format!("create database {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let mut db = connect(&url).await;
    db.batch_execute(
        "do $$ begin create role authenticated nologin; exception when duplicate_object or unique_violation then null; end $$;",
    )
    .await
    .unwrap();
    herald_postgres::install::install(&mut db, "supabase_realtime")
        .await
        .unwrap();
    db.batch_execute(
        "grant usage on schema realtime to authenticated;
         grant select, insert on realtime.messages to authenticated;
         alter table realtime.messages enable row level security;
         create policy reads on realtime.messages for select to authenticated
           using ((select realtime.topic()) = 'room:' || (select auth.jwt() ->> 'sub'));
         create policy sends on realtime.messages for insert to authenticated
           with check ((select realtime.topic()) = 'room:' || (select auth.jwt() ->> 'sub')
                       and realtime.messages.extension in ('broadcast'));",
    )
    .await
    .unwrap();
    url
}

fn check(role: &str, sub: &str, topic: &str, reads: bool, writes: bool) -> Check {
    Check {
        role: role.to_owned(),
        claims: json!({"role": role, "sub": sub}).to_string(),
        sub: Some(sub.to_owned()),
        topic: topic.to_owned(),
        presence: true,
        reads,
        writes,
    }
}

/// The answers of one `herald.authorize` call, as (br, bw, pr, pw, error?), and whether the fast
/// pass gave them.
async fn ask(
    db: &tokio_postgres::Client,
    checks: &[Check],
) -> (Vec<(bool, bool, bool, bool, bool)>, bool) {
    let tx_json = serde_json::to_string(checks).unwrap();
    db.batch_execute("begin").await.unwrap();
    let row = db
        .query_one(
            "select herald.authorize($1::text::jsonb)::text",
            &[&tx_json],
        )
        .await
        .unwrap();
    db.batch_execute("rollback").await.unwrap();
    let answers: Vec<Value> = serde_json::from_str(row.get::<_, &str>(0)).unwrap();
    let fast = answers.iter().all(|a| a["pass"] == "fast");
    let answers = answers
        .iter()
        .map(|a| {
            let b = |k: &str| a[k].as_bool().unwrap();
            (
                b("broadcast_read"),
                b("broadcast_write"),
                b("presence_read"),
                b("presence_write"),
                !a["error"].is_null(),
            )
        })
        .collect();
    (answers, fast)
}

#[tokio::test]
async fn both_passes_answer_alike_and_reads_and_writes_are_asked_apart() {
    let url = database("passes").await;
    let db = connect(&url).await;
    let good = vec![
        check("authenticated", "alice", "room:alice", true, false),
        check("authenticated", "alice", "room:bob", true, false),
        check("authenticated", "alice", "room:alice", false, true),
        check("authenticated", "bob", "room:alice", false, true),
        check("authenticated", "bob", "room:bob", true, true),
    ];
    let want = vec![
        (true, false, true, false, false),
        (false, false, false, false, false),
        (false, true, false, false, false),
        (false, false, false, false, false),
        (true, true, true, false, false),
    ];
    // The fast pass: every check succeeds.
    assert_eq!(ask(&db, &good).await, (want.clone(), true));
    // The careful pass: one check fails, the others still get their own answers.
    let mut mixed = good.clone();
    mixed.insert(2, check("no_such_role", "x", "room:x", true, true));
    let mut want_mixed = want.clone();
    want_mixed.insert(2, (false, false, false, false, true));
    assert_eq!(ask(&db, &mixed).await, (want_mixed, false));
    // Nothing of either stays behind.
    let left: i64 = db
        .query_one("select count(*) from realtime.messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn the_batching_checker_answers_many_checks_at_once() {
    let url = database("batching").await;
    let pool = pool(&url, 1);
    let shutdown = CancellationToken::new();
    let authorizer = Authorizer::start(pool, 1, shutdown.clone());
    let checks = (0..300).map(|i| {
        let (sub, topic) = (format!("u{i}"), format!("room:u{}", i - i % 2));
        authorizer.check(check("authenticated", &sub, &topic, true, false))
    });
    let answers = futures_util::future::join_all(checks).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let p = answer.unwrap();
        let own = i % 2 == 0;
        assert_eq!(
            p,
            Permissions {
                broadcast_read: own,
                presence_read: own,
                ..Permissions::default()
            },
            "check {i}"
        );
    }
    shutdown.cancel();
}
