//! How stored entities look on the wire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canon_http::date::{civil_from_days, put_digits};
use canon_http::flow::LockInfo;
use canon_http::flow::Representation;
use canon_http::media::MediaType;
use canon_http::validators::{EntityTag, Validators};
use canon_store::{ApiKey, Collection, Lease, Millis, Record, Tenant, User};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::wire;

/// Formats milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn timestamp(ms: Millis) -> String {
    let mut out = String::with_capacity(24);
    write_timestamp(&mut out, ms);
    out
}

/// Appends `ms` (milliseconds since the epoch) as RFC 3339, UTC, with
/// milliseconds: `2026-12-02T08:04:07.290Z`. Every representation carries
/// two of these and exports write millions, so the calendar and the digits
/// are done here (a few dozen instructions) rather than through `time`
/// (hundreds, and its format descriptions a tenth of an export's time);
/// `time` writes the years RFC 3339 has no four digits for.
pub fn write_timestamp(out: &mut String, ms: Millis) {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        // Outside four digits RFC 3339 has no form; `time` writes a sign.
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        out.push_str(&t.format(&format).unwrap_or_default());
        return;
    };
    // Below a day's milliseconds: every part fits in a u32.
    let in_day = u32::try_from(in_day).unwrap_or(0);
    // Written into a stack buffer, then appended once.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut text, 4, 4, year);
    put_digits(&mut text, 7, 2, month);
    put_digits(&mut text, 10, 2, day);
    put_digits(&mut text, 13, 2, in_day / 3_600_000);
    put_digits(&mut text, 16, 2, in_day / 60_000 % 60);
    put_digits(&mut text, 19, 2, in_day / 1000 % 60);
    put_digits(&mut text, 23, 3, in_day % 1000);
    // Only ASCII digits were written into an ASCII template.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// Milliseconds since the epoch as a `SystemTime`.
pub fn system_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A tenant, with its limits as they apply under `config`'s defaults.
pub fn tenant(t: &Tenant, config: &crate::Config) -> Value {
    let own = &t.limits;
    let on = |n: u32| (n > 0).then_some(n);
    let per_second = own.rate_limit_per_second.or(on(config.rate_limit_per_second));
    let mut named = Vec::new();
    for (name, set) in [
        ("rate_limit_per_second", own.rate_limit_per_second.is_some()),
        ("burst", own.burst.is_some()),
        ("daily_quota", own.daily_quota.is_some()),
    ] {
        if set {
            named.push(name.to_owned());
        }
    }
    value(&wire::Tenant {
        name: t.name.clone(),
        created_at: timestamp(t.created_at),
        updated_at: timestamp(t.updated_at),
        limits: wire::TenantLimits {
            rate_limit_per_second: per_second,
            // A burst means something only with a rate.
            burst: per_second.and(own.burst.or(Some(config.rate_limit_burst.max(1)))),
            daily_quota: own.daily_quota.or(on(config.daily_quota)),
            own: named,
        },
    })
}

/// A user.
pub fn user(u: &User) -> Value {
    value(&wire::User {
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role.as_str().to_owned(),
        created_at: timestamp(u.created_at),
        updated_at: timestamp(u.updated_at),
    })
}

/// An API key (never its token).
pub fn api_key(k: &ApiKey) -> Value {
    value(&api_key_wire(k))
}

fn api_key_wire(k: &ApiKey) -> wire::ApiKey {
    wire::ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        created_at: timestamp(k.created_at),
    }
}

/// A new API key with its token, shown this once.
pub fn new_api_key(k: &ApiKey, token: String) -> Value {
    value(&wire::NewApiKeyCreated {
        key: api_key_wire(k),
        token,
    })
}

/// A collection.
pub fn collection(c: &Collection) -> Value {
    value(&wire::Collection {
        name: c.name.clone(),
        schema: c.schema.clone(),
        unique: c.unique.clone(),
        require_if_match: c.require_if_match,
        created_at: timestamp(c.created_at),
        updated_at: timestamp(c.updated_at),
    })
}

/// A record's envelope.
pub fn record(r: &Record) -> Value {
    value(&wire::Record {
        id: r.id.clone(),
        data: r.data.clone(),
        version: r.version,
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
    })
}

/// `body` as JSON. The wire types serialize infallibly (string keys, no
/// non-finite floats), so the fallback is never taken.
fn value<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// A record's validators: its strong tag and modification time.
pub fn record_validators(r: &Record) -> Validators {
    Validators::new(EntityTag::strong(r.etag.clone()), system_time(r.updated_at))
}

/// A record as a JSON representation with its validators: the bytes of
/// [`record`], written straight from the record (no intermediate JSON
/// tree: this is every record GET's body).
pub fn record_representation(r: &Record) -> Representation {
    Representation::new(MediaType::Json, bytes::Bytes::from(record_json(r).into_bytes()))
        .with_validators(record_validators(r))
}

/// [`record`] serialized: the same bytes `serde_json::to_vec(&record(r))`
/// gives (field order, escaping, timestamps), without building it first.
pub fn record_json(r: &Record) -> String {
    // The data through serde_json's writer into bytes, then appended once:
    // a `String` writer checks every piece it is given as UTF-8.
    let data = serde_json::to_vec(&r.data).unwrap_or_default();
    let mut out = String::with_capacity(data.len() + 128);
    out.push_str("{\"id\":");
    write_json_string(&mut out, &r.id);
    out.push_str(",\"data\":");
    out.push_str(std::str::from_utf8(&data).unwrap_or("null"));
    out.push_str(",\"version\":");
    out.push_str(itoa::Buffer::new().format(r.version));
    out.push_str(",\"created_at\":\"");
    write_timestamp(&mut out, r.created_at);
    out.push_str("\",\"updated_at\":\"");
    write_timestamp(&mut out, r.updated_at);
    out.push_str("\"}");
    out
}

/// A record read with its data as stored text ([`canon_store::RawRecord`])
/// as a JSON representation: the same bytes as [`record_representation`]
/// of the parsed record, since the store keeps data as compact JSON, the
/// form the JSON writer produces.
pub fn raw_record_representation(r: &canon_store::RawRecord) -> Representation {
    // Its exact length: a body whose buffer it fills becomes `Bytes` without
    // a second allocation (one with room to spare needs a shared header).
    let mut out = String::with_capacity(raw_record_len(r));
    write_raw_record(&mut out, r);
    Representation::new(MediaType::Json, bytes::Bytes::from(out.into_bytes())).with_validators(raw_record_validators(r))
}

/// [`record_validators`] of a record read with its data as stored text.
pub fn raw_record_validators(r: &canon_store::RawRecord) -> Validators {
    Validators::new(EntityTag::strong(r.etag.clone()), system_time(r.updated_at))
}

/// Appends [`record`] of `r` to `out`, written around its stored data
/// text instead of parsing and re-writing it (a GET, an export's line).
pub fn write_raw_record(out: &mut String, r: &canon_store::RawRecord) {
    out.push_str("{\"id\":");
    write_json_string(out, &r.id);
    out.push_str(",\"data\":");
    out.push_str(&r.data);
    out.push_str(",\"version\":");
    out.push_str(itoa::Buffer::new().format(r.version));
    out.push_str(",\"created_at\":\"");
    write_timestamp(out, r.created_at);
    out.push_str("\",\"updated_at\":\"");
    write_timestamp(out, r.updated_at);
    out.push_str("\"}");
}

/// The length [`write_raw_record`] writes for `r` (a lower bound when the
/// id needs escapes, which ids almost never do).
fn raw_record_len(r: &canon_store::RawRecord) -> usize {
    const FIXED: usize = r#"{"id":"","data":,"version":,"created_at":"","updated_at":""}"#.len();
    FIXED + r.id.len() + r.data.len() + itoa::Buffer::new().format(r.version).len() + 2 * TIMESTAMP_LEN
}

/// The length of a [`write_timestamp`] within four-digit years.
const TIMESTAMP_LEN: usize = "2026-12-02T08:04:07.290Z".len();

/// Appends `text` as a JSON string. Ids are JSON strings as any other:
/// escaped by the JSON writer when there is anything to escape (ids almost
/// never have).
fn write_json_string(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        let _ = serde_json::to_writer(StringWriter(out), text);
    }
}

/// `io::Write` into a `String`, for serde_json's writer (which writes only
/// valid UTF-8).
pub(crate) struct StringWriter<'a>(pub(crate) &'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A lease as the flow reports it in a 423.
pub fn lock_info(lease: &Lease) -> LockInfo {
    LockInfo {
        holder: lease.holder.clone(),
        expires_at: timestamp(lease.expires_at),
    }
}

/// A lease's representation: `{"holder","acquired_at","expires_at"}`.
pub fn lease(lease: &Lease) -> Value {
    value(&wire::Lease {
        holder: lease.holder.clone(),
        acquired_at: timestamp(lease.acquired_at),
        expires_at: timestamp(lease.expires_at),
    })
}

/// A strong entity tag for the entity of `kind` with `id` at `version`.
///
/// Every write of a tenant, user, key or collection bumps its version, and
/// its representation is rendered deterministically from the stored row, so
/// one tag names one sequence of bytes: the tag may be strong. It is a digest
/// so it never reveals internal ids, and it differs between an entity and a
/// re-created one of the same name.
fn version_tag(kind: &str, id: &str, version: i64) -> EntityTag {
    let digest = Sha256::digest(format!("{kind}\n{id}\n{version}").as_bytes());
    EntityTag::strong(digest.iter().take(10).map(|b| format!("{b:02x}")).collect::<String>())
}

/// A tenant's validators: a strong tag from its version, and its modification time.
pub fn tenant_validators(t: &Tenant) -> Validators {
    Validators::new(version_tag("tenant", &t.id, t.version), system_time(t.updated_at))
}

/// A tenant as a JSON representation with its validators.
pub fn tenant_representation(t: &Tenant, config: &crate::Config) -> Representation {
    Representation::json(&tenant(t, config)).with_validators(tenant_validators(t))
}

/// A user's validators: a strong tag from its version, and its modification time.
pub fn user_validators(u: &User) -> Validators {
    Validators::new(version_tag("user", &u.id, u.version), system_time(u.updated_at))
}

/// A user as a JSON representation with its validators.
pub fn user_representation(u: &User) -> Representation {
    Representation::json(&user(u)).with_validators(user_validators(u))
}

/// An API key's validators: a strong tag from its version, and its modification time.
pub fn api_key_validators(k: &ApiKey) -> Validators {
    Validators::new(version_tag("api_key", &k.id, k.version), system_time(k.updated_at))
}

/// An API key (never its token) as a JSON representation with its validators.
pub fn api_key_representation(k: &ApiKey) -> Representation {
    Representation::json(&api_key(k)).with_validators(api_key_validators(k))
}

/// A collection's validators: a strong tag from its version (every change
/// of its settings bumps it), and its modification time.
pub fn collection_validators(c: &Collection) -> Validators {
    Validators::new(version_tag("collection", &c.id, c.version), system_time(c.updated_at))
}

/// A collection as a JSON representation with its validators.
pub fn collection_representation(c: &Collection) -> Representation {
    Representation::json(&collection(c)).with_validators(collection_validators(c))
}

/// A job's monitor: `…/jobs/{id}` of the tenant named `tenant`.
pub fn job_location(tenant: &str, id: &str) -> String {
    format!("/v1/tenants/{tenant}/jobs/{id}")
}

/// A job.
pub fn job(j: &canon_store::Job) -> Value {
    value(&wire::Job {
        id: j.id.clone(),
        kind: j.kind.as_str().to_owned(),
        status: j.status.as_str().to_owned(),
        progress: wire::JobProgress {
            done: j.progress.done,
            total: j.progress.total,
        },
        created_at: timestamp(j.created_at),
        started_at: j.started_at.map(timestamp),
        finished_at: j.finished_at.map(timestamp),
        problem: j.problem.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written digits agree with `time`'s formatting everywhere:
    /// epoch, leap days, ends of years and centuries, the far future, and
    /// before the epoch.
    #[test]
    fn a_record_is_written_as_its_json_tree_would_be() {
        let make = |id: &str, data: serde_json::Value| Record {
            id: id.into(),
            collection_id: "c".into(),
            data,
            version: 7,
            etag: "e".into(),
            created_at: 1_700_000_000_123,
            updated_at: 1_800_000_000_000,
        };
        for r in [
            make(
                "r1",
                serde_json::json!({"z": 1, "a": [1.5, "x\"y", null], "m": {"é": "\u{1}"}}),
            ),
            make("we\"ird\\id", serde_json::json!({})),
            make("tab\tand\u{7f}é", serde_json::json!({})),
        ] {
            assert_eq!(record_json(&r).into_bytes(), serde_json::to_vec(&record(&r)).unwrap());
            // Read with its stored text (what the store writes: the compact form).
            let raw = canon_store::RawRecord {
                id: r.id.clone(),
                data: r.data.to_string(),
                version: r.version,
                etag: r.etag.clone(),
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            let mut text = String::new();
            write_raw_record(&mut text, &raw);
            assert_eq!(text, record_json(&r));
            // The length is exact for ids without escapes, a lower bound otherwise.
            let escapes = r.id.contains(['"', '\\', '\t']);
            assert!(raw_record_len(&raw) == text.len() || escapes && raw_record_len(&raw) < text.len());
        }
        for version in [1, 9, 10, 123_456_789_012] {
            let raw = canon_store::RawRecord {
                id: "01a24283-e592-7444-b028-eb2b41d74fc2".into(),
                data: r#"{"serial":"SN-1"}"#.into(),
                version,
                etag: "e".into(),
                created_at: 0,
                updated_at: 253_402_300_799_999,
            };
            let mut text = String::new();
            write_raw_record(&mut text, &raw);
            assert_eq!(raw_record_len(&raw), text.len(), "version {version}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        let by_time = |ms: Millis| {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("in range");
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&format).expect("formats")
        };
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_764_662_647_290), "2025-12-02T08:04:07.290Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
        let mut ms: Millis = -62_135_596_800_000; // 0001-01-01
        while ms < 253_402_300_799_999 {
            assert_eq!(timestamp(ms), by_time(ms), "{ms}");
            ms += 86_399_999_937; // ~1000 days less a little: walks every field
        }
        assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Years without four digits, and year 0, go through `time`'s path or ours alike.
        for ms in [-62_167_219_200_001, -62_167_219_200_000] {
            assert_eq!(timestamp(ms), by_time(ms), "{ms}");
        }
    }
}
