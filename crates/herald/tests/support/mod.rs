//! What the binary's integration tests share: free ports, HTTP requests to a running node, the
//! `herald` process (killed with SIGKILL when dropped), and waiting for state that can only be polled.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; `(status, body)`, or `None` when nothing answers.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

/// One HTTP/1.1 request that must be answered.
pub fn request(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    try_request(port, method, path, token, body).expect("no HTTP answer")
}

/// `GET /healthz`, when the node answers.
pub fn healthz(port: u16) -> Option<Value> {
    let (status, body) = try_request(port, "GET", "/healthz", "", "")?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// A running `herald serve`, killed (SIGKILL) and reaped when dropped.
pub struct Herald(pub Child);

impl Herald {
    /// Starts the binary on `port` with `data` as its data directory, plus `args` and `env`.
    pub fn start(port: u16, data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Herald {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(data)
            .args(args)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Herald(cmd.spawn().unwrap())
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it gives a value, failing after `within`. For state that offers no
/// notification (a node's `/healthz`, a database catalog); events are awaited, not polled.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
