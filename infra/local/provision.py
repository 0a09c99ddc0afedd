"""Creates siphon's local AWS resources in LocalStack (or any endpoint): the sample
bucket, the load queue and the S3-events queue with their dead-letter queues, and the
bucket notification that sends every new `*.ndjson.gz` to the events queue.
Idempotent: running it again changes nothing.

    python provision.py [endpoint]      (default http://127.0.0.1:4566)
"""
import json
import sys
import time

import boto3

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4566"
REGION = "us-east-1"
BUCKET = "siphon-samples"

session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
s3 = session.client("s3", endpoint_url=ENDPOINT)
sqs = session.client("sqs", endpoint_url=ENDPOINT)


def queue(name, dlq_arn=None, visibility=None):
    attrs = {}
    if dlq_arn:
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    if visibility:
        attrs["VisibilityTimeout"] = str(visibility)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    if attrs:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


try:
    s3.create_bucket(Bucket=BUCKET)
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass

_, load_dlq = queue("siphon-load-dlq")
load_url, _ = queue("siphon-load", load_dlq, visibility=960)
_, events_dlq = queue("siphon-events-dlq")
events_url, events_arn = queue("siphon-events", events_dlq, visibility=60)

sqs.set_queue_attributes(
    QueueUrl=events_url,
    Attributes={"Policy": json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": events_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}},
        }],
    })},
)

wanted = {
    "QueueConfigurations": [{
        "Id": "siphon-ndjson-gz",
        "QueueArn": events_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".ndjson.gz"}]}},
    }]
}
current = s3.get_bucket_notification_configuration(Bucket=BUCKET)
if [c.get("QueueArn") for c in current.get("QueueConfigurations", [])] != [events_arn]:
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=wanted)
    # S3 announces a new configuration with an s3:TestEvent: take it off the queue.
    deadline = time.time() + 5
    while time.time() < deadline:
        got = sqs.receive_message(QueueUrl=events_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        for m in got.get("Messages", []):
            if "s3:TestEvent" in m["Body"]:
                sqs.delete_message(QueueUrl=events_url, ReceiptHandle=m["ReceiptHandle"])
                deadline = 0

print(f"bucket s3://{BUCKET}, queues {load_url} {events_url}")
