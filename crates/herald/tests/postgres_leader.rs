//! One replication consumer per database: a second Herald on the same database and slot waits as
//! standby, and takes over when the leader is killed, continuing from the slot (the slot's
//! acknowledged position moves past what was committed meanwhile). A client that subscribed on the
//! standby is confirmed once that node streams, and then receives the changes.
//!
//! Needs a PostgreSQL with `wal_level=logical`: `HERALD_TEST_DATABASE_URL`, which `scripts/test`
//! sets to a throwaway cluster it starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Herald, eventually, free_port, healthz};

const SECRET: &str = "leader-test-secret-leader-test-secret-0";

fn admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL").expect(
        "HERALD_TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    )
}

/// Waits until `pred` holds for the `postgres` object of the node's `/healthz`.
async fn wait_health(port: u16, what: &str, pred: impl Fn(&Value) -> bool) {
    eventually(what, Duration::from_secs(30), || async {
        healthz(port).filter(|h| pred(&h["postgres"]))
    })
    .await;
}

fn start(db_url: &str, slot: &str, port: u16, data: &std::path::Path) -> Herald {
    Herald::start(
        port,
        data,
        &["--database-url", db_url],
        &[("HERALD_JWT_SECRET", SECRET), ("HERALD_PG_SLOT", slot)],
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins `realtime:items` on `port` with a postgres_changes binding on `items`.
async fn subscribe(port: u16) -> Ws {
    use futures_util::SinkExt;
    let token = herald_core::Authenticator::new(SECRET.as_bytes())
        .mint("service_role", None, 3600)
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/socket/websocket?apikey={token}&vsn=2.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let join = serde_json::json!(["1", "1", "realtime:items", "phx_join", {
        "config": {"broadcast": {"self": false}, "presence": {"key": ""}, "private": false,
                   "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items"}]},
        "access_token": token}]);
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        join.to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// The next frame whose event is `event`, within `within`.
async fn next_event(ws: &mut Ws, event: &str, within: Duration) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {event} frame in time"))
            .expect("socket closed")
            .unwrap();
        if let Ok(text) = msg.to_text()
            && let Ok(frame) = serde_json::from_str::<Value>(text)
            && frame[3] == event
        {
            return frame;
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_waits_as_standby_and_takes_over() {
    let admin_url = admin_url();
    let admin = connect(&admin_url).await;
    let suffix = format!(
        "{:x}",
        std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
    );
    let db = format!("herald_leader_{suffix}");
    let slot = format!("herald_leader_{suffix}");
    admin
        .batch_execute(&format!("create database {db}"))
        .await
        .unwrap();
    let db_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("unexpected URL {admin_url}"),
    };
    let client = connect(&db_url).await;
    client
        .batch_execute(
            "create table items (id bigserial primary key, body text);
             create publication supabase_realtime for table items;",
        )
        .await
        .unwrap();

    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (free_port(), free_port());
    let mut a = start(&db_url, &slot, pa, da.path());
    wait_health(pa, "the first node to stream", |p| p["streaming"] == true).await;
    let b = start(&db_url, &slot, pb, db_dir.path());
    wait_health(pb, "the second node to wait as standby", |p| {
        p["ready"] == true && p["standby"] == true
    })
    .await;
    let h = healthz(pb).unwrap();
    assert_eq!(h["postgres"]["leader"], false, "{h}");
    assert_eq!(h["postgres"]["streaming"], false, "{h}");
    // A client of the standby joins; its subscription waits until that node streams.
    let mut sub = subscribe(pb).await;
    let reply = next_event(&mut sub, "phx_reply", Duration::from_secs(10)).await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");

    // The leader dies; rows committed meanwhile are consumed by the node that takes over.
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let before: String = client
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("insert into items (body) select 'row ' || g from generate_series(1, 50) g")
        .await
        .unwrap();
    wait_health(pb, "the standby to take over", |p| {
        p["leader"] == true && p["streaming"] == true
    })
    .await;
    let confirmed = next_event(&mut sub, "system", Duration::from_secs(30)).await;
    assert_eq!(confirmed[4]["status"], "ok", "{confirmed}");
    assert_eq!(
        confirmed[4]["message"], "Subscribed to PostgreSQL",
        "{confirmed}"
    );
    client
        .batch_execute("insert into items (body) values ('after the takeover')")
        .await
        .unwrap();
    let change = loop {
        let c = next_event(&mut sub, "postgres_changes", Duration::from_secs(30)).await;
        if c[4]["data"]["record"]["body"] == "after the takeover" {
            break c;
        }
    };
    assert_eq!(change[4]["data"]["type"], "INSERT", "{change}");
    eventually(
        "the new leader to acknowledge the rows committed during the takeover",
        Duration::from_secs(30),
        || async {
            let row = client
                .query_one(
                    "select confirmed_flush_lsn > $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
                    &[&before, &slot],
                )
                .await
                .unwrap();
            row.get::<_, bool>(0).then_some(())
        },
    )
    .await;
    drop(sub);
    drop(b);
    drop(client);
    // The slot stays active until PostgreSQL notices the killed walsender's connection is gone.
    eventually(
        "the slot to be dropped",
        Duration::from_secs(30),
        || async {
            admin
                .execute("select pg_drop_replication_slot($1)", &[&slot])
                .await
                .ok()
        },
    )
    .await;
    admin
        .batch_execute(&format!("drop database {db} with (force)"))
        .await
        .unwrap();
}
