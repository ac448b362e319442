//! Durability across `kill -9` under both locking modes (docs/decisions.md,
//! "Who may open the SQLite file"). With `exclusive` (the default) the WAL
//! index lives in the process's memory, so after a crash nothing but the WAL
//! itself says which frames are committed: the next start must rebuild the
//! index from it and find every acknowledged update, replace and delete, in
//! either mode. The records are written over and over (not only created), so
//! the WAL holds many versions of each page and a wrong recovery would show
//! an older one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "crash-locking-operator-token";
const RECORDS: usize = 12;
const COLLECTION: &str = "/v1/tenants/acme/collections/c";

/// What one record's writer sent last and had acknowledged last: (seq, was
/// a delete) each.
#[derive(Default, Clone, Copy, Debug)]
struct Writes {
    sent: (u64, bool),
    acked: (u64, bool),
}

type Shared = Arc<Mutex<Vec<Writes>>>;

fn record(base: &str, n: usize) -> String {
    format!("{base}{COLLECTION}/records/r{n}")
}

/// Writes every record (one writer each: merge patches, PUTs, deletes and
/// re-creations) until the server stops answering, noting what was sent and
/// what acknowledged; `seq` goes on from what `writes` holds.
fn start_writers(client: &reqwest::Client, base: &str, writes: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
    (0..RECORDS)
        .map(|n| {
            let (client, url, writes) = (client.clone(), record(base, n), writes.clone());
            tokio::spawn(async move {
                loop {
                    let Writes { acked, .. } = writes.lock().unwrap()[n];
                    let seq = acked.0 + 1;
                    let delete = !acked.1 && seq % 5 == 0;
                    writes.lock().unwrap()[n].sent = (seq, delete);
                    let request = if delete {
                        client.delete(&url)
                    } else if acked.1 || acked.0 == 0 || seq % 2 == 0 {
                        client.put(&url).json(&json!({"seq": seq}))
                    } else {
                        client
                            .patch(&url)
                            .header("content-type", "application/merge-patch+json")
                            .body(json!({"seq": seq}).to_string())
                    };
                    let Ok(r) = request.bearer_auth(TOKEN).send().await else {
                        return;
                    };
                    if !r.status().is_success() {
                        return;
                    }
                    writes.lock().unwrap()[n].acked = (seq, delete);
                }
            })
        })
        .collect()
}

/// Lets the writers run until `at_least` more writes are acknowledged, then
/// kills the server with SIGKILL mid-flow.
async fn kill_9_under_load(child: &mut common::Process, writes: &Shared, at_least: u64) {
    let total = |w: &Shared| w.lock().unwrap().iter().map(|w| w.acked.0).sum::<u64>();
    let (before, start) = (total(writes), Instant::now());
    while total(writes) < before + at_least && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(total(writes) >= before + at_least, "too few writes before the kill");
}

/// Every record is as its last acknowledged write left it, or as the write
/// in flight at the kill did; and the state found becomes the acknowledged
/// one for the next round.
async fn assert_every_acknowledged_write_is_there(client: &reqwest::Client, base: &str, writes: &Shared, when: &str) {
    for n in 0..RECORDS {
        let Writes { sent, acked } = writes.lock().unwrap()[n];
        let r = client.get(record(base, n)).bearer_auth(TOKEN).send().await.unwrap();
        let found = match r.status().as_u16() {
            200 => {
                let body: Value = r.json().await.unwrap();
                let seq = body["data"]["seq"].as_u64().unwrap_or(0);
                let ok = (seq == acked.0 && !acked.1) || (seq == sent.0 && !sent.1);
                assert!(
                    ok,
                    "{when}: r{n} holds seq {seq}; acknowledged {acked:?}, sent {sent:?}"
                );
                (seq, false)
            }
            410 => {
                assert!(
                    acked.1 || sent.1,
                    "{when}: r{n} is gone; acknowledged {acked:?}, sent {sent:?}"
                );
                (if acked.1 { acked.0 } else { sent.0 }, true)
            }
            // Never created: its first PUT was in flight at the kill.
            404 if acked.0 == 0 => (0, false),
            other => panic!("{when}: r{n}: {other}; acknowledged {acked:?}, sent {sent:?}"),
        };
        writes.lock().unwrap()[n] = Writes {
            sent: found,
            acked: found,
        };
    }
}

/// Writes to every record until at least 300 more are acknowledged, then
/// SIGKILLs `child` in the middle of them and lets the writers see it.
async fn kill_9_under_writes(child: &mut common::Process, client: &reqwest::Client, base: &str, writes: &Shared) {
    let writers = start_writers(client, base, writes);
    kill_9_under_load(child, writes, 300).await;
    for w in writers {
        let _ = w.await;
    }
}

/// Starts `canon serve` on `db` again with `env`, and checks that every
/// acknowledged write is there (`when` names the round in failures).
async fn restart(
    db: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    client: &reqwest::Client,
    base: &str,
    writes: &Shared,
    when: &str,
) -> common::Process {
    let child = common::spawn(db, port, TOKEN, env);
    common::wait_ready(client, base).await;
    assert_every_acknowledged_write_is_there(client, base, writes, when).await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_and_deletes_survive_kill_9_in_and_across_both_locking_modes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("canon.db");
    let shm = dir.path().join("canon.db-shm");
    let wal = dir.path().join("canon.db-wal");
    let node = common::Node::start(&db, TOKEN, &[]).await;
    node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
    node.post_ok("/v1/tenants/acme/collections", json!({"name": "c"})).await;
    let (mut child, port, base, client) = (node.child, node.port, node.base, node.client);
    let writes: Shared = Arc::new(Mutex::new(vec![Writes::default(); RECORDS]));

    // Round 1: exclusive (the default), restarted shared.
    kill_9_under_writes(&mut child, &client, &base, &writes).await;
    assert!(
        !shm.exists(),
        "exclusive locking keeps the WAL index in memory, not in a -shm file"
    );
    assert!(
        wal.metadata().is_ok_and(|m| m.len() > 0),
        "the kill left a WAL to recover from"
    );
    let shared = [("CANON_SQLITE_LOCKING", "shared")];
    let mut child = restart(&db, port, &shared, &client, &base, &writes, "exclusive, then shared").await;

    // Round 2: shared, restarted exclusive.
    kill_9_under_writes(&mut child, &client, &base, &writes).await;
    let mut child = restart(&db, port, &[], &client, &base, &writes, "shared, then exclusive").await;

    // Round 3: exclusive, restarted exclusive; then once more with nothing
    // written between two kills (a recovery of a recovered file).
    kill_9_under_writes(&mut child, &client, &base, &writes).await;
    let mut child = restart(&db, port, &[], &client, &base, &writes, "exclusive, then exclusive").await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let mut child = restart(&db, port, &[], &client, &base, &writes, "killed idle, then exclusive").await;
    child.kill().expect("kill -9");
    let _ = child.wait();
}
