//! `_typeFilter` end to end against a real Postgres: each case of `type_filter/cases.rs`
//! is parsed (`exporting::type_filter`), compiled (`storage::filter`), run as
//! `SELECT id FROM <table> WHERE <condition> ORDER BY id` over the rows of
//! `type_filter/fixtures.rs`, and must select exactly the expected ids. Random
//! `_typeFilter`s that parse must compile to SQL Postgres runs without error.
//!
//! Postgres is found through `DATABASE_URL`, else `infra/local/local.env` (written by
//! `make up`); without either the tests fail. Each test works in its own scratch
//! database `siphon_tf_<uuid>`, dropped at the end.

#[path = "type_filter/cases.rs"]
mod cases;
#[path = "type_filter/fixtures.rs"]
mod fixtures;
#[path = "type_filter/gen.rs"]
mod gen;
#[path = "type_filter/quoted.rs"]
mod quoted;

use std::collections::BTreeSet;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use siphon::exporting::type_filter::parse_type_filters;
use siphon::storage::filter::{filter_condition, Columns};
use siphon::storage::resources::table_ddl;
use siphon::storage::DbConfig;
use siphon::ResourceType;

/// `DATABASE_URL`, else the one in `infra/local/local.env`; panics when neither is there.
fn database_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/local/local.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "DATABASE_URL is not set and {} is unreadable ({e}): run `make up`",
            path.display()
        )
    });
    text.lines()
        .find_map(|l| l.trim().strip_prefix("DATABASE_URL="))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no DATABASE_URL in {}", path.display()))
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let cfg = DbConfig::from_url(url).expect("a valid DATABASE_URL");
    let (client, conn) = cfg
        .pg_config()
        .connect(cfg.tls().unwrap())
        .await
        .expect("connect to Postgres");
    tokio::spawn(conn);
    client
}

/// A scratch database holding the fixtures: (admin client, client, name).
async fn scratch() -> (tokio_postgres::Client, tokio_postgres::Client, String) {
    let admin_url = database_url();
    let admin = connect(&admin_url).await;
    let name = format!("siphon_tf_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the scratch database");
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{name}"));
    let db = connect(url.as_str()).await;
    let mut types = BTreeSet::new();
    for (ty, id, ts, resource) in fixtures::rows() {
        let ty = ResourceType::parse(ty).unwrap();
        if types.insert(ty.clone()) {
            db.batch_execute(&table_ddl(&ty)).await.unwrap();
        }
        db.execute(
            &format!(
                "INSERT INTO {} (id, txid, ts, status, resource) VALUES ($1, 0, $2, 'created', $3)",
                ty.table_sql()
            ),
            &[&id, &fixtures::at(ts), &resource],
        )
        .await
        .unwrap();
    }
    (admin, db, name)
}

async fn drop_scratch(admin: tokio_postgres::Client, db: tokio_postgres::Client, name: &str) {
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the scratch database");
}

/// The ids of `ty` rows that pass the compiled `_typeFilter` values.
async fn select(db: &tokio_postgres::Client, values: &[&str]) -> Result<Vec<String>, String> {
    let filters = parse_type_filters(values, fixtures::now()).map_err(|e| e.to_string())?;
    let [filter] = filters.as_slice() else {
        return Err(format!("{} filters, expected one type", filters.len()));
    };
    let cond = filter_condition(filter, &Columns::default()).map_err(|e| e.to_string())?;
    quoted::only_quoted_literals(&cond)?;
    let ty = ResourceType::parse(&filter.resource_type).unwrap();
    let sql = format!("SELECT id FROM {} WHERE {cond} ORDER BY id", ty.table_sql());
    let rows = db
        .query(&sql, &[])
        .await
        .map_err(|e| format!("{e:?}\n{sql}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test]
async fn type_filter_cases_select_the_expected_ids() {
    let (admin, db, name) = scratch().await;
    let mut failures = Vec::new();
    for (values, expected) in cases::CASES {
        match select(&db, values).await {
            Ok(ids) if ids == *expected => {}
            Ok(ids) => failures.push(format!("{values:?}: got {ids:?}, expected {expected:?}")),
            Err(e) => failures.push(format!("{values:?}: {e}")),
        }
    }
    drop_scratch(admin, db, &name).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases::CASES.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn random_type_filters_that_parse_run_on_postgres() {
    let (admin, db, name) = scratch().await;
    let mut runner = TestRunner::deterministic();
    let strategy = gen::type_filter();
    let (mut parsed, mut failures) = (0, Vec::new());
    for _ in 0..600 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let Ok(filters) = parse_type_filters(&[value.as_str()], fixtures::now()) else {
            continue;
        };
        parsed += 1;
        if let Err(e) = select(&db, &[value.as_str()]).await {
            failures.push(format!("{value:?} ({filters:?}): {e}"));
        }
    }
    drop_scratch(admin, db, &name).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(parsed >= 300, "only {parsed} random values parsed");
}
