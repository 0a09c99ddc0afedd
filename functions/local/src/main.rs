//! `make serve`: every function on the built code. The HTTP API (and dumps) at
//! http://127.0.0.1:8080 with the same paths as in AWS; the loader consuming the local
//! load queue and s3-ingest consuming the S3-events queue, as Lambda's event source
//! mappings would.

#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use siphon::config::Env;
use siphon::queue::SqsQueue;
use siphon::storage::Db;
use siphon_local::Config;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::from_process();
    siphon::telemetry::init(&env);
    siphon::memory::tune();
    let config = Config::from_env(&env)?;
    let db = Db::new(config.api.db.clone());
    let queue = Arc::new(SqsQueue::connect(&config.api.load_queue_url).await?);
    let s3 = siphon::sources::s3::client(&config.api.s3).await?;
    let export_queue: Option<Arc<SqsQueue>> = match &config.api.export_queue_url {
        Some(url) => Some(Arc::new(SqsQueue::connect(url).await?)),
        None => None,
    };
    let api = Arc::new(siphon_api::App::boot(&config.api, db.clone()).await?);
    let dump = Arc::new(siphon_dump::App::new(&config.dump, db.clone()));
    let worker = Arc::new(siphon_loader::worker(
        &config.loader,
        db.clone(),
        queue.clone(),
        s3.clone(),
        config.loader.load_options(),
    ));
    let sqs = queue.client().clone();
    let load_url = queue.url().to_string();
    // As many loaders as Lambda would run instances, one message each at a time.
    for _ in 0..config.loaders {
        let (worker, sqs, load_url) = (worker.clone(), sqs.clone(), load_url.clone());
        tokio::spawn(async move {
            loop {
                siphon_local::poll_load_queue(
                    &worker,
                    &sqs,
                    &load_url,
                    1,
                    siphon_local::LOCAL_WAIT_SECONDS,
                )
                .await;
            }
        });
    }
    // Export workers, when exports are configured.
    if let (Some(export), Some(export_queue)) = (&config.export, &export_queue) {
        let worker = Arc::new(
            siphon_export::worker(export, db.clone(), export_queue.clone(), s3.clone())
                .with_load_queue(queue.clone()),
        );
        for _ in 0..config.exporters {
            let (worker, sqs, url) = (worker.clone(), sqs.clone(), export_queue.url().to_string());
            tokio::spawn(async move {
                loop {
                    siphon_local::poll_export_queue(
                        &worker,
                        &sqs,
                        &url,
                        siphon_local::LOCAL_WAIT_SECONDS,
                        Duration::from_secs(900),
                    )
                    .await;
                }
            });
        }
    }
    // The sweep, as the schedule runs it in AWS.
    {
        let mut sweeper =
            siphon::sweep::Sweeper::new(db.clone(), queue.clone(), config.sweep.options.clone());
        if let Some(q) = &export_queue {
            sweeper = sweeper.with_export_queue(q.clone());
        }
        let every = config.sweep.interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = sweeper.pass().await {
                    tracing::error!(error = %e, "sweep pass failed");
                }
            }
        });
    }
    if let Some(events_url) = config.events_queue_url.clone() {
        let (db, queue, sqs) = (db.clone(), queue.clone(), sqs.clone());
        // New S3 Inventory runs are imported when a configured Inventory covers them.
        let auto = export_queue
            .clone()
            .map(|q| siphon::inventory::auto::AutoImport {
                db: db.clone(),
                task_queue: q,
                s3: s3.clone(),
                guard: Arc::new(siphon::sources::http::HttpSource::new(
                    config.api.url_policy.clone(),
                )),
            });
        tokio::spawn(async move {
            loop {
                let listener = auto
                    .as_ref()
                    .map(|a| a as &dyn siphon::ingestion::events::ManifestListener);
                siphon_local::poll_events_queue(
                    &db,
                    queue.as_ref(),
                    listener,
                    &sqs,
                    &events_url,
                    siphon_local::LOCAL_WAIT_SECONDS,
                )
                .await;
            }
        });
    }
    let addr = config.addr;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "siphon-local: API and dumps at http://{addr}, {} loaders, {} exporters and s3-ingest polling the local queues, sweep every {} s",
        config.loaders,
        if config.export.is_some() { config.exporters } else { 0 },
        config.sweep.interval.as_secs()
    );
    loop {
        let (stream, peer) = listener.accept().await?;
        let (api, dump) = (api.clone(), dump.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (api, dump) = (api.clone(), dump.clone());
                async move {
                    // The same split as in AWS: dumps go to the streaming function URL.
                    let path = req.uri().path();
                    let is_dump = path.ends_with("/$dump") || path == "/$dump-sql";
                    let request =
                        match siphon_local::to_lambda_request(req, api.max_body_bytes).await? {
                            Ok(r) => siphon_local::with_source(r, peer),
                            Err(refused) => {
                                let (parts, body) = refused.into_parts();
                                let full = Full::new(body).map_err(|never| match never {});
                                return Ok(hyper::Response::from_parts(parts, full.boxed_unsync()));
                            }
                        };
                    let response: hyper::Response<siphon_local::LocalBody> = if is_dump {
                        let (parts, body) = siphon_dump::handle(&dump, request).await.into_parts();
                        hyper::Response::from_parts(parts, body.boxed_unsync())
                    } else {
                        let (parts, body) = siphon_api::handle(&api, request).await.into_parts();
                        let full = Full::new(bytes::Bytes::copy_from_slice(body.as_ref()))
                            .map_err(|never| match never {});
                        hyper::Response::from_parts(parts, full.boxed_unsync())
                    };
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
