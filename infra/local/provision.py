"""Creates siphon's local AWS resources in LocalStack (host mode via infra/local/up.sh, or
the docker-compose.yml service): the sample bucket, the load queue and the S3-events
queue with their dead-letter queues, and the bucket notification that sends every new
`*.ndjson.gz` object to the events queue. Idempotent: running it again changes nothing.

    python provision.py [--endpoint http://127.0.0.1:4566] [--env-file infra/local/local.env]

Needs boto3 (in requirements-localstack.txt). With --env-file, the queue URLs LocalStack
returns are checked against the ones written there (they differ when LocalStack was not
started with SQS_ENDPOINT_STRATEGY=path LOCALSTACK_HOST=127.0.0.1:4566).
"""
import argparse
import json
import sys
import time

import boto3
from botocore.config import Config

REGION = "us-east-1"
BUCKET = "siphon-samples"
EXPORT_BUCKET = "siphon-exports"
MAX_RECEIVE_COUNT = 5
# Longer than the loader's Lambda timeout (900 s): AWS requires it for an SQS trigger.
LOAD_VISIBILITY_TIMEOUT = 960
EVENTS_VISIBILITY_TIMEOUT = 60
# Longer than the export function's Lambda timeout (900 s), as for the load queue.
EXPORT_VISIBILITY_TIMEOUT = 960
NOTIFICATION_ID = "siphon-ndjson-gz"
SUFFIX = ".ndjson.gz"

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--endpoint", default="http://127.0.0.1:4566")
parser.add_argument("--env-file", help="local.env to check the queue URLs against")
args = parser.parse_args()

session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
s3 = session.client("s3", endpoint_url=args.endpoint,
                    config=Config(s3={"addressing_style": "path"}))
sqs = session.client("sqs", endpoint_url=args.endpoint)


def queue(name, dlq_arn=None, visibility=None):
    """Create (or find) a queue and bring its attributes to what we want."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attrs = {}
    if dlq_arn:
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
    if visibility:
        attrs["VisibilityTimeout"] = str(visibility)
    if attrs:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


# ---- buckets ---------------------------------------------------------------------------
for name in (BUCKET, EXPORT_BUCKET):
    try:
        s3.create_bucket(Bucket=name)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass

# ---- queues ----------------------------------------------------------------------------
load_dlq_url, load_dlq_arn = queue("siphon-load-dlq")
load_url, _ = queue("siphon-load", load_dlq_arn, visibility=LOAD_VISIBILITY_TIMEOUT)
events_dlq_url, events_dlq_arn = queue("siphon-events-dlq")
events_url, events_arn = queue("siphon-events", events_dlq_arn, visibility=EVENTS_VISIBILITY_TIMEOUT)
export_dlq_url, export_dlq_arn = queue("siphon-export-dlq")
export_url, _ = queue("siphon-export", export_dlq_arn, visibility=EXPORT_VISIBILITY_TIMEOUT)

# S3 may send to the events queue (in AWS this policy is what allows the notification).
sqs.set_queue_attributes(
    QueueUrl=events_url,
    Attributes={"Policy": json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "s3-sends-object-created",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": events_arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}},
        }],
    })},
)

# ---- bucket notification ---------------------------------------------------------------
wanted = {
    "Id": NOTIFICATION_ID,
    "QueueArn": events_arn,
    "Events": ["s3:ObjectCreated:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": SUFFIX}]}},
}


def normalized(configs):
    out = []
    for c in configs:
        rules = c.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        out.append((c.get("QueueArn"), tuple(sorted(c.get("Events", []))),
                    tuple(sorted((r["Name"].lower(), r["Value"]) for r in rules))))
    return out


current = s3.get_bucket_notification_configuration(Bucket=BUCKET)
if (normalized(current.get("QueueConfigurations", [])) != normalized([wanted])
        or current.get("TopicConfigurations") or current.get("LambdaFunctionConfigurations")):
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [wanted]})
    # S3 announces a new configuration with an `s3:TestEvent` message (no `Records`):
    # take it off the queue so consumers only ever see real events. Anything else we
    # happen to receive is made visible again at once.
    deadline = time.time() + 10
    while time.time() < deadline:
        got = sqs.receive_message(QueueUrl=events_url, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        done = False
        for m in got.get("Messages", []):
            if '"s3:TestEvent"' in m["Body"]:
                sqs.delete_message(QueueUrl=events_url, ReceiptHandle=m["ReceiptHandle"])
                done = True
            else:
                sqs.change_message_visibility(QueueUrl=events_url, ReceiptHandle=m["ReceiptHandle"],
                                              VisibilityTimeout=0)
        if done:
            break
    else:
        print("provision.py: no s3:TestEvent seen on siphon-events (nothing to drain)", file=sys.stderr)

# ---- report ----------------------------------------------------------------------------
urls = {
    "SIPHON_LOAD_QUEUE_URL": load_url,
    "SIPHON_LOAD_DLQ_URL": load_dlq_url,
    "SIPHON_EVENTS_QUEUE_URL": events_url,
    "SIPHON_EXPORT_QUEUE_URL": export_url,
    "SIPHON_EXPORT_DLQ_URL": export_dlq_url,
}
if args.env_file:
    env = {}
    with open(args.env_file) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    bad = [f"  {k}: LocalStack says {v}, {args.env_file} says {env.get(k)}"
           for k, v in urls.items() if env.get(k) != v]
    if env.get("SIPHON_BUCKET", BUCKET) != BUCKET:
        bad.append(f"  SIPHON_BUCKET: provisioned {BUCKET}, {args.env_file} says {env['SIPHON_BUCKET']}")
    if bad:
        print("provision.py: settings do not match what was provisioned:\n" + "\n".join(bad), file=sys.stderr)
        sys.exit(1)
print(f"provision.py: buckets s3://{BUCKET}, s3://{EXPORT_BUCKET}, queues " + ", ".join(u.rsplit("/", 1)[1] for u in urls.values())
      + ", siphon-events-dlq; notification *.ndjson.gz -> siphon-events")
