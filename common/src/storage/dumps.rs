//! Dumps of a query to a bucket: the query runs once, on the read-only login with the
//! `$dump-sql` statement timeout, into a table of schema `siphon_dump` numbered by
//! `siphon_rn`, which the export tasks read in that order (resumably), and which is
//! dropped when the export ends. Also what a dump's columns are.

use crate::storage::statements::Statements;
use futures::{SinkExt, StreamExt};
use tokio_postgres::types::Type;

use super::read::sql_error;
use super::Db;
use crate::error::Result;
use crate::model::export::{Column, ColumnKind};

/// The table a query dump of export `export_id` is materialized in.
pub fn table_of(export_id: &str) -> String {
    let safe: String = export_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("siphon_dump.\"q_{safe}\"")
}

/// The kind of a Postgres type, for typed files.
pub fn kind_of(ty: &Type) -> ColumnKind {
    match *ty {
        Type::BOOL => ColumnKind::Bool,
        Type::INT2 => ColumnKind::Int16,
        Type::INT4 | Type::OID => ColumnKind::Int32,
        Type::INT8 => ColumnKind::Int64,
        Type::FLOAT4 => ColumnKind::Float32,
        Type::FLOAT8 => ColumnKind::Float64,
        Type::TIMESTAMPTZ => ColumnKind::TimestampUtc,
        Type::TIMESTAMP => ColumnKind::Timestamp,
        Type::DATE => ColumnKind::Date,
        _ => ColumnKind::Text,
    }
}

/// The decimal a numeric column of a materialized (so unchanging) query table fits:
/// enough digits for its largest whole part and its longest fraction; Text (exact) when
/// that is more than 38 digits or the column holds NaN or an infinity.
async fn decimal_of(client: &impl Statements, table: &str, column: &str) -> Result<ColumnKind> {
    let c = format!("\"{}\"", column.replace('"', "\"\""));
    let row = client
        .row(
            &format!(
                "SELECT coalesce(max(scale({c})), 0)::int,
                        coalesce(max(length(trunc(abs({c}))::text)), 1)::int,
                        coalesce(bool_or({c} IN ('NaN', 'Infinity', '-Infinity')), false)
                 FROM {table}"
            ),
            &[],
        )
        .await?;
    let (scale, whole, special): (i32, i32, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(if special || whole + scale > 38 {
        ColumnKind::Text
    } else {
        ColumnKind::Decimal {
            precision: (whole + scale).max(1) as u8,
            scale: scale as i8,
        }
    })
}

/// Starts the read-only transaction caller-written SQL runs in, with its timeout.
async fn read_only(client: &tokio_postgres::Client, timeout_ms: u64) -> Result<()> {
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}"
        ))
        .await?;
    Ok(())
}

impl Db {
    /// The columns a query answers, checked as `$dump-sql` checks it (one statement,
    /// on the read-only login, read-only); its errors are the caller's (400/403).
    pub async fn describe_query(&self, query: &str, timeout_ms: u64) -> Result<Vec<Column>> {
        let reader = self.reader().await?;
        read_only(&reader, timeout_ms).await?;
        let described = reader.prepare(query).await.map_err(sql_error)?;
        Ok(described
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                kind: kind_of(c.type_()),
            })
            .collect())
    }

    /// Runs `query` once into the export's table (if not done yet): the query runs on
    /// the read-only login with `timeout_ms`, its rows streamed (binary COPY) into a
    /// table the service creates, in one transaction, so a crash leaves no half table.
    /// Answers its columns (without `siphon_rn`).
    pub async fn materialize_query(
        &self,
        export_id: &str,
        query: &str,
        timeout_ms: u64,
    ) -> Result<Vec<Column>> {
        let table = table_of(export_id);
        let mut client = self.client().await?;
        let exists: bool = client
            .row("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await?
            .get(0);
        if !exists {
            let reader = self.reader().await?;
            read_only(&reader, timeout_ms).await?;
            let described = reader.prepare(query).await.map_err(sql_error)?;
            let mut defs = vec!["siphon_rn bigint NOT NULL".to_string()];
            for c in described.columns() {
                let ty: String = client
                    .row("SELECT format_type($1::oid, NULL)", &[&c.type_().oid()])
                    .await?
                    .get(0);
                defs.push(format!("\"{}\" {ty}", c.name().replace('"', "\"\"")));
            }
            let source = reader
                .copy_out(&format!(
                    "COPY (SELECT row_number() OVER () AS siphon_rn, q.* FROM (\n{query}\n) q) TO STDOUT (FORMAT binary)"
                ))
                .await
                .map_err(sql_error)?;
            let c: &mut tokio_postgres::Client = &mut client;
            let tx = c.transaction().await?;
            match tx
                .batch_execute(&format!("CREATE TABLE {table} ({})", defs.join(", ")))
                .await
            {
                Ok(()) => {}
                // Another worker made it meanwhile.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) => {
                    drop(tx);
                    return self.materialized_columns(&table).await;
                }
                Err(e) => return Err(sql_error(e)),
            }
            let sink = tx
                .copy_in::<_, bytes::Bytes>(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
                .await?;
            futures::pin_mut!(source);
            futures::pin_mut!(sink);
            while let Some(chunk) = source.next().await {
                sink.send(chunk.map_err(sql_error)?).await?;
            }
            sink.finish().await?;
            tx.batch_execute(&format!("CREATE INDEX ON {table} (siphon_rn)"))
                .await?;
            tx.commit().await?;
        }
        drop(client);
        self.materialized_columns(&table).await
    }

    /// The columns of a materialized query table (without `siphon_rn`).
    async fn materialized_columns(&self, table: &str) -> Result<Vec<Column>> {
        let mut client = self.client().await?;
        // A prepared statement: inside a transaction, so that behind a transaction
        // pooler it is described and closed on one server connection.
        let tx = client.transaction().await?;
        let described = tx.prepare(&format!("SELECT * FROM {table}")).await?;
        let mut columns = Vec::new();
        for c in described
            .columns()
            .iter()
            .filter(|c| c.name() != "siphon_rn")
        {
            let kind = match *c.type_() {
                Type::NUMERIC => decimal_of(&*tx, table, c.name()).await?,
                ref other => kind_of(other),
            };
            columns.push(Column {
                name: c.name().to_string(),
                kind,
            });
        }
        drop(described);
        tx.commit().await?;
        Ok(columns)
    }

    /// Drops an export's query table, if any.
    pub async fn drop_materialized(&self, export_id: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", table_of(export_id)))
            .await?;
        Ok(())
    }
}
