//! `make demo`: the main job on the local stack. Generates sample files, puts them in
//! the sample bucket (LocalStack S3), imports each through the loader into Postgres and
//! prints the LoaderFiles; then dumps the rows back.

use std::sync::Arc;
use std::time::Instant;

use siphon::loading::{LoadOptions, Loader};
use siphon::model::loader_file::{FileOptions, LoaderFile};
use siphon::sources::s3::S3Source;
use siphon::sources::ObjectLocation;
use siphon::storage::Db;
use siphon::ResourceType;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bucket = siphon_tests::var("SIPHON_BUCKET");
    let s3 = siphon_tests::s3().await;
    let db = Db::new(siphon::storage::DbConfig::from_env(
        &siphon_tests::config_env(),
    )?);
    let per_type = 2_000u64;
    println!(
        "1. generating {per_type} resources of each of {:?} into s3://{bucket}/demo/",
        siphon_tests::gen::TYPES
    );
    let mut files = Vec::new();
    for ty in siphon_tests::gen::TYPES {
        let mut gz = Vec::new();
        siphon_tests::gen::write_gz(&mut gz, ty, per_type, 2026)?;
        let key = format!("demo/{ty}.ndjson.gz");
        siphon_tests::put(&s3, &bucket, &key, gz).await;
        files.push(ObjectLocation::new(&bucket, key));
    }
    println!("2. importing");
    let loader = Loader::new(
        db.clone(),
        Arc::new(S3Source::new(s3)),
        LoadOptions::default(),
    );
    for loc in &files {
        // A fresh LoaderFile each run, so the demo can be repeated.
        let pending = LoaderFile::pending(loc, None, None, FileOptions::default());
        db.delete_loader_file(&pending.id).await?;
        db.create_loader_file(&pending).await?;
        let started = Instant::now();
        let outcome = loader.load(&pending.id, None).await?;
        let f = db.loader_file(&pending.id).await?.expect("LoaderFile");
        println!(
            "   {loc}: {outcome:?} in {:.2}s -> LoaderFile {} status={} loaded={} failed={}",
            started.elapsed().as_secs_f64(),
            f.id,
            f.status.as_str(),
            f.loaded,
            f.failed
        );
    }
    println!("3. in Postgres");
    for ty in siphon_tests::gen::TYPES {
        println!(
            "   {ty}: {} rows",
            db.count(&ResourceType::parse(ty)?).await?
        );
    }
    println!("4. dumping back (the dump function's stream) into target/demo/");
    let out_dir = siphon_tests::repo_root().join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    for ty in siphon_tests::gen::TYPES {
        let started = Instant::now();
        let mut stream = siphon::dumping::dump_type(&db, &ResourceType::parse(ty)?, None).await?;
        let path = out_dir.join(format!("{ty}.ndjson"));
        let mut file = std::fs::File::create(&path)?;
        let (mut bytes, mut lines) = (0usize, 0usize);
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let chunk = chunk?;
            bytes += chunk.len();
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
            std::io::Write::write_all(&mut file, &chunk)?;
        }
        println!(
            "   {ty}: {lines} resources, {bytes} bytes in {:.2}s -> {}",
            started.elapsed().as_secs_f64(),
            path.display()
        );
    }
    println!("done. `make serve` runs the same through the HTTP API at http://127.0.0.1:8080 (see README).");
    Ok(())
}
