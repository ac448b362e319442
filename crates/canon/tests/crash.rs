//! Durability: every write answered 2xx survives `kill -9` of the server.

mod common;

use std::time::{Duration, Instant};

use common::wait_ready;

use serde_json::{Value, json};

const TOKEN: &str = "crash-test-operator";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let node = common::Node::start(&db, TOKEN, &[]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok("/v1/tenants/acme/collections", json!({"name": "c"})).await;
    let (mut child, port, base, client) = (node.child, node.port, node.base, node.client);

    // Writers create records until the server dies; it is killed while
    // they are in full flow.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let sent = client
                    .post(format!("{base}/v1/tenants/acme/collections/c/records"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"writer": w, "n": i}))
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                if r.status().as_u16() != 201 {
                    return;
                }
                let Ok(v) = r.json::<Value>().await else { return };
                if let Some(id) = v["id"].as_str() {
                    acked.lock().unwrap().push(id.to_owned());
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < 200 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    for w in writers {
        let _ = w.await;
    }
    let acknowledged = acked.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 200,
        "only {} writes acknowledged before the kill",
        acknowledged.len()
    );

    let mut child = common::spawn(&db, port, TOKEN, &[]);
    wait_ready(&client, &base).await;
    for id in &acknowledged {
        let r = client
            .get(format!("{base}/v1/tenants/acme/collections/c/records/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "acknowledged record {id} lost");
    }
    let _ = child.kill();
    let _ = child.wait();
}
