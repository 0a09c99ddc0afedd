//! The storage layer against a real Postgres: migrations racing, tables created on first
//! use under concurrency, hostile type names, CRUD, hand-inserted rows, TLS.

use serde_json::json;
use siphon::storage::{migrations, Db, DbConfig};
use siphon::ResourceType;
use siphon_tests::{connect, fresh_db, fresh_db_url};

fn ty(name: &str) -> ResourceType {
    ResourceType::parse(name).unwrap()
}

#[tokio::test]
async fn migrations_race_safely_and_run_once() {
    let url = fresh_db_url().await;
    // Eight "cold starts" at once, each with its own pool.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let cfg = DbConfig::from_url(&url).unwrap();
            let (mut client, conn) = cfg.pg_config().connect(cfg.tls().unwrap()).await.unwrap();
            tokio::spawn(conn);
            migrations::migrate(&mut client).await.unwrap()
        }));
    }
    let mut ran = 0;
    for t in tasks {
        ran += t.await.unwrap();
    }
    assert_eq!(
        ran,
        migrations::MIGRATIONS.len(),
        "each migration runs exactly once"
    );
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    let c = connect(&db).await;
    let versions: i64 = c
        .query_one("SELECT count(*) FROM siphon_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions as usize, migrations::MIGRATIONS.len());
    // And a later start finds nothing to do.
    let (mut client, conn) = db
        .config()
        .pg_config()
        .connect(db.config().tls().unwrap())
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(migrations::migrate(&mut client).await.unwrap(), 0);
}

#[tokio::test]
async fn tables_are_created_on_first_use_under_concurrency() {
    let url = fresh_db_url().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        // Separate Db handles: separate pools, as separate Lambdas would have.
        let db = Db::new(DbConfig::from_url(&url).unwrap());
        tasks.push(tokio::spawn(async move {
            db.upsert(
                &ty("Encounter"),
                &format!("e-{i}"),
                &json!({"status": "finished"}),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let db = Db::new(DbConfig::from_url(&url).unwrap());
    assert_eq!(db.count(&ty("Encounter")).await.unwrap(), 8);
    let c = connect(&db).await;
    let cols: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = 'encounter' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want = [
        ("id", "text"),
        ("txid", "bigint"),
        ("cts", "timestamp with time zone"),
        ("ts", "timestamp with time zone"),
        ("resource_type", "text"),
        ("status", "text"),
        ("resource", "jsonb"),
    ];
    assert_eq!(
        cols,
        want.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn hostile_type_names_never_reach_sql() {
    let db = fresh_db().await;
    db.upsert(&ty("Patient"), "p1", &json!({})).await.unwrap();
    for bad in [
        "Patient; DROP TABLE patient",
        "pg_catalog",
        "Patient\"; --",
        &"A".repeat(70),
        "Pätient",
        "patient",
    ] {
        let err = ResourceType::parse(bad).unwrap_err();
        assert_eq!(siphon::web::status_of(&err).as_u16(), 400);
    }
    // The table is still there, with its row.
    assert_eq!(db.count(&ty("Patient")).await.unwrap(), 1);
}

#[tokio::test]
async fn crud_round_trip_with_shared_txid_sequence() {
    let db = fresh_db().await;
    let p = ty("Patient");
    let a = db
        .upsert(
            &p,
            "pt-1",
            &json!({"name": [{"family": "Doe"}], "active": true}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, "created");
    assert_eq!(
        a.resource,
        json!({"resourceType": "Patient", "id": "pt-1", "name": [{"family": "Doe"}], "active": true})
    );
    let o = db
        .upsert(&ty("Observation"), "obs-1", &json!({"status": "final"}))
        .await
        .unwrap();
    assert!(o.txid > a.txid, "one sequence across tables");
    let b = db
        .upsert(&p, "pt-1", &json!({"active": false}))
        .await
        .unwrap();
    assert_eq!(b.status, "updated");
    assert!(b.txid > o.txid);
    assert_eq!(b.cts, a.cts, "creation time kept on update");
    let got = db.get(&p, "pt-1").await.unwrap().unwrap();
    assert_eq!(got.resource["active"], json!(false));
    assert!(
        got.resource.get("name").is_none(),
        "an update replaces the resource"
    );
    db.upsert(&p, "pt-2", &json!({})).await.unwrap();
    let ids: Vec<String> = db
        .list(&p, 10, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["pt-1", "pt-2"]);
    assert!(db.delete(&p, "pt-1").await.unwrap());
    assert!(!db.delete(&p, "pt-1").await.unwrap());
    assert!(db.get(&p, "pt-1").await.unwrap().is_none());
    // Types without a table read as empty, and are not created by reading.
    assert!(db.get(&ty("Medication"), "m").await.unwrap().is_none());
    assert!(db.list(&ty("Medication"), 10, 0).await.unwrap().is_empty());
    let c = connect(&db).await;
    let exists: bool = c
        .query_one("SELECT to_regclass('public.medication') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
    // Bad ids are refused before SQL.
    assert_eq!(
        siphon::web::status_of(&db.upsert(&p, "a b", &json!({})).await.unwrap_err()).as_u16(),
        400
    );
    assert_eq!(
        siphon::web::status_of(&db.upsert(&p, "ok", &json!([1])).await.unwrap_err()).as_u16(),
        400
    );
}

#[tokio::test]
async fn rows_inserted_by_hand_as_in_the_seed_demo_are_first_class() {
    let db = fresh_db().await;
    let p = ty("Patient");
    db.upsert(&p, "seed", &json!({})).await.unwrap(); // creates the table
    let c = connect(&db).await;
    // The Aidbox demo's SQL, verbatim but for the count.
    c.batch_execute(
        "INSERT INTO patient (id,txid, status, resource)
         SELECT g.id, g.id, 'created', '{\"name\": [{\"family\": \"John\"}]}'
         FROM generate_series(1, 1000) AS g (id);",
    )
    .await
    .unwrap();
    let got = db.get(&p, "42").await.unwrap().unwrap();
    assert_eq!(
        got.resource,
        json!({"resourceType": "Patient", "id": "42", "name": [{"family": "John"}]})
    );
    assert_eq!(db.count(&p).await.unwrap(), 1001);
}

#[tokio::test]
async fn tls_is_used_when_the_url_asks_for_it() {
    // The local Debian cluster serves TLS with its snakeoil certificate:
    // sslmode=require encrypts without verifying (as libpq does without a root cert).
    let url = fresh_db_url().await;
    let db = Db::new(DbConfig::from_url(&format!("{url}?sslmode=require")).unwrap());
    let client = db.client().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
    // verify-full against the public roots refuses a self-signed certificate.
    let strict = Db::new(DbConfig::from_url(&format!("{url}?sslmode=verify-full")).unwrap());
    let err = strict
        .client()
        .await
        .expect_err("a self-signed certificate must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate") || err.to_string().contains("error"),
        "{err}"
    );
    // sslmode=disable stays plain.
    let plain = Db::new(DbConfig::from_url(&format!("{url}?sslmode=disable")).unwrap());
    let ssl: bool = plain
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!ssl);
}

#[tokio::test]
async fn the_pool_survives_a_killed_connection() {
    let db = fresh_db().await;
    let pid: i32 = db
        .client()
        .await
        .unwrap()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = connect(&db).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // RecyclingMethod::Verified notices the dead socket and opens a new one.
    let n: i32 = db
        .client()
        .await
        .unwrap()
        .query_one("SELECT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
