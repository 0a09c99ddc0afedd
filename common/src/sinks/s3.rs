//! S3 and S3-compatible stores (LocalStack, MinIO, R2) as an [`ObjectSink`].

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::future::BoxFuture;

use super::{ObjectMeta, ObjectSink, Part, SinkError};
use crate::sources::s3::{fault, S3Fault};

/// A bucket (and a key prefix inside it) written through aws-sdk-s3.
#[derive(Clone, Debug)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Sink {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Sink {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// Turns an SDK error into a [`SinkError`], by the one S3 classifier
/// (`sources::s3::fault`).
fn classify<E, R>(err: SdkError<E, R>, what: &str) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (kind, detail) = fault(&err);
    match kind {
        S3Fault::NoSuchUpload => {
            SinkError::NoSuchUpload(format!("{what}: the upload is gone (NoSuchUpload)"))
        }
        S3Fault::Transient => SinkError::Transient(format!("{what}: {detail}")),
        _ => SinkError::Refused(format!("{what}: {detail}")),
    }
}

impl ObjectSink for S3Sink {
    fn check_bucket(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let bucket = &self.bucket;
            match self.client.head_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Err(
                    SinkError::Refused(format!("bucket s3://{bucket} does not exist (NoSuchBucket)")),
                ),
                Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 403 => {
                    Err(SinkError::Refused(format!(
                        "access to bucket s3://{bucket} is denied (AccessDenied): the credentials need s3:ListBucket, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on it"
                    )))
                }
                Err(e) => Err(classify(e, &format!("head s3://{bucket}"))),
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(&meta.content_type)
                .set_content_encoding(meta.content_encoding.clone())
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| classify(e, &format!("put s3://{}/{key}", self.bucket)))?;
            Ok(())
        })
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
        meta: &'a ObjectMeta,
    ) -> BoxFuture<'a, Result<String, SinkError>> {
        Box::pin(async move {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type(&meta.content_type)
                .set_content_encoding(meta.content_encoding.clone())
                .send()
                .await
                .map_err(|e| {
                    classify(e, &format!("start an upload to s3://{}/{key}", self.bucket))
                })?;
            out.upload_id
                .ok_or_else(|| SinkError::Refused("the store gave no upload id".into()))
        })
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Part, SinkError>> {
        Box::pin(async move {
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map_err(|e| {
                    classify(e, &format!("part {number} of s3://{}/{key}", self.bucket))
                })?;
            Ok(Part {
                number,
                etag: out.e_tag.unwrap_or_default(),
            })
        })
    }

    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [Part],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let completed = CompletedMultipartUpload::builder()
                .set_parts(Some(
                    parts
                        .iter()
                        .map(|p| {
                            CompletedPart::builder()
                                .part_number(p.number)
                                .e_tag(&p.etag)
                                .build()
                        })
                        .collect(),
                ))
                .build();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed)
                .send()
                .await
                .map_err(|e| classify(e, &format!("complete s3://{}/{key}", self.bucket)))?;
            Ok(())
        })
    }

    fn abort_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
                .map_err(|e| {
                    classify(
                        e,
                        &format!("abort the upload to s3://{}/{key}", self.bucket),
                    )
                }) {
                Ok(_) | Err(SinkError::NoSuchUpload(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn size<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, SinkError>> {
        Box::pin(async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(out) => Ok(out.content_length().and_then(|n| u64::try_from(n).ok())),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                Err(e) => Err(classify(e, &format!("s3://{}/{key}", self.bucket))),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify(e, &format!("deleting s3://{}/{key}", self.bucket)))?;
            Ok(())
        })
    }

    fn presign_get<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, SinkError>> {
        Box::pin(async move {
            let config = PresigningConfig::expires_in(ttl)
                .map_err(|e| SinkError::Refused(format!("presigning: {e}")))?;
            let request = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| classify(e, &format!("presign s3://{}/{key}", self.bucket)))?;
            Ok(request.uri().to_string())
        })
    }
}
