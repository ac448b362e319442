//! What is copied, table by table, in dependency order; and what is not,
//! with why.
//!
//! A column added to both schemas later is one line here (`Column::same`):
//! the test `every_column_of_both_schemas_is_carried` fails until it is.

/// How a column's values travel: how they are read from SQLite, the
/// PostgreSQL array type they are sent in, and how the insert turns the
/// array's element into the column's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TEXT on both sides.
    Text,
    /// INTEGER (SQLite) to BIGINT or INTEGER.
    Int,
    /// INTEGER 0/1 (SQLite) to BOOLEAN.
    Bool,
    /// BLOB to BYTEA.
    Bytes,
    /// JSON text to JSONB, spelled as the PostgreSQL store spells it
    /// (`jsonb_text`: NUL escapes kept apart).
    Jsonb,
    /// JSON text to the TEXT rendering of its JSONB value, as the
    /// PostgreSQL store keeps unique values (`($1::JSONB)::TEXT`), so its
    /// look-ups and conflicts find the copied rows.
    JsonbAsText,
}

impl Kind {
    /// The PostgreSQL array type the batch's values of this column are sent as.
    pub(crate) fn array_type(self) -> &'static str {
        match self {
            Kind::Text | Kind::Jsonb | Kind::JsonbAsText => "text[]",
            Kind::Int => "int8[]",
            Kind::Bool => "bool[]",
            Kind::Bytes => "bytea[]",
        }
    }

    /// The value inserted for element `u.{alias}` of the unnested arrays.
    pub(crate) fn target_expr(self, alias: &str) -> String {
        match self {
            Kind::Jsonb => format!("u.{alias}::jsonb"),
            Kind::JsonbAsText => format!("(u.{alias}::jsonb)::text"),
            _ => format!("u.{alias}"),
        }
    }
}

/// One column of a copied table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    /// Its name in PostgreSQL.
    pub(crate) name: &'static str,
    /// The SQLite expression read for it (over the table as `t`, and
    /// `c` for the record's collection where the table joins it).
    pub(crate) source: &'static str,
    /// The SQLite column it carries, if it carries one (None: derived,
    /// e.g. a record's tenant, which SQLite finds through its collection).
    pub(crate) carries: Option<&'static str>,
    /// How its values travel.
    pub(crate) kind: Kind,
}

impl Column {
    /// A column of the same name and meaning on both sides.
    const fn same(name: &'static str, kind: Kind) -> Column {
        Column {
            name,
            source: "",
            carries: Some(name),
            kind,
        }
    }

    /// A PostgreSQL column read from SQLite expression `source`, carrying
    /// SQLite's column `carries` if any.
    const fn from(name: &'static str, kind: Kind, source: &'static str, carries: Option<&'static str>) -> Column {
        Column {
            name,
            source,
            carries,
            kind,
        }
    }

    /// The SQLite expression read for this column.
    pub(crate) fn source_expr(&self) -> String {
        if self.source.is_empty() {
            format!("t.{}", self.name)
        } else {
            self.source.to_owned()
        }
    }
}

/// One copied table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    /// Its name (the same on both sides).
    pub(crate) name: &'static str,
    /// What the SQLite side reads from: the table as `t`, joined as needed.
    pub(crate) from: &'static str,
    /// Its columns.
    pub(crate) columns: &'static [Column],
    /// Some(key): the target already holds the row(s) its migrations made
    /// (the maintenance row) or may hold them from a first start (the
    /// secrets): the source's row replaces it. Such a table does not make
    /// the target count as holding data.
    pub(crate) upsert_on: Option<&'static str>,
}

use Kind::*;

const PLAIN: &str = "main.{} AS t";

/// The copied tables, parents before children (PostgreSQL's one foreign
/// key: devices → tenants).
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "tenants",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("id", Text),
            Column::same("name", Text),
            Column::same("version", Int),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
            Column::same("deleted_at", Int),
            Column::same("deletion_job", Text),
            Column::same("emptied_at", Int),
            Column::same("rate_limit_per_second", Int),
            Column::same("burst", Int),
            Column::same("daily_quota", Int),
        ],
    },
    Table {
        name: "users",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("id", Text),
            Column::same("email", Text),
            Column::same("role", Text),
            Column::same("version", Int),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
        ],
    },
    Table {
        name: "api_keys",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            // The operator's key: NULL in SQLite, '' in PostgreSQL.
            Column::from("tenant_id", Text, "COALESCE(t.tenant_id, '')", Some("tenant_id")),
            Column::same("id", Text),
            Column::same("user_id", Text),
            Column::same("name", Text),
            Column::same("token_hash", Text),
            Column::same("version", Int),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
        ],
    },
    Table {
        name: "collections",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("id", Text),
            Column::same("name", Text),
            Column::same("schema", Text),
            Column::same("unique_fields", Text),
            Column::same("require_if_match", Bool),
            Column::same("version", Int),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
        ],
    },
    Table {
        name: "collection_aliases",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("name", Text),
            Column::same("collection_id", Text),
            Column::same("created_at", Int),
        ],
    },
    Table {
        name: "records",
        from: "main.records AS t JOIN main.collections AS c ON c.id = t.collection_id",
        upsert_on: None,
        columns: &[
            Column::from("tenant_id", Text, "c.tenant_id", None),
            Column::same("collection_id", Text),
            Column::same("id", Text),
            // `body` is the JSON text as Canon wrote it (served as it is);
            // `data` its JSONB, for filters and sorts.
            Column::from("data", Jsonb, "t.data", Some("data")),
            Column::from("body", Text, "t.data", None),
            Column::same("version", Int),
            Column::same("etag", Text),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
        ],
    },
    Table {
        name: "unique_values",
        from: "main.unique_values AS t JOIN main.collections AS c ON c.id = t.collection_id",
        upsert_on: None,
        columns: &[
            Column::from("tenant_id", Text, "c.tenant_id", None),
            Column::same("collection_id", Text),
            Column::same("field", Text),
            Column::same("value", JsonbAsText),
            Column::same("record_id", Text),
        ],
    },
    Table {
        name: "tombstones",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("kind", Text),
            Column::same("scope", Text),
            Column::same("key", Text),
            Column::same("deleted_at", Int),
            Column::same("expires_at", Int),
        ],
    },
    Table {
        name: "jobs",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("id", Text),
            Column::same("kind", Text),
            Column::same("status", Text),
            Column::same("params", Text),
            Column::same("progress_done", Int),
            Column::same("progress_total", Int),
            Column::same("checkpoint", Text),
            Column::same("result", Text),
            Column::same("problem", Text),
            Column::same("attempts", Int),
            // A job running at the copy keeps its owner and lease: the
            // lease runs out and a worker of the new server claims it, as
            // after a crash (docs/jobs.md).
            Column::same("owner", Text),
            Column::same("lease_until", Int),
            Column::same("input_chunks", Int),
            Column::same("input_bytes", Int),
            Column::same("result_chunks", Int),
            Column::same("result_bytes", Int),
            Column::same("created_at", Int),
            Column::same("queued_at", Int),
            Column::same("started_at", Int),
            Column::same("finished_at", Int),
            Column::same("result_expires_at", Int),
        ],
    },
    Table {
        name: "job_blobs",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("job_id", Text),
            Column::same("part", Text),
            Column::same("seq", Int),
            Column::same("bytes", Bytes),
        ],
    },
    Table {
        name: "devices",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("id", Text),
            Column::same("name", Text),
            Column::same("endpoint", Text),
            Column::same("timeout_ms", Int),
            // Sealed under CANON_SECRET_KEY, copied as they are.
            Column::same("headers", Text),
            Column::same("version", Int),
            Column::same("created_at", Int),
            Column::same("updated_at", Int),
            // The TLS trust setting (v12): not secret, copied as it is.
            Column::same("tls_ca_certificate", Text),
            Column::same("tls_certificate_sha256", Text),
        ],
    },
    Table {
        name: "quota_usage",
        from: PLAIN,
        upsert_on: None,
        columns: &[
            Column::same("tenant_id", Text),
            Column::same("day", Int),
            Column::same("used", Int),
        ],
    },
    Table {
        name: "secrets",
        from: PLAIN,
        upsert_on: Some("name"),
        columns: &[
            Column::same("name", Text),
            Column::same("value", Text),
            Column::same("created_at", Int),
        ],
    },
    Table {
        name: "maintenance",
        from: PLAIN,
        upsert_on: Some("id"),
        columns: &[
            Column::same("id", Int),
            Column::same("enabled", Bool),
            Column::same("retry_after_seconds", Int),
            Column::same("message", Text),
            Column::same("version", Int),
            Column::same("updated_at", Int),
        ],
    },
];

/// Tables deliberately not copied, with why (docs/deploy.md, "Moving from
/// SQLite to PostgreSQL").
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "locks",
        "record leases are short-lived and held by clients of the old server; they are released by the move (a client re-acquires)",
    ),
    (
        "idempotency_keys",
        "remembered answers to retried POSTs expire within a day; a retry across the move runs again",
    ),
    (
        "cache_generation",
        "a counter, not data: set on the target to move past both sides' values",
    ),
];

/// Tables each side keeps for itself (its migrations' bookkeeping).
pub(crate) const BOOKKEEPING: &[&str] = &["canon_schema"];

impl Table {
    /// The SQLite query reading the table's rows, columns in order.
    pub(crate) fn select(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(Column::source_expr).collect();
        format!("SELECT {} FROM {}", columns.join(", "), self.from())
    }

    /// What the SQLite side reads from.
    pub(crate) fn from(&self) -> String {
        self.from.replace("{}", self.name)
    }

    /// The PostgreSQL statement inserting one batch: one array parameter per
    /// column, unnested into rows.
    pub(crate) fn insert(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        let params: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 1, c.kind.array_type()))
            .collect();
        let aliases: Vec<String> = (0..self.columns.len()).map(|i| format!("c{i}")).collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .zip(&aliases)
            .map(|(c, a)| c.kind.target_expr(a))
            .collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
            self.name,
            names.join(", "),
            values.join(", "),
            params.join(", "),
            aliases.join(", ")
        );
        if let Some(key) = self.upsert_on {
            let set: Vec<String> = names
                .iter()
                .filter(|n| **n != key)
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            sql.push_str(&format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", ")));
        }
        sql
    }
}
