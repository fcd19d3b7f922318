//! Durability: every message the HTTP API accepted (202) is still there after `kill -9` and a restart
//! on the same data directory, at the same positions, in the same epoch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SECRET: &str = "durability-secret-durability-secret-01";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn request(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

/// A running herald process, killed (SIGKILL) and reaped when dropped.
struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &std::path::Path, port: u16) -> Herald {
    let herald = Herald(
        Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(data)
            .env("HERALD_JWT_SECRET", SECRET)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200") {
                return herald;
            }
        }
        assert!(Instant::now() < deadline, "herald did not become ready");
        std::thread::yield_now();
    }
}

#[test]
fn accepted_messages_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let token = herald_core::Authenticator::new(SECRET.as_bytes())
        .mint("service_role", None, 600)
        .unwrap();
    let port = free_port();
    let herald = start(data.path(), port);
    let n = 300;
    for i in 0..n {
        let body = json!({"messages": [{"topic": "durable", "event": "e", "payload": {"i": i}}]})
            .to_string();
        assert_eq!(
            request(port, "POST", "/api/broadcast", &token, &body).0,
            202
        );
    }
    let (_, before) = request(
        port,
        "GET",
        "/api/channels/durable/history?limit=1",
        &token,
        "",
    );
    let before: Value = serde_json::from_str(&before).unwrap();
    drop(herald); // SIGKILL: no shutdown, no flush.

    let port = free_port();
    let herald = start(data.path(), port);
    let mut messages = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = request(
            port,
            "GET",
            &format!("/api/channels/durable/history?after={after}&limit=1000"),
            &token,
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["epoch"], before["epoch"],
            "the epoch changed across the restart"
        );
        let page = v["messages"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["offset"].as_u64().unwrap();
        messages.extend(page);
    }
    drop(herald);
    // Default retention keeps the newest 100.
    let kept: Vec<(u64, i64)> = messages
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["payload"]["i"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, i64)> = (n - 100..n).map(|i| (i as u64 + 1, i)).collect();
    assert_eq!(kept, expected);
}
