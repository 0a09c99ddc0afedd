//! Local stand-ins for what AWS provides around the functions: an HTTP front door
//! (API Gateway / function URL) and SQS event source mappings (receive a batch, invoke
//! the function, delete what it did not report as failed).

mod config;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::MessageSystemAttributeName;

pub use config::Config;

/// The body type the local front door serves (buffered API answers and streamed dumps).
pub type LocalBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, lambda_http::Error>;

/// `GET /metrics` of `make serve`: every figure this process recorded (its API, dumps,
/// loaders, exporters and sweep; see `siphon::metrics`) in the Prometheus text format,
/// for the admin only. In AWS the same figures go to CloudWatch as EMF log lines.
pub async fn metrics(
    api: &siphon_api::App,
    request: &lambda_http::Request,
) -> lambda_http::http::Response<bytes::Bytes> {
    use siphon::web::{self, ErrorStyle, Format};
    let allowed = match api
        .auth
        .check(
            web::authorization(request.headers()),
            siphon_dump::source_ip(request),
        )
        .await
    {
        Ok(who) => who.require_admin("GET /metrics"),
        Err(e) => Err(e),
    };
    match allowed {
        Ok(()) => lambda_http::http::Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(bytes::Bytes::from(siphon::metrics::prometheus()))
            .expect("a valid response"),
        Err(e) => web::render(web::error_reply(&e, ErrorStyle::Plain), Format::Json),
    }
}

/// How long `make serve`'s pollers wait in one receive (long polling), in seconds.
///
/// Short, because a poller dies with its process: a receive still open when the process
/// is killed is completed by the queue all the same, handing a message that becomes
/// visible meanwhile to a receiver that is gone. The message comes back one hold later,
/// but its receive count has grown, and a message swallowed like that by 5 kills in a
/// row goes to the dead-letter queue; with 10 s receives, a pending file's message
/// (re-queued every 10 s while `thread-num` is reached) did, in the full fault suite's
/// 20 kills. One second keeps the window a second per poller; an idle `make serve`
/// makes a few receives a second.
pub const LOCAL_WAIT_SECONDS: i32 = 1;

/// Converts received SQS messages into the records Lambda would deliver.
pub fn to_records(messages: &[aws_sdk_sqs::types::Message]) -> Vec<SqsMessage> {
    messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            r.event_source = Some("aws:sqs".into());
            if let Some(attrs) = &m.attributes {
                for (k, v) in attrs {
                    r.attributes.insert(k.as_str().to_string(), v.clone());
                }
            }
            r
        })
        .collect()
}

/// One poll of a worker's queue, as Lambda's SQS event source mapping does it: receive
/// up to `max` messages, hand them to `handle` with a deadline `budget` away, delete the
/// ones it did not report as failed. Returns how many messages were received.
///
/// Unlike Lambda's poller, this one lives in the process that handles the messages and
/// dies with it, even in the middle of a long poll (the queue may then hand a message to
/// a receiver that is gone). So the local pollers receive with `visibility` set to the
/// worker's own hold (one lease and a second), not the queue's timeout: a message
/// received by a process killed before its worker began holding it comes back within
/// a lease. `None` receives as Lambda does, with the queue's timeout.
pub async fn poll_queue<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    wait_seconds: i32,
    visibility: Option<i32>,
    budget: Duration,
    handle: F,
) -> usize
where
    F: FnOnce(Vec<SqsMessage>, u64) -> Fut,
    Fut: std::future::Future<Output = aws_lambda_events::event::sqs::SqsBatchResponse>,
{
    let got = match sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_seconds)
        .set_visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        // As Lambda delivers it: the workers record how long a message waited.
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return 0;
        }
    };
    let messages = got.messages.unwrap_or_default();
    if messages.is_empty() {
        return 0;
    }
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + budget.as_millis() as u64;
    let response = handle(to_records(&messages), deadline).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    settle(sqs, url, &messages, &failed).await;
    messages.len()
}

/// One poll of the load queue by the loader worker (15-minute deadline, as in AWS).
pub async fn poll_load_queue(
    worker: &siphon::workers::LoadWorker,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    wait_seconds: i32,
) -> usize {
    poll_queue(
        sqs,
        url,
        max,
        wait_seconds,
        Some(siphon::queue::hold_seconds(worker.options.lease)),
        Duration::from_secs(900),
        |r, d| worker.handle(r, d),
    )
    .await
}

/// One poll of the export queue by the export worker, with a deadline `budget` away
/// (15 minutes in AWS; tests shorten it to force hand-overs).
pub async fn poll_export_queue(
    worker: &siphon::workers::ExportWorker,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    wait_seconds: i32,
    budget: Duration,
) -> usize {
    let visibility = Some(siphon::queue::hold_seconds(worker.options.lease));
    poll_queue(sqs, url, 1, wait_seconds, visibility, budget, |r, d| {
        worker.handle(r, d)
    })
    .await
}

/// What the event source mapping does after an invocation: delete the messages the
/// function handled; leave the failed ones, visible again after 2 s (Lambda waits for
/// the visibility timeout; 2 s keeps local runs quick).
async fn settle(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[aws_sdk_sqs::types::Message],
    failed: &[String],
) {
    for m in messages {
        let handle = m.receipt_handle.clone().unwrap_or_default();
        if failed.iter().any(|f| Some(f) == m.message_id.as_ref()) {
            let _ = sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(2)
                .send()
                .await;
        } else {
            let _ = sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle)
                .send()
                .await;
        }
    }
}

/// One poll of the S3-events queue through siphon-s3-ingest.
pub async fn poll_events_queue(
    ingest: &siphon_s3_ingest::Ingest,
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    wait_seconds: i32,
) -> usize {
    let Ok(got) = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        // A minute, not the queue's timeout: this poller dies with its process (see
        // `poll_queue`); s3-ingest takes milliseconds per batch.
        .visibility_timeout(60)
        .send()
        .await
    else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return 0;
    };
    let messages = got.messages.unwrap_or_default();
    if messages.is_empty() {
        return 0;
    }
    let event = serde_json::json!({"Records": to_records(&messages)});
    let failed: Vec<String> = match ingest.handle(event).await {
        Ok(v) => v["batchItemFailures"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "s3-ingest failed");
            messages
                .iter()
                .filter_map(|m| m.message_id.clone())
                .collect()
        }
    };
    settle(sqs, url, &messages, &failed).await;
    messages.len()
}

/// Converts a hyper request into the request a lambda_http handler gets, reading at most
/// `max_bytes` of body (API Gateway caps bodies too): `Ok(Err(response))` is the 413
/// answer to a larger one, given without reading the rest.
pub async fn to_lambda_request(
    req: hyper::Request<hyper::body::Incoming>,
    max_bytes: usize,
) -> Result<Result<lambda_http::Request, hyper::Response<bytes::Bytes>>, hyper::Error> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let too_large = || {
        let e = siphon::Error::TooLarge(format!(
            "the request body is larger than the {max_bytes} bytes accepted"
        ));
        siphon::web::render(
            siphon::web::error_reply(&e, siphon::web::ErrorStyle::Plain),
            siphon::web::Format::Json,
        )
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Ok(Err(too_large()));
    }
    let bytes = match http_body_util::Limited::new(body, max_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(Err(too_large())),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => return Err(*e),
            Err(_) => return Ok(Err(too_large())),
        },
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        match String::from_utf8(bytes.to_vec()) {
            Ok(s) => lambda_http::Body::Text(s),
            Err(e) => lambda_http::Body::Binary(e.into_bytes()),
        }
    };
    Ok(Ok(lambda_http::Request::from_parts(parts, body)))
}

/// Records the TCP peer as the caller's address, where API Gateway puts it
/// (`requestContext.http.sourceIp`), so authentication keeps its failure budget per
/// source locally as in AWS.
pub fn with_source(
    request: lambda_http::Request,
    peer: std::net::SocketAddr,
) -> lambda_http::Request {
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.http.source_ip = Some(peer.ip().to_string());
    request.with_request_context(RequestContext::ApiGatewayV2(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address authentication keeps its failure budget by: the TCP peer locally, read
    /// back by the API and the dumps from where API Gateway puts `sourceIp` in AWS.
    #[test]
    fn the_peer_is_the_source_the_functions_read() {
        let request = || lambda_http::Request::new(lambda_http::Body::Empty);
        assert_eq!(siphon_api::source_ip(&request()), None);
        let peer: std::net::SocketAddr = "127.0.0.7:51234".parse().unwrap();
        let request = with_source(request(), peer);
        assert_eq!(siphon_api::source_ip(&request), Some("127.0.0.7"));
        assert_eq!(siphon_dump::source_ip(&request), Some("127.0.0.7"));
    }
}
