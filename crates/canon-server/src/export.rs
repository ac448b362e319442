//! The export job: a collection's records, in id order, into a file stored
//! as the job's result chunks (NDJSON or CSV), in constant memory.
//!
//! The records are read a page at a time by id (keyset paging), so a record
//! appears at most once even while others are written; a record created or
//! changed during the export may or may not be in it (an export is not a
//! snapshot; docs/jobs.md). Each result chunk is followed by a checkpoint
//! naming the last id it holds and the next chunk's number, so a retry after
//! a crash resumes there and rewrites only the chunks after it. Chunks are
//! stored pipelined ([`ChunkWriter`]): chunk *k* and the checkpoint of
//! chunk *k − 1* share a commit while chunk *k + 1* is being written.
//!
//! CSV needs its columns before its first row: a first pass over the same
//! records collects them (the `data` fields any record has), then the rows
//! follow in a second pass. The columns are part of the checkpoint.

use canon_http::Problem;
use canon_http::catalogue::ProblemKind;
use canon_store::{
    Cursor, Job, MAX_JOB_CHUNK_BYTES, PageRequest, Progress, RawRecord, Record, RecordQuery, SortOrder, StoreError,
};
use serde_json::{Value, json};

use crate::csv_export::Columns;
use crate::render;
use crate::state::App;
use crate::wire::ExportFormat;
use crate::worker::{Step, lease_until, save};

/// Records read per store call.
const PAGE: usize = 1000;
/// The most `data.<field>` columns a CSV export has; a collection whose
/// records have more distinct fields is exported as NDJSON instead.
pub const MAX_CSV_COLUMNS: usize = 1024;
/// Pages of the CSV column pass between two lease renewals.
const PAGES_PER_RENEWAL: usize = 20;

/// Where an export stands: its checkpoint.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ExportState {
    /// CSV: the columns, once the first pass found them.
    columns: Option<Columns>,
    /// The last id in the chunks stored so far.
    after: Option<String>,
    /// The next result chunk's number.
    seq: i64,
    /// Records in the chunks stored so far.
    written: i64,
    /// Bytes in the chunks stored so far.
    bytes: i64,
    /// The matching records when the export started (its progress total;
    /// records written meanwhile may change what it finds).
    total: Option<i64>,
}

/// What an export job was asked for, as its resource stored it.
struct ExportParams {
    collection_id: String,
    collection: String,
    format: ExportFormat,
    filters: Vec<(String, Value)>,
}

impl ExportParams {
    fn of(job: &Job) -> Result<Self, Step> {
        let p = &job.params;
        let format = serde_json::from_value(p["format"].clone()).map_err(|_| {
            Step::Failed(Problem::new(
                ProblemKind::Internal,
                "The export's format is unreadable.",
            ))
        })?;
        let mut filters: Vec<(String, Value)> = p["filter"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        filters.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            collection_id: p["collection_id"].as_str().unwrap_or_default().to_owned(),
            collection: p["collection"].as_str().unwrap_or_default().to_owned(),
            format,
            filters,
        })
    }

    /// The page of matching records after `after`.
    async fn page(&self, app: &App, after: Option<&str>) -> Result<canon_store::Page<Record>, Step> {
        Ok(app.store.list_records(&self.collection_id, self.query(after)).await?)
    }

    /// The same page, each record's data left as stored JSON text.
    async fn raw_page(&self, app: &App, after: Option<&str>) -> Result<canon_store::Page<RawRecord>, Step> {
        Ok(app
            .store
            .list_raw_records(&self.collection_id, self.query(after))
            .await?)
    }

    fn query(&self, after: Option<&str>) -> RecordQuery {
        RecordQuery {
            page: PageRequest {
                limit: PAGE,
                after: after.map(|id| Cursor {
                    id: id.to_owned(),
                    sort_value: None,
                }),
            },
            filters: self.filters.clone(),
            sort: SortOrder::Id,
        }
    }
}

/// The media type and file extension of an export in `format`.
pub fn file_type(format: ExportFormat) -> (canon_http::media::MediaType, &'static str) {
    match format {
        ExportFormat::Ndjson => (canon_http::media::MediaType::Ndjson, "ndjson"),
        ExportFormat::Csv => (canon_http::media::MediaType::Csv, "csv"),
    }
}

/// Runs the export `job` under `owner`; its result summary names the
/// collection, format, records and bytes.
pub(crate) async fn run(app: &App, job: &Job, owner: &str) -> Result<Value, Step> {
    let params = ExportParams::of(job)?;
    // Deleted while the export waited: 410, not an empty file that would
    // read as an empty collection.
    crate::import::job_collection(app, job).await?;
    let mut state: ExportState = job
        .checkpoint
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    if state.total.is_none() {
        let count = app
            .store
            .count_records(&params.collection_id, params.filters.clone())
            .await?;
        state.total = Some(i64::try_from(count).unwrap_or(i64::MAX));
    }
    if params.format == ExportFormat::Csv && state.columns.is_none() {
        state.columns = Some(csv_columns(app, job, owner, &params, &state).await?);
    }
    let mut buffer = String::new();
    if let Some(columns) = state.columns.as_ref().filter(|c| state.seq == 0 && !c.is_empty()) {
        buffer.push_str(&columns.header());
    }
    // A copy: `state` (the checkpoint, columns included) changes per chunk.
    let columns = state.columns.clone();
    let mut chunks = ChunkWriter {
        app,
        job,
        owner,
        in_flight: None,
        buffer,
        // Paging runs ahead of `state`, which moves only when a chunk is stored.
        cursor: state.after.clone(),
        pending: 0,
    };
    loop {
        // NDJSON is written around the stored JSON text, CSV from the
        // parsed data.
        let more = match columns.as_ref() {
            Some(columns) => {
                let page = params.page(app, chunks.cursor.as_deref()).await?;
                for record in page.items {
                    chunks
                        .line(&mut state, |out| {
                            csv_row(out, &record, columns)?;
                            Ok(record.id)
                        })
                        .await?;
                }
                page.next.is_some()
            }
            None => {
                let page = params.raw_page(app, chunks.cursor.as_deref()).await?;
                for record in page.items {
                    chunks
                        .line(&mut state, |out| {
                            write_ndjson_line(out, &record);
                            Ok(record.id)
                        })
                        .await?;
                }
                page.next.is_some()
            }
        };
        if !more {
            break;
        }
    }
    chunks.finish(&mut state).await?;
    let (media, _) = file_type(params.format);
    Ok(json!({
        "collection": params.collection,
        "format": params.format,
        "media_type": media.essence(),
        "records": state.written,
        "bytes": state.bytes,
    }))
}

/// Appends `record`'s NDJSON line to `out`: the record as the record list
/// shows it ([`render::record`]), written around its stored data text, which
/// is already compact canonical JSON, instead of parsing and re-writing it.
fn write_ndjson_line(out: &mut String, record: &RawRecord) {
    render::write_raw_record(out, record);
    out.push('\n');
}

/// Appends `record`'s CSV row under `columns` to `out`. A record with a
/// field the columns do not have (written after the first pass) fails the
/// export: a row without it would look complete and lose data.
fn csv_row(out: &mut String, record: &Record, columns: &Columns) -> Result<(), Step> {
    let item = render::record(record);
    if !columns.covers(&item) {
        return Err(Step::Failed(Problem::new(
            ProblemKind::StateConflict,
            format!(
                "The record {} gained a field while the CSV export ran, after its columns were chosen; \
                 export again (or as NDJSON, which has no columns).",
                record.id
            ),
        )));
    }
    columns.write_row(out, &item);
    Ok(())
}

/// The full chunk in `buffer`: everything before `end`, where the line
/// that took it past the chunk size starts. That line stays in `buffer`
/// and begins the next chunk.
fn split_chunk(buffer: &mut String, end: usize) -> String {
    let next = buffer.split_off(end);
    std::mem::replace(buffer, next)
}

/// Stores an export's result chunks, pipelined: chunk *k* goes to the store
/// together with the checkpoint of chunk *k − 1* (one group commit) while
/// the job goes on reading and writing chunk *k + 1*. A checkpoint names
/// only chunks already stored, so a retry rewrites at most the chunk after
/// it (a stored chunk of the same number is replaced).
struct ChunkWriter<'a> {
    app: &'a App,
    job: &'a Job,
    owner: &'a str,
    /// The chunk being stored, and the checkpoint true once it is.
    in_flight: Option<Storing>,
    /// The chunk being written.
    buffer: String,
    /// The id of the last record written into `buffer` (or before it).
    cursor: Option<String>,
    /// Records in `buffer`.
    pending: i64,
}

/// A chunk on its way to the store.
struct Storing {
    /// The chunk's write, and the previous chunk's checkpoint.
    task: tokio::task::JoinHandle<(Result<(), StoreError>, Result<(), StoreError>)>,
    /// The checkpoint past this chunk, with its progress.
    checkpoint: (Value, Progress),
}

impl ChunkWriter<'_> {
    /// Writes one record's line into the chunk with `write`, which returns
    /// the record's id. A line that takes the chunk past its size starts
    /// the next chunk, and the full one goes to the store.
    async fn line(
        &mut self,
        state: &mut ExportState,
        write: impl FnOnce(&mut String) -> Result<String, Step>,
    ) -> Result<(), Step> {
        let mark = self.buffer.len();
        let id = write(&mut self.buffer)?;
        if self.buffer.len() > MAX_JOB_CHUNK_BYTES && mark > 0 {
            let chunk = split_chunk(&mut self.buffer, mark);
            let records = std::mem::take(&mut self.pending);
            let after = self.cursor.clone();
            self.send(state, chunk, after, records).await?;
        }
        self.cursor = Some(id);
        self.pending += 1;
        Ok(())
    }

    /// Sends `chunk` (the records up to `after`, `records` of them) to the
    /// store, once the chunk before it is stored; `state` moves past it.
    async fn send(
        &mut self,
        state: &mut ExportState,
        chunk: String,
        after: Option<String>,
        records: i64,
    ) -> Result<(), Step> {
        let previous = self.settle().await?;
        let chunk = chunk.into_bytes();
        let seq = state.seq;
        state.seq += 1;
        state.bytes += chunk.len() as i64;
        state.written += records;
        state.after = after;
        let past_this = (
            checkpoint(state),
            Progress {
                done: state.written,
                total: state.total,
            },
        );
        let store = self.app.store.clone();
        let (tenant_id, job_id, owner) = (self.job.tenant_id.clone(), self.job.id.clone(), self.owner.to_owned());
        let lease = lease_until(self.app);
        // Spawned, so both reach the writer's queue at once (one commit)
        // while this task goes on with the next chunk.
        let task = tokio::spawn(async move {
            let now = canon_store::now_millis();
            let write = store.append_job_result(&tenant_id, &job_id, &owner, seq, chunk, now);
            let save = async {
                let Some((value, progress)) = previous else {
                    return Ok(());
                };
                store
                    .checkpoint(&tenant_id, &job_id, &owner, value, progress, lease, now)
                    .await
                    .map(|_| ())
            };
            tokio::join!(write, save)
        });
        self.in_flight = Some(Storing {
            task,
            checkpoint: past_this,
        });
        Ok(())
    }

    /// Waits for the chunk in flight; returns the checkpoint now true.
    async fn settle(&mut self) -> Result<Option<(Value, Progress)>, Step> {
        let Some(storing) = self.in_flight.take() else {
            return Ok(None);
        };
        let (written, saved) = storing.task.await.map_err(|e| {
            tracing::error!(error = %e, "an export's write task failed");
            Step::Failed(Problem::new(ProblemKind::Internal, "The export's write failed."))
        })?;
        written?;
        saved?;
        Ok(Some(storing.checkpoint))
    }

    /// Sends what is left in the chunk, waits for the last chunk and
    /// stores its checkpoint.
    async fn finish(mut self, state: &mut ExportState) -> Result<(), Step> {
        if !self.buffer.is_empty() || self.pending > 0 {
            let (chunk, after) = (std::mem::take(&mut self.buffer), self.cursor.take());
            let records = std::mem::take(&mut self.pending);
            self.send(state, chunk, after, records).await?;
        }
        if let Some((value, progress)) = self.settle().await? {
            save(self.app, self.job, self.owner, value, progress).await?;
        }
        Ok(())
    }
}

fn checkpoint(state: &ExportState) -> Value {
    serde_json::to_value(state).unwrap_or(Value::Null)
}

/// The CSV columns of every matching record (the first pass), renewing the
/// lease as it goes; more than [`MAX_CSV_COLUMNS`] fails the job.
async fn csv_columns(
    app: &App,
    job: &Job,
    owner: &str,
    params: &ExportParams,
    state: &ExportState,
) -> Result<Columns, Step> {
    let mut columns = Columns::default();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = params.page(app, cursor.as_deref()).await?;
        for record in &page.items {
            columns.add(&render::record(record));
        }
        if columns.data_fields() > MAX_CSV_COLUMNS {
            return Err(Step::Failed(Problem::new(
                ProblemKind::StateConflict,
                format!(
                    "The records have more than {MAX_CSV_COLUMNS} distinct data fields, too many for CSV \
                     columns; export as NDJSON instead."
                ),
            )));
        }
        cursor = page.items.last().map(|r| r.id.clone()).or(cursor);
        pages += 1;
        if pages % PAGES_PER_RENEWAL == 0 {
            let progress = Progress {
                done: 0,
                total: state.total,
            };
            save(app, job, owner, checkpoint(state), progress).await?;
        }
        if page.next.is_none() {
            return Ok(columns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ndjson_line_from_stored_text_is_the_rendered_record() {
        let data = serde_json::json!({"b": "say \"hi\"\n", "a": [1, 2.5, null], "z": {"é": true}});
        let record = Record {
            id: "r-0000000001".into(),
            collection_id: "c".into(),
            data: data.clone(),
            version: 3,
            etag: "e".into(),
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_999_000,
        };
        let raw = RawRecord {
            id: record.id.clone(),
            data: data.to_string(),
            version: 3,
            etag: "e".into(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        };
        let mut line = "already there\n".to_owned();
        write_ndjson_line(&mut line, &raw);
        assert_eq!(line, format!("already there\n{}\n", render::record(&record)));
    }
}
