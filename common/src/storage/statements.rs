//! How every statement with parameters reaches Postgres: unnamed, in one round trip.
//!
//! tokio-postgres' `query`/`execute` first prepare a *named* statement (`s0`, `s1`, ...)
//! in a round trip of its own, then bind and run it in a second. Behind a transaction
//! pooler (RDS Proxy, PgBouncer in `pool_mode = transaction`) that breaks or pins: outside
//! a transaction the pooler may hand the second round trip to another server connection,
//! where `s0` does not exist (PgBouncer before 1.21), or it pins the client to one server
//! connection for good (RDS Proxy). And a named statement closed after its transaction
//! can be left behind on a server connection another client then shares.
//!
//! [`Statements`] sends Parse (unnamed), Bind, Execute and Sync together
//! (`query_typed`): nothing outlives the statement, so every statement may run on any
//! server connection. The parameter types Postgres needs up front come from the Rust
//! types ([`Param`]), as the server would have inferred them for a prepared statement.
//! `common/tests/layers.rs` keeps the named forms out of `storage/`.

use std::future::Future;

use futures::{pin_mut, TryStreamExt};
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Error, GenericClient, Row};

/// A value siphon binds as a statement parameter, with the Postgres type it is sent as.
pub trait Param: ToSql + Sync {
    /// The type named in the Parse message.
    fn pg_type(&self) -> Type;
    /// The value to encode.
    fn as_sql(&self) -> &(dyn ToSql + Sync);
}

/// The Postgres type a Rust type is bound as (what Postgres infers when the statement
/// is prepared and tokio-postgres then accepts for that Rust type).
pub trait PgType {
    /// The type.
    const TYPE: Type;
}

impl<T: PgType + ToSql + Sync> Param for T {
    fn pg_type(&self) -> Type {
        T::TYPE
    }
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        self
    }
}

macro_rules! pg_types {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgType for $rust { const TYPE: Type = Type::$pg; })*
    };
}

pg_types! {
    bool => BOOL,
    i16 => INT2,
    i32 => INT4,
    i64 => INT8,
    f32 => FLOAT4,
    f64 => FLOAT8,
    u32 => OID,
    String => TEXT,
    &str => TEXT,
    &String => TEXT,
    Vec<u8> => BYTEA,
    &[u8] => BYTEA,
    serde_json::Value => JSONB,
    &serde_json::Value => JSONB,
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ,
    chrono::NaiveDateTime => TIMESTAMP,
    chrono::NaiveDate => DATE,
    Vec<String> => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    &[String] => TEXT_ARRAY,
    &[&str] => TEXT_ARRAY,
    Vec<Option<&str>> => TEXT_ARRAY,
    Vec<Option<String>> => TEXT_ARRAY,
    Vec<i64> => INT8_ARRAY,
    Vec<Option<i64>> => INT8_ARRAY,
    &[i64] => INT8_ARRAY,
    Vec<i32> => INT4_ARRAY,
    &[i32] => INT4_ARRAY,
    Vec<bool> => BOOL_ARRAY,
    Vec<serde_json::Value> => JSONB_ARRAY,
    &[serde_json::Value] => JSONB_ARRAY,
    Vec<chrono::DateTime<chrono::Utc>> => TIMESTAMPTZ_ARRAY,
}

impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

impl<T> PgType for Json<T> {
    const TYPE: Type = Type::JSONB;
}

impl<T> PgType for Vec<Json<T>> {
    const TYPE: Type = Type::JSONB_ARRAY;
}

fn typed<'a>(params: &'a [&'a dyn Param]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.as_sql(), p.pg_type())).collect()
}

/// Statements with parameters, each unnamed and in one round trip, on a pooled
/// connection or a transaction alike (see the module docs).
pub trait Statements {
    /// Every row `sql` answers.
    fn rows(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
    /// Exactly one row (an error otherwise).
    fn row(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Row, Error>> + Send;
    /// At most one row (an error on more).
    fn row_opt(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;
    /// Runs `sql` and says how many rows it inserted, updated, deleted or answered.
    fn run(
        &self,
        sql: &str,
        params: &[&dyn Param],
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

impl<C: GenericClient + Sync> Statements for C {
    async fn rows(&self, sql: &str, params: &[&dyn Param]) -> Result<Vec<Row>, Error> {
        self.query_typed(sql, &typed(params)).await
    }

    async fn row(&self, sql: &str, params: &[&dyn Param]) -> Result<Row, Error> {
        self.query_typed_one(sql, &typed(params)).await
    }

    async fn row_opt(&self, sql: &str, params: &[&dyn Param]) -> Result<Option<Row>, Error> {
        self.query_typed_opt(sql, &typed(params)).await
    }

    async fn run(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, Error> {
        let stream = self.query_typed_raw(sql, typed(params)).await?;
        pin_mut!(stream);
        while stream.try_next().await?.is_some() {}
        Ok(stream.rows_affected().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_references_are_bound_as_their_values_type() {
        let none: Option<i64> = None;
        let name = String::from("Patient");
        let r = &name;
        let params: [&dyn Param; 4] = [&none, &"x", &r, &serde_json::json!({})];
        let types: Vec<Type> = typed(&params).into_iter().map(|(_, t)| t).collect();
        assert_eq!(types, vec![Type::INT8, Type::TEXT, Type::TEXT, Type::JSONB]);
    }
}
