//! siphon-loader: SQS-triggered; each message names one file to load.
//! Not implemented yet (issue "Ingestion"): every record is reported as a batch item
//! failure, so no message is lost while this placeholder is deployed.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handler(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for record in event.payload.records {
        tracing::error!(message_id = ?record.message_id, "siphon-loader is not implemented yet; leaving the message on the queue");
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = record.message_id.unwrap_or_default();
        response.batch_item_failures.push(failure);
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    siphon::telemetry::init();
    lambda_runtime::run(service_fn(handler)).await
}
