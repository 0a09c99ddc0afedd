//! The local AWS stack is real: S3 and SQS round trips through LocalStack with the same
//! SDK clients the functions use.

use siphon::sources::s3::S3Source;
use siphon::sources::{Location, ObjectLocation, Source, SourceError};
use siphon_tests::{fresh_bucket, put, s3, sqs, var};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn s3_object_round_trip() {
    let s3 = s3().await;
    let bucket = fresh_bucket(&s3).await;
    let body = siphon_tests::gen::gzip(b"{\"resourceType\":\"Patient\",\"id\":\"1\"}\n");
    put(&s3, &bucket, "dir/Patient.ndjson.gz", body.clone()).await;
    let source = S3Source::new(s3.clone());
    let loc: Location = ObjectLocation::new(&bucket, "dir/Patient.ndjson.gz").into();
    let mut opened = source.open(&loc, None).await.unwrap();
    assert_eq!(opened.size, Some(body.len() as u64));
    let etag = opened.etag.clone().expect("S3 gives an etag");
    let mut got = Vec::new();
    opened.body.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, body);
    // The same etag opens; a stale one is refused as "changed".
    assert!(source.open(&loc, Some(&etag)).await.is_ok());
    match source.open(&loc, Some("\"0123\"")).await {
        Err(SourceError::Changed(m)) => assert!(m.contains("changed"), "{m}"),
        Err(other) => panic!("expected Changed, got {other:?}"),
        Ok(_) => panic!("expected Changed, got the object"),
    }
}

#[tokio::test]
async fn s3_missing_objects_and_buckets_say_so() {
    let s3 = s3().await;
    let bucket = fresh_bucket(&s3).await;
    let source = S3Source::new(s3);
    let err = source
        .open(&ObjectLocation::new(&bucket, "nope.ndjson.gz").into(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = source
        .open(
            &ObjectLocation::new("siphon-no-such-bucket", "x.ndjson.gz").into(),
            None,
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn sqs_send_and_receive() {
    let sqs = sqs().await;
    let name = format!(
        "siphon-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:4566/"), "{url}");
    sqs.send_message()
        .queue_url(&url)
        .message_body("{\"loader_file_id\":\"x\"}")
        .send()
        .await
        .unwrap();
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let messages = got.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body.as_deref(),
        Some("{\"loader_file_id\":\"x\"}")
    );
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(messages[0].receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    // The stack's own load queue exists.
    let load = var("SIPHON_LOAD_QUEUE_URL");
    sqs.get_queue_attributes()
        .queue_url(&load)
        .send()
        .await
        .expect("the load queue exists");
}
