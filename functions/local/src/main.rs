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
use siphon::storage::Db;
use siphon_local::Config;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = siphon::boot::config(Config::from_env)?;
    // One pool for every function here (one process stands in for many instances).
    let db = Db::new(config.api.db.clone());
    // Each function is built by its own crate's boot, as its Lambda builds it.
    let api = Arc::new(siphon_api::App::boot(&config.api, db.clone()).await?);
    let dump = Arc::new(siphon_dump::App::new(&config.dump, db.clone()));
    let worker = Arc::new(siphon_loader::boot(&config.loader, db.clone()).await?);
    let sqs = siphon::boot::queue(&config.api.load_queue_url)
        .await?
        .client()
        .clone();
    // As many loaders as Lambda would run instances, one message each at a time.
    for _ in 0..config.loaders {
        let (worker, sqs, url) = (
            worker.clone(),
            sqs.clone(),
            config.loader.load_queue_url.clone(),
        );
        tokio::spawn(async move {
            loop {
                siphon_local::poll_load_queue(
                    &worker,
                    &sqs,
                    &url,
                    1,
                    siphon_local::LOCAL_WAIT_SECONDS,
                )
                .await;
            }
        });
    }
    // Export workers, when exports are configured.
    if let Some(export) = &config.export {
        let worker = Arc::new(siphon_export::boot(export, db.clone()).await?);
        for _ in 0..config.exporters {
            let (worker, sqs, url) = (worker.clone(), sqs.clone(), export.export_queue_url.clone());
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
    spawn_sweep_and_ingest(&config, &db, &sqs).await?;
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
                async move { respond(req, peer, &api, &dump).await }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The sweep, as the schedule runs it in AWS; S3 notifications (and new S3 Inventory
/// runs) through siphon-s3-ingest, when the events queue is configured.
async fn spawn_sweep_and_ingest(
    config: &Config,
    db: &Db,
    sqs: &aws_sdk_sqs::Client,
) -> Result<(), Box<dyn std::error::Error>> {
    let sweeper = siphon_sweep::boot(&config.sweep, db.clone()).await?;
    let every = config.sweep.interval;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = sweeper.pass().await {
                tracing::error!(error = %e, "sweep pass failed");
            }
        }
    });
    if let Some(events_url) = config.events_queue_url.clone() {
        let ingest = siphon_s3_ingest::boot(&config.ingest, db.clone()).await?;
        let sqs = sqs.clone();
        tokio::spawn(async move {
            loop {
                siphon_local::poll_events_queue(
                    &ingest,
                    &sqs,
                    &events_url,
                    siphon_local::LOCAL_WAIT_SECONDS,
                )
                .await;
            }
        });
    }
    Ok(())
}

/// One HTTP request, routed as in AWS: dumps to the streaming function, `GET /metrics`
/// to the local counters, the rest to the API function.
async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
    api: &siphon_api::App,
    dump: &siphon_dump::App,
) -> Result<hyper::Response<siphon_local::LocalBody>, hyper::Error> {
    let path = req.uri().path();
    let is_dump = path.ends_with("/$dump") || path == "/$dump-sql";
    let path_is_metrics = path == "/metrics" && req.method() == hyper::Method::GET;
    let request = match siphon_local::to_lambda_request(req, api.max_body_bytes).await? {
        Ok(r) => siphon_local::with_source(r, peer),
        Err(refused) => {
            let (parts, body) = refused.into_parts();
            let full = Full::new(body).map_err(|never| match never {});
            return Ok(hyper::Response::from_parts(parts, full.boxed_unsync()));
        }
    };
    Ok(if path_is_metrics {
        let (parts, body) = siphon_local::metrics(api, &request).await.into_parts();
        let full = Full::new(body).map_err(|never| match never {});
        hyper::Response::from_parts(parts, full.boxed_unsync())
    } else if is_dump {
        let (parts, body) = siphon_dump::handle(dump, request).await.into_parts();
        hyper::Response::from_parts(parts, body.boxed_unsync())
    } else {
        let (parts, body) = siphon_api::handle(api, request).await.into_parts();
        let full =
            Full::new(bytes::Bytes::copy_from_slice(body.as_ref())).map_err(|never| match never {});
        hyper::Response::from_parts(parts, full.boxed_unsync())
    })
}
