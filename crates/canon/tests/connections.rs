//! The per-address connection cap reaches the server from each place a
//! setting can come from (flag, environment, config file), and 0 is refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const TOKEN: &str = "connections-test-operator";

/// Whether a new connection is closed at once, without an answer to the
/// request sent on it.
fn closed_at_accept(port: u16) -> bool {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    !out.starts_with(b"HTTP/1.1 200")
}

/// Starts canon with `args` and `env`, holds `cap` connections, and tells
/// whether one more is closed at accept.
async fn one_more_is_refused(args: &[&str], env: &[(&str, &str)], cap: usize) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
        .arg(format!("sqlite://{}", dir.path().join("canon.db").display()))
        .args(args)
        .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
        .env("CANON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let client = canon_server::http_client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    wait_ready(&client, &format!("http://127.0.0.1:{port}")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held: Vec<TcpStream> = (0..cap)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = closed_at_accept(port);
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    refused
}

#[tokio::test]
async fn the_per_address_cap_is_read_from_flag_environment_and_file() {
    assert!(one_more_is_refused(&["--max-connections-per-address", "2"], &[], 2).await);
    assert!(one_more_is_refused(&[], &[("CANON_MAX_CONNECTIONS_PER_ADDRESS", "2")], 2).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canon.toml");
    std::fs::write(&file, "max_connections_per_address = 2\n").unwrap();
    assert!(one_more_is_refused(&["--config", file.to_str().unwrap()], &[], 2).await);
    // The default (256) leaves room for a third.
    assert!(!one_more_is_refused(&[], &[], 2).await);
}

#[test]
fn a_cap_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections-per-address",
            "0",
            "--database",
        ])
        .arg(format!("sqlite://{}", dir.path().join("canon.db").display()))
        .env("CANON_BOOTSTRAP_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max connections per address must be at least 1"),
        "{stderr}"
    );
}
