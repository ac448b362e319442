//! A device's secret headers never reach the logs, at any level: its own
//! test binary, since it installs the process's one log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use canon_server::devices::{DeviceConfig, SecretKey};
use common::{Server, world};
use reqwest::Method;
use serde_json::json;

const SECRET: &str = "TOPSECRET-never-logged-9321";

/// Every log line, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn device_secrets_are_absent_from_the_logs_at_every_level() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();
    let config = canon_server::Config {
        devices: DeviceConfig {
            secret_key: Some(SecretKey::parse(&"cd".repeat(32)).unwrap()),
            ..DeviceConfig::default()
        },
        ..common::config()
    };
    let s = Server::start_with(config, |r| r).await;
    let w = world(&s, "acme").await;
    // A device that answers, and one that is not there (502 paths log too).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(|| async { "ok" })).await });
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    for (name, at) in [("up", addr), ("down", closed)] {
        let r = s
            .call(
                Method::POST,
                "/v1/tenants/acme/devices",
                &w.admin,
                Some(
                    json!({"name": name, "endpoint": format!("http://{at}/"), "timeout_ms": 1000,
                            "headers": {"authorization": format!("Bearer {SECRET}"), "x-key": SECRET}}),
                ),
            )
            .await;
        assert_eq!(r.status(), 201);
        s.call(
            Method::GET,
            &format!("/v1/tenants/acme/devices/{name}/api/x?q=1"),
            &w.viewer,
            None,
        )
        .await;
        s.call(
            Method::GET,
            &format!("/v1/tenants/acme/devices/{name}"),
            &w.viewer,
            None,
        )
        .await;
    }
    let logged = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("device"),
        "the test saw the logs: {}",
        &logged[..logged.len().min(500)]
    );
    assert!(!logged.contains(SECRET), "a device secret was logged");
}
