//! One replication consumer per database: a second Herald on the same database and slot waits as
//! standby, and takes over when the leader is killed, continuing from the slot (the slot's
//! acknowledged position moves past what was committed meanwhile).
//!
//! Needs a PostgreSQL with `wal_level=logical`: `HERALD_TEST_DATABASE_URL`, which `scripts/test`
//! sets to a throwaway cluster it starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "leader-test-secret-leader-test-secret-0";

fn admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL").expect(
        "HERALD_TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthz(port: u16) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = out.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// Polls `/healthz` until `pred` holds for its `postgres` object.
fn wait_health(port: u16, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(h) = healthz(port)
            && pred(&h["postgres"])
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(db_url: &str, slot: &str, port: u16, data: &std::path::Path) -> Herald {
    Herald(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(data)
            .args(["--database-url", db_url])
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_PG_SLOT", slot)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
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
        std::process::id() ^ (Instant::now().elapsed().as_nanos() as u32)
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
    wait_health(pa, "the first node to stream", |p| p["streaming"] == true);
    let b = start(&db_url, &slot, pb, db_dir.path());
    wait_health(pb, "the second node to wait as standby", |p| {
        p["ready"] == true && p["standby"] == true
    });
    let h = healthz(pb).unwrap();
    assert_eq!(h["postgres"]["leader"], false, "{h}");
    assert_eq!(h["postgres"]["streaming"], false, "{h}");

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
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = client
            .query_one(
                "select confirmed_flush_lsn > $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
                &[&before, &slot],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not acknowledge the rows committed during the takeover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(b);
    drop(client);
    // The slot stays active until PostgreSQL notices the killed walsender's connection is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = admin
        .execute("select pg_drop_replication_slot($1)", &[&slot])
        .await
    {
        assert!(Instant::now() < deadline, "could not drop the slot: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .batch_execute(&format!("drop database {db} with (force)"))
        .await
        .unwrap();
}
