//! `make serve`'s queue pollers against a real kill: siphon-local (the debug build of
//! `make serve`'s binary) as a child, killed with SIGKILL, and LocalStack's SQS.

mod console_harness;

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use console_harness::{Options, Stack};

#[tokio::test]
async fn a_killed_make_serve_leaves_no_receive_open_to_swallow_the_next_message() {
    // The pollers die with their process, in the middle of a receive too. The queue
    // completes a receive still open after the kill all the same and hands a message
    // sent meanwhile to a receiver that is gone: it comes back one hold later with its
    // receive count grown, and five such kills in a row send it to the dead-letter
    // queue (a pending file's message did, in the full fault suite). The pollers'
    // receives are short, so two seconds after the kill none is open any more.
    let mut stack = Stack::start(
        "local-pollers",
        Options {
            loaders: Some(4),
            ..Default::default()
        },
    )
    .await;
    // Every loader is inside a receive by now (they poll without pause when idle).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = stack
        .sqs
        .send_message()
        .queue_url(&stack.load_queue)
        .message_body(r#"{"loader_file_id":"none"}"#)
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap_or_default();
    let got = stack
        .sqs
        .receive_message()
        .queue_url(&stack.load_queue)
        .wait_time_seconds(3)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let first = got
        .first()
        .unwrap_or_else(|| panic!("message {sent} was swallowed by the dead process's receives"));
    assert_eq!(first.message_id.as_deref(), Some(sent.as_str()));
    let receives = first
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .cloned();
    assert_eq!(
        receives.as_deref(),
        Some("1"),
        "received before us: {first:?}"
    );
}
