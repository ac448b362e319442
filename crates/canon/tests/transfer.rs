//! `canon import` and `canon export` end to end: a real `canon serve`
//! process, and the `canon` binary run as a person would run it, its exit
//! status, stdout (the report) and stderr (progress, problems) checked.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const TOKEN: &str = "transfer-operator";

/// A seeded server, stopped when dropped (also when a test fails: its
/// process is a `common::Process`).
struct Server(common::Node);

impl Server {
    /// A server with tenant `acme` and its collection `devices`:
    /// `{"port": integer}` required, `serial` unique.
    async fn start(db: &Path) -> Server {
        let node = common::Node::start(db, TOKEN, &[]).await;
        node.post_ok("/v1/tenants", json!({"name": "acme"})).await;
        let schema = json!({"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]});
        node.post_ok(
            "/v1/tenants/acme/collections",
            json!({"name": "devices", "schema": schema, "unique": ["serial"]}),
        )
        .await;
        Server(node)
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .0
            .client
            .get(format!("{}{path}", self.0.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// The `port` of every record of `devices`, sorted.
    async fn ports(&self) -> Vec<i64> {
        let list = self
            .get("/v1/tenants/acme/collections/devices/records?limit=1000")
            .await;
        assert!(list["next_cursor"].is_null(), "more than one page: {list}");
        let mut ports: Vec<i64> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["data"]["port"].as_i64().unwrap())
            .collect();
        ports.sort();
        ports
    }

    /// The problem the server answers to an import into `collection`.
    async fn import_problem(&self, collection: &str) -> Value {
        let r = self
            .0
            .client
            .post(format!(
                "{}/v1/tenants/acme/collections/{collection}/imports",
                self.0.base
            ))
            .bearer_auth(TOKEN)
            .header("content-type", "application/x-ndjson")
            .body("{\"port\":1}\n")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        r.json().await.unwrap()
    }
}

/// Runs `canon ARGS` with `env` (and none of the caller's `CANON_*`
/// client settings), off the async workers.
async fn canon(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_canon"));
        command
            .args(&args)
            .env_remove("CANON_URL")
            .env_remove("CANON_TOKEN")
            .env_remove("CANON_PROGRESS")
            .env("CANON_LOG", "warn");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("run canon")
    })
    .await
    .unwrap()
}

/// `canon import FILE` into `collection` of `acme` on `server`, by flags.
async fn import(server: &Server, file: &Path, collection: &str) -> Output {
    let args = [
        "import",
        &file.display().to_string(),
        "--url",
        &server.0.base,
        "--token",
        TOKEN,
        "--tenant",
        "acme",
        "--collection",
        collection,
    ];
    canon(args.iter().map(|a| a.to_string()).collect(), Vec::new()).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("canon exited by a signal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_with_failed_lines_exits_1_prints_the_report_and_shows_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    let body = "{\"port\":1,\"serial\":\"A\"}\n\
                {\"port\":2}\n\
                not json\n\
                \n\
                {\"port\":\"three\"}\n\
                {\"port\":4,\"serial\":\"A\"}\n\
                {\"port\":5}";
    std::fs::write(&file, body).unwrap();

    let output = import(&server, &file, "devices").await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // The report's summary, on stdout: counts, then each failed line.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "import into devices: 7 lines, 3 created, 3 failed",
        "{stdout}"
    );
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[1].starts_with("line 3: 400 malformed-body: "), "{stdout}");
    assert!(
        lines[2].starts_with("line 5: 400 schema-violation: /data/port: "),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("line 6: 409 unique-conflict: /data/serial"),
        "{stdout}"
    );

    // Progress, on stderr (not a terminal: plain lines): the upload in
    // bytes, the job in lines against the file's own count of 6 non-blank
    // lines.
    let size = body.len();
    assert!(
        stderr.contains(&format!("upload: {size} B of {size} B (100%), ")),
        "{stderr}"
    );
    assert!(stderr.contains("import accepted: job "), "{stderr}");
    let done = stderr
        .lines()
        .find(|l| l.starts_with("import: 6 of 6 lines (100%), "))
        .unwrap_or_else(|| panic!("no finished import line: {stderr}"));
    assert!(done.contains(" lines/s, done in "), "{done}");

    // What the report says was created is there.
    assert_eq!(server.ports().await, [1, 2, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_good_lines_exits_0_and_every_record_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    let body: String = (0..500)
        .map(|n| format!("{{\"port\":{n},\"serial\":\"S{n}\"}}\n"))
        .collect();
    std::fs::write(&file, &body).unwrap();

    // Server and token from the environment this time (a base URL with a
    // trailing slash is the same server).
    let args = [
        "import",
        &file.display().to_string(),
        "--tenant",
        "acme",
        "--collection",
        "devices",
    ];
    let url = format!("http://127.0.0.1:{}/", server.0.port);
    let env = vec![("CANON_URL", url), ("CANON_TOKEN", TOKEN.to_owned())];
    let output = canon(args.iter().map(|a| a.to_string()).collect(), env).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "import into devices: 500 lines, 500 created, 0 failed\n");
    assert!(stderr.contains("import: 500 of 500 lines (100%), "), "{stderr}");

    assert_eq!(server.ports().await, (0..500).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_by_a_renamed_collections_old_name_follows_its_308() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let r = server
        .0
        .client
        .patch(format!("{}/v1/tenants/acme/collections/devices", server.0.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"name":"probes"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let file = dir.path().join("devices.ndjson");
    std::fs::write(&file, "{\"port\":1}\n{\"port\":2}\n").unwrap();

    let output = import(&server, &file, "devices").await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("/collections/devices/imports moved to ")
            && stderr.contains("/collections/probes/imports: sending the file there"),
        "{stderr}"
    );
    assert_eq!(stdout, "import into probes: 2 lines, 2 created, 0 failed\n");
    // `ports` reads the old name: a GET follows the 301.
    assert_eq!(server.ports().await, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_unknown_collection_exits_2_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    // Large enough that the server refuses while megabytes are still on
    // their way, more than it reads and discards after its answer: the
    // client, which starts sending at once, must still show the problem,
    // not a broken pipe.
    let file = dir.path().join("big.ndjson");
    let body: String = (0..2_500_000).map(|n| format!("{{\"port\":{n}}}\n")).collect();
    assert!(body.len() > 32 << 20);
    std::fs::write(&file, &body).unwrap();

    let output = import(&server, &file, "nosuch").await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "");
    let problem = server.import_problem("nosuch").await;
    assert_eq!(problem["status"], 404);
    let detail = problem["detail"].as_str().unwrap();
    assert!(stderr.contains("canon: the import was refused"), "{stderr}");
    assert!(
        stderr.contains(&format!("404 {}", problem["title"].as_str().unwrap())),
        "{stderr}"
    );
    assert!(stderr.contains(detail), "{stderr}");
    assert!(stderr.contains("type /problems/not-found"), "{stderr}");
    // Nothing was accepted.
    assert_eq!(server.get("/v1/tenants/acme/jobs").await["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_whose_job_is_canceled_exits_2_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    // Long enough (seconds on a debug build) to be canceled while it runs.
    let body: String = (0..60_000).map(|n| format!("{{\"port\":{n}}}\n")).collect();
    std::fs::write(&file, &body).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_canon"))
        .args([
            "import",
            &file.display().to_string(),
            "--url",
            &server.0.base,
            "--token",
            TOKEN,
        ])
        .args(["--tenant", "acme", "--collection", "devices"])
        .env_remove("CANON_PROGRESS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The job's URL, as the client prints it once the upload is accepted.
    let monitor = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
            .await
            .expect("no acceptance within 60 s")
            .expect("canon import ended before its upload was accepted");
        if let Some(rest) = line.strip_prefix("import accepted: job ") {
            break rest.split_once(" (").unwrap().1.trim_end_matches(')').to_owned();
        }
    };
    let r = server
        .0
        .client
        .delete(&monitor)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the import finished before it could be canceled");

    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    let mut rest = Vec::new();
    while let Ok(line) = rx.try_recv() {
        rest.push(line);
    }
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(2), "{rest}");
    assert!(
        rest.contains(&format!("canon: the job ended canceled ({monitor})")),
        "{rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_a_missing_file_exits_3_before_asking_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let output = import(&server, &dir.path().join("nosuch.ndjson"), "devices").await;
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(stderr.contains("nosuch.ndjson: "), "{stderr}");
    assert_eq!(server.get("/v1/tenants/acme/jobs").await["items"], json!([]));
}

/// `canon export` of `collection` to `output`, with `extra` arguments.
async fn export(server: &Server, collection: &str, output: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = [
        "export",
        "--url",
        &server.0.base,
        "--token",
        TOKEN,
        "--tenant",
        "acme",
        "--collection",
        collection,
        "--output",
        &output.display().to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    canon(args, Vec::new()).await
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_collection_to_the_file_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    let body: String = (0..300)
        .map(|n| format!("{{\"port\":{n},\"serial\":\"S{n}\"}}\n"))
        .collect();
    std::fs::write(&file, &body).unwrap();
    assert_eq!(code(&import(&server, &file, "devices").await), 0);

    let out = tempfile::tempdir().unwrap();
    let ndjson = out.path().join("devices.ndjson");
    let output = export(&server, "devices", &ndjson, &[]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("export of devices written to "), "{stdout}");
    assert!(stderr.contains("export accepted: job "), "{stderr}");
    // The job may finish before a poll sees its total: its line ends either way.
    assert!(stderr.contains("export: ") && stderr.contains("done in"), "{stderr}");
    assert!(stderr.contains("download: "), "{stderr}");
    // Every record once, as one JSON line each: the record as the list shows it.
    let mut ports: Vec<i64> = std::fs::read_to_string(&ndjson)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["data"]["port"].as_i64().unwrap()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, (0..300).collect::<Vec<i64>>());

    // CSV: a header row and a row per record; no partial file left
    // beside them.
    let csv = out.path().join("devices.csv");
    let output = export(&server, "devices", &csv, &["--format", "csv"]).await;
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.lines().count(), 301, "{csv_text}");
    assert_eq!(names(out.path()), ["devices.csv", "devices.ndjson"]);

    // A filter: only the records whose field equals the value.
    let one = out.path().join("one.ndjson");
    let output = export(
        &server,
        "devices",
        &one,
        &["--filter", "port=7", "--filter", "serial=S7"],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&one)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["data"], json!({"port": 7, "serial": "S7"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refused_exits_2_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out.ndjson");
    let output = export(&server, "nosuch", &target, &[]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "");
    // What the server answers to that request, printed as it came.
    let r = server
        .0
        .client
        .post(format!("{}/v1/tenants/acme/collections/nosuch/exports", server.0.base))
        .bearer_auth(TOKEN)
        .json(&json!({"format": "ndjson"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error() || r.status().is_server_error());
    let problem: Value = r.json().await.unwrap();
    assert!(stderr.contains("canon: the export was refused"), "{stderr}");
    assert!(stderr.contains(problem["detail"].as_str().unwrap()), "{stderr}");
    assert_eq!(names(out.path()), Vec::<String>::new(), "no file, partial or final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_through_a_symlink_keeps_the_link_and_updates_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    std::fs::write(&file, "{\"port\":5}\n").unwrap();
    assert_eq!(code(&import(&server, &file, "devices").await), 0);

    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("data")).unwrap();
    let real = out.path().join("data/real.ndjson");
    std::fs::write(&real, "old\n").unwrap();
    let link = out.path().join("link.ndjson");
    std::os::unix::fs::symlink("data/real.ndjson", &link).unwrap();

    let output = export(&server, "devices", &link, &[]).await;
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the link stays a link"
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("data/real.ndjson"));
    let written = std::fs::read_to_string(&real).unwrap();
    let record: Value = serde_json::from_str(written.trim_end()).unwrap();
    assert_eq!(record["data"]["port"], 5);
    assert_eq!(names(out.path()), ["data", "link.ndjson"]);
    assert_eq!(names(&out.path().join("data")), ["real.ndjson"], "no partial file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_into_a_fifo_writes_to_its_reader_and_keeps_the_fifo() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let file = dir.path().join("devices.ndjson");
    let body: String = (0..50).map(|n| format!("{{\"port\":{n}}}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    assert_eq!(code(&import(&server, &file, "devices").await), 0);

    let fifo = dir.path().join("out.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let output = export(&server, "devices", &fifo, &[]).await;
    if !reader.is_finished() {
        // Should canon never have opened the FIFO, the reader still waits
        // for a writer: one that closes at once (non-blocking: no hang if
        // the reader is already gone) lets it end with what it got.
        const O_NONBLOCK: i32 = 0o4000;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&fifo);
    }
    let got = reader.join().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "", "the summary goes to stderr when the data is streamed");
    assert!(stderr.contains("export of devices written to "), "{stderr}");
    let mut ports: Vec<i64> = text(&got)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]["port"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, (0..50).collect::<Vec<i64>>());
    assert!(
        std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "still a FIFO"
    );
    assert_eq!(names(dir.path()).iter().filter(|n| n.ends_with(".part")).count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_into_a_directory_exits_3_before_any_job_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("canon.db")).await;
    let out = tempfile::tempdir().unwrap();
    let output = export(&server, "devices", out.path(), &[]).await;
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(stderr.contains("is a directory"), "{stderr}");
    let jobs = server.get("/v1/tenants/acme/jobs").await;
    assert_eq!(jobs["items"], json!([]), "{jobs}");
    assert_eq!(names(out.path()), Vec::<String>::new());
}

/// A fake server on 127.0.0.1 that answers its requests, in order, with
/// `answers` (raw HTTP/1.1 responses), one connection each; returns its
/// base URL.
async fn fake_server(answers: Vec<String>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for answer in answers {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            // The head, then as much body as it announces.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let _ = socket.write_all(answer.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    base
}

/// A listener on 127.0.0.1 that records every byte sent to it; returns its
/// base URL and what it got so far.
async fn recorder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            sink.lock().unwrap().extend_from_slice(b"<connection>");
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                // Up to the end of the head, then hang up: a client that
                // came here must fail, not wait for an answer.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            });
        }
    });
    (base, got)
}

fn answer(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut text = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_on_another_origin_is_not_followed_with_the_token() {
    let out = tempfile::tempdir().unwrap();
    let job = json!({"id": "j1", "status": "queued", "progress": {"done": 0}}).to_string();
    let exports = "/v1/tenants/acme/collections/devices/exports";
    for case in ["308 of the request", "202's monitor", "303 to the result"] {
        let (elsewhere, got) = recorder().await;
        let answers = match case {
            "308 of the request" => vec![answer(
                "308 Permanent Redirect",
                &[("location", format!("{elsewhere}{exports}"))],
                "",
            )],
            "202's monitor" => vec![answer(
                "202 Accepted",
                &[
                    ("location", format!("{elsewhere}/v1/tenants/acme/jobs/j1")),
                    ("content-type", "application/json".to_owned()),
                    ("retry-after", "0".to_owned()),
                ],
                &job,
            )],
            _ => vec![
                answer(
                    "202 Accepted",
                    &[
                        ("location", "/v1/tenants/acme/jobs/j1".to_owned()),
                        ("content-type", "application/json".to_owned()),
                        ("retry-after", "0".to_owned()),
                    ],
                    &job,
                ),
                answer(
                    "303 See Other",
                    &[("location", format!("{elsewhere}/v1/tenants/acme/jobs/j1/result"))],
                    "",
                ),
            ],
        };
        let base = fake_server(answers).await;
        let target = out.path().join("out.ndjson");
        let args: Vec<String> = [
            "export",
            "--url",
            &base,
            "--token",
            TOKEN,
            "--tenant",
            "acme",
            "--collection",
            "devices",
            "--output",
            &target.display().to_string(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let output = canon(args, Vec::new()).await;
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 3, "{case}: {stderr}");
        assert!(
            stderr.contains(&base) && stderr.contains(&elsewhere),
            "{case}: {stderr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let got = text(&got.lock().unwrap());
        assert!(!got.to_ascii_lowercase().contains("authorization"), "{case}: {got}");
        assert_eq!(got, "", "{case}: the other origin heard nothing");
        assert_eq!(names(out.path()), Vec::<String>::new(), "{case}");
    }
}
