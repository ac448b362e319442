//! The import job: every line of a stored NDJSON upload becomes a record.
//!
//! Line *n* of job *j* becomes the record `j-n` (*n* in ten digits, so ids
//! sort in line order and the store appends rather than inserts), written
//! only if absent: a retry after a crash re-creates nothing, since a line
//! whose record exists was done before (`If-None-Match: *` semantics). A
//! line that is not a JSON object, fails the schema, collides on a unique
//! field or exceeds the single-record body limit fails on its own, in the
//! report; the import goes on.
//!
//! Lines are read and checked in batches of [`LINES_PER_BATCH`] and written
//! a batch per transaction, pipelined: while the store writes batch *k*
//! (together with the checkpoint of batch *k − 1*, in one group commit),
//! the worker parses and checks batch *k + 1*. A checkpoint only ever
//! covers batches whose writes were committed and counted, so after a crash
//! the next claim resumes from it and re-runs at most two batches, whose
//! records are already there.

use canon_http::Problem;
use canon_http::catalogue::ProblemKind;
use canon_store::{Collection, Job, Progress, StoreError, StoreResult};
use serde_json::{Value, json};

use crate::state::App;
use crate::worker::{Step, lease_until};

/// Lines per batch: per write transaction and per checkpoint. Bounds the
/// work a crash repeats and how long a cancel takes to stop an import.
pub const LINES_PER_BATCH: usize = 1000;

/// Failed lines kept in an import's report (the rest are only counted).
const MAX_REPORTED_FAILURES: usize = 1000;

/// Where an import stands, as its checkpoint stores it: where to resume
/// reading and what the batches before that point added up to.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ImportState {
    /// The next input chunk to read.
    chunk: i64,
    /// The start of a line cut by the end of the chunk before `chunk`
    /// (base64url).
    carry: String,
    /// Lines of chunk `chunk` already done (a checkpoint inside a chunk).
    skip: usize,
    /// The rest of an over-long line is being skipped: chunk `chunk` starts
    /// inside it (its failure is counted already).
    #[serde(default)]
    skipping: bool,
    /// The number of the next line (1-based).
    line: u64,
    /// Records created.
    created: i64,
    /// Lines that failed.
    failed: i64,
    /// The first failures: line, pointer, problem.
    failures: Vec<Value>,
}

/// Where reading stood when a batch was cut: what a retry resumes from
/// once that batch is committed.
#[derive(Debug, Clone)]
struct Position {
    chunk: i64,
    skip: usize,
    skipping: bool,
    carry: Vec<u8>,
    line: u64,
}

/// A line that passed its checks, waiting to be written with its batch.
struct ReadLine {
    number: u64,
    id: String,
    data: Value,
}

/// The lines of one batch: those to write, and those that already failed
/// their checks (counted only once the batch is committed).
#[derive(Default)]
struct Batch {
    lines: Vec<ReadLine>,
    failed: Vec<(u64, Problem)>,
}

/// What the store answers for one batch in flight: each record's outcome,
/// and whether the checkpoint sent with it was stored.
type Answer = (StoreResult<Vec<StoreResult<()>>>, StoreResult<()>);

/// A batch sent to the store and not yet counted.
struct InFlight {
    answer: tokio::task::JoinHandle<Answer>,
    numbers: Vec<u64>,
    failed: Vec<(u64, Problem)>,
    position: Position,
}

/// The import job's state in the worker: the counts of committed batches,
/// the batch being read and the one being written.
struct Importer<'a> {
    app: &'a App,
    job: &'a Job,
    owner: &'a str,
    collection: Collection,
    state: ImportState,
    batch: Batch,
    in_flight: Option<InFlight>,
}

/// Runs the import `job` under `owner`; its result is the report.
pub(crate) async fn run(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let state: ImportState = job
        .checkpoint
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or(ImportState {
            line: 1,
            ..ImportState::default()
        });
    let collection = job_collection(app, job).await?;
    let mut pending = URL_SAFE_NO_PAD.decode(&state.carry).unwrap_or_default();
    let (mut chunk_no, mut skip, mut line_no, mut skipping) = (state.chunk, state.skip, state.line, state.skipping);
    let max_line = app.config.max_body_bytes;
    let mut importer = Importer {
        app,
        job,
        owner,
        collection,
        state,
        batch: Batch::default(),
        in_flight: None,
    };
    while let Some(chunk) = app.store.read_job_input(&job.tenant_id, &job.id, chunk_no).await? {
        // `pending` is the carried start of a line, then this chunk; the
        // first `skip` of its lines were done before a checkpoint.
        let carry = std::mem::take(&mut pending);
        pending = carry.clone();
        // A retry of this chunk starts in the same state: part of the checkpoint.
        let skipping_at_start = skipping;
        let mut chunk = &chunk[..];
        if skipping {
            // Inside a line already failed as too long: drop it to its end.
            match chunk.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    chunk = &chunk[end + 1..];
                    skipping = false;
                }
                None => chunk = &[],
            }
        }
        pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut index = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            if index >= skip {
                importer.read_line(line_no, &pending[start..start + end]);
                line_no += 1;
                if (index + 1) % LINES_PER_BATCH == 0 {
                    // Mid-chunk: a retry resumes in this chunk, past these lines.
                    let position = Position {
                        chunk: chunk_no,
                        skip: index + 1,
                        skipping: skipping_at_start,
                        carry: carry.clone(),
                        line: line_no,
                    };
                    importer.send(position).await?;
                }
            }
            index += 1;
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > max_line {
            // A line longer than a record may be, without its end yet: it
            // fails now, and the rest of it is skipped as it arrives, so
            // neither memory nor the checkpoint's carry ever holds more
            // than the limit.
            importer.fail_too_long(line_no);
            line_no += 1;
            pending.clear();
            skipping = true;
        }
        chunk_no += 1;
        skip = 0;
        let position = Position {
            chunk: chunk_no,
            skip: 0,
            skipping,
            carry: pending.clone(),
            line: line_no,
        };
        importer.send(position).await?;
    }
    if !pending.is_empty() {
        // The last line, without its newline.
        importer.read_line(line_no, &pending);
        line_no += 1;
    }
    let position = Position {
        chunk: chunk_no,
        skip: 0,
        skipping: false,
        carry: Vec::new(),
        line: line_no,
    };
    importer.send(position).await?;
    importer.settle().await?;
    let state = &mut importer.state;
    state.failures.sort_by_key(|f| f["line"].as_u64());
    Ok(json!({
        "collection": importer.collection.name,
        "lines": line_no - 1,
        "created": state.created,
        "failed": state.failed,
        "failures": state.failures,
        "failures_omitted": (state.failed as usize).saturating_sub(state.failures.len()),
    }))
}

impl Importer<'_> {
    /// Reads line `number`: blank lines are skipped, a line that is too
    /// long, not JSON or fails the schema fails, a good one joins the batch
    /// under the id `{job}-{number:010}`.
    fn read_line(&mut self, number: u64, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let max = self.app.config.max_body_bytes;
        let checked = if line.len() > max {
            Err(Problem::new(
                ProblemKind::ContentTooLarge,
                format!("The line is larger than {max} bytes."),
            ))
        } else {
            crate::json::parse(line)
                .map_err(|e| crate::input::json_problem(&e))
                .and_then(|data| crate::resources::records::validate(self.app, &self.collection, &data).map(|()| data))
        };
        match checked {
            Ok(data) => self.batch.lines.push(ReadLine {
                number,
                id: format!("{}-{number:010}", self.job.id),
                data,
            }),
            Err(problem) => self.batch.failed.push((number, problem)),
        }
    }

    /// Fails line `number`, longer than a record may be, before its end
    /// arrived.
    fn fail_too_long(&mut self, number: u64) {
        let max = self.app.config.max_body_bytes;
        let problem = Problem::new(
            ProblemKind::ContentTooLarge,
            format!("The line is larger than {max} bytes."),
        );
        self.batch.failed.push((number, problem));
    }

    /// Cuts the batch read so far at `position`: counts the batch in flight
    /// (waiting for its commit), then sends this one to the store with the
    /// checkpoint of the one just counted, and returns while it is written.
    async fn send(&mut self, position: Position) -> Result<(), Step> {
        let checkpoint = match self.in_flight.take() {
            Some(before) => {
                let at = before.position.clone();
                self.count(before).await?;
                Some(self.checkpoint_at(&at))
            }
            None => None,
        };
        let batch = std::mem::take(&mut self.batch);
        let numbers = batch.lines.iter().map(|l| l.number).collect();
        let records: Vec<(String, Value)> = batch.lines.into_iter().map(|l| (l.id, l.data)).collect();
        let store = self.app.store.clone();
        let collection = self.collection.clone();
        let (tenant_id, job_id, owner) = (self.job.tenant_id.clone(), self.job.id.clone(), self.owner.to_owned());
        let lease = lease_until(self.app);
        // Spawned, so both reach the writer's queue now (one group commit,
        // records first) while this task goes on reading the next batch.
        let answer = tokio::spawn(async move {
            let write = async {
                if records.is_empty() {
                    return Ok(Vec::new());
                }
                store.create_absent_records(&collection, records).await
            };
            let save = async {
                let Some((value, progress)) = checkpoint else {
                    return Ok(());
                };
                let now = canon_store::now_millis();
                store
                    .checkpoint(&tenant_id, &job_id, &owner, value, progress, lease, now)
                    .await
                    .map(|_| ())
            };
            tokio::join!(write, save)
        });
        self.in_flight = Some(InFlight {
            answer,
            numbers,
            failed: batch.failed,
            position,
        });
        Ok(())
    }

    /// Waits for the batch in flight and counts it.
    async fn settle(&mut self) -> Result<(), Step> {
        match self.in_flight.take() {
            Some(last) => self.count(last).await,
            None => Ok(()),
        }
    }

    /// Waits for `batch`'s commit and adds it to the counts: a record that
    /// exists already was written by an attempt before a crash (created,
    /// not again); a unique collision fails its line.
    async fn count(&mut self, batch: InFlight) -> Result<(), Step> {
        let (written, saved) = batch.answer.await.map_err(|e| {
            tracing::error!(error = %e, "an import's write task failed");
            Step::Failed(Problem::new(ProblemKind::Internal, "The import's write failed."))
        })?;
        saved?;
        for (number, result) in batch.numbers.into_iter().zip(written?) {
            match result {
                Ok(()) | Err(StoreError::ExpectationFailed) => self.state.created += 1,
                Err(e @ StoreError::Conflict { .. }) => self.fail_line(number, &crate::error::store_problem(e)),
                Err(e) => return Err(e.into()),
            }
        }
        for (number, problem) in batch.failed {
            self.fail_line(number, &problem);
        }
        Ok(())
    }

    /// The checkpoint after the batches counted so far, cut at `at`.
    fn checkpoint_at(&mut self, at: &Position) -> (Value, Progress) {
        use base64::Engine as _;
        let state = &mut self.state;
        state.chunk = at.chunk;
        state.skip = at.skip;
        state.skipping = at.skipping;
        state.line = at.line;
        state.carry = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&at.carry);
        let progress = Progress {
            done: state.created + state.failed,
            total: None,
        };
        (serde_json::to_value(&*state).unwrap_or(Value::Null), progress)
    }

    /// Counts line `number` as failed with `problem`, listed while the
    /// report has room.
    fn fail_line(&mut self, number: u64, problem: &Problem) {
        let state = &mut self.state;
        state.failed += 1;
        if state.failures.len() < MAX_REPORTED_FAILURES {
            let body = problem.to_body("", "");
            let pointer = body["errors"][0]["pointer"].as_str().unwrap_or("").to_owned();
            state.failures.push(json!({
                "line": number,
                "pointer": pointer,
                "problem": {"type": body["type"], "title": body["title"], "status": body["status"], "detail": body["detail"], "errors": body.get("errors")},
            }));
        }
    }
}

/// The collection a job works on (`collection_id` and `collection` in its
/// params), by the name it had, following a rename; the job fails with 410
/// when it was deleted.
pub(crate) async fn job_collection(app: &App, job: &Job) -> Result<Collection, Step> {
    let name = job.params["collection"].as_str().unwrap_or_default();
    let mut lookup = app.store.collection(&job.tenant_id, name).await?;
    if !matches!(lookup, canon_store::Lookup::Found(_))
        && let Some(current) = app.store.collection_alias(&job.tenant_id, name).await?
    {
        lookup = app.store.collection(&job.tenant_id, &current).await?;
    }
    match lookup {
        canon_store::Lookup::Found(c) if c.id == job.params["collection_id"].as_str().unwrap_or_default() => Ok(c),
        _ => Err(Step::Failed(Problem::new(
            ProblemKind::Gone,
            "The collection was deleted while the job waited or ran.",
        ))),
    }
}
