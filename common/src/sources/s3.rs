//! S3 and S3-compatible stores (LocalStack, MinIO, R2) through aws-sdk-s3.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use futures::future::BoxFuture;

use super::{Location, OpenedObject, Source, SourceError};

/// Static credentials given with a request (`account` in load-from-bucket).
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// How to reach a store. Empty fields fall back to the AWS SDK's own settings
/// (`AWS_REGION`, `AWS_ENDPOINT_URL`, the function's role); path-style addressing
/// (LocalStack, MinIO) only when `force_path_style` says so.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub credentials: Option<StaticCredentials>,
    pub force_path_style: Option<bool>,
    /// What the endpoint and every host connected to must pass (`SIPHON_URL_ALLOWLIST`).
    pub policy: crate::sources::http::UrlPolicy,
}

impl S3Options {
    /// The function's own store: the SDK's settings, plus `SIPHON_S3_FORCE_PATH_STYLE`
    /// (`true` for LocalStack and MinIO).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        Ok(S3Options {
            force_path_style: Some(env.flag("SIPHON_S3_FORCE_PATH_STYLE", false)?),
            policy: crate::sources::http::UrlPolicy::from_env(env),
            ..Default::default()
        })
    }
}

/// Builds an S3 client for `opts`, on siphon's guarded HTTP client (see `crate::sources::aws`):
/// its endpoint is checked by the URL guard against `opts.policy` now, and every host name
/// again each time a connection is opened. A refused endpoint is
/// [`SourceError::Refused`]. No network call happens here.
pub async fn client(opts: &S3Options) -> Result<aws_sdk_s3::Client, SourceError> {
    let connection = crate::sources::aws::Connection {
        endpoint_url: opts.endpoint_url.clone(),
        region: opts.region.clone(),
        credentials: opts
            .credentials
            .as_ref()
            .map(|c| (c.access_key_id.clone(), c.secret_access_key.clone())),
    };
    let shared = crate::sources::aws::sdk_config(&connection, &opts.policy).await?;
    Ok(from_shared(&shared, opts))
}

/// An S3 client for `opts` from an SDK configuration built by `crate::sources::aws`.
pub fn from_shared(shared: &aws_config::SdkConfig, opts: &S3Options) -> aws_sdk_s3::Client {
    let path_style = opts.force_path_style.unwrap_or(false);
    let mut conf = aws_sdk_s3::config::Builder::from(shared).force_path_style(path_style);
    if shared.region().is_none() {
        conf = conf.region(aws_config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

/// An S3 bucket as a [`Source`].
#[derive(Clone, Debug)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// One page of a listing: objects, the common prefixes (with a delimiter), and where the
/// next page starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub objects: Vec<Listed>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        S3Source { client }
    }

    /// One page of `bucket`'s keys under `prefix` (grouped at `delimiter` when given),
    /// from `token` on. `what` names the listing in errors.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<String>,
        what: &str,
    ) -> Result<Page, SourceError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| classify(e, what))?;
        Ok(Page {
            objects: page
                .contents()
                .iter()
                .filter_map(|o| {
                    Some(Listed {
                        key: o.key()?.to_string(),
                        size: o.size().and_then(|s| u64::try_from(s).ok()),
                        etag: o.e_tag().map(str::to_string),
                    })
                })
                .collect(),
            prefixes: page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string))
                .collect(),
            next: (page.is_truncated() == Some(true))
                .then(|| page.next_continuation_token().map(str::to_string))
                .flatten(),
        })
    }

    /// The size of `bucket`/`key` (HEAD), or why it cannot be had.
    pub async fn head(&self, bucket: &str, key: &str, what: &str) -> Result<u64, SourceError> {
        let head = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, what))?;
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    /// A whole object of at most `max` bytes (larger: [`SourceError::Other`]).
    pub async fn get_bytes(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
    ) -> Result<Vec<u8>, SourceError> {
        let what = format!("s3://{bucket}/{key}");
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &what))?;
        if out.content_length().unwrap_or(0).max(0) as u64 > max {
            return Err(SourceError::Other(format!(
                "{what} is larger than {max} bytes"
            )));
        }
        Ok(out
            .body
            .collect()
            .await
            .map_err(|e| SourceError::Transient(format!("{what}: {e}")))?
            .to_vec())
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

/// What an S3 call's failure means, decided once for reading (sources) and writing
/// (sinks): each side maps the kind to its own error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Fault {
    /// No such key or bucket.
    NotFound,
    /// A multipart upload the store no longer knows (completed, aborted, expired).
    NoSuchUpload,
    /// Credentials refused, or not allowed.
    AccessDenied,
    /// The object changed since its etag was taken (If-Match failed).
    Changed,
    /// Throttling, a server error, the network: worth a retry.
    Transient,
    /// Anything else: permanent.
    Other,
}

/// The kind of an SDK error, and the store's code and message (or the transport's
/// error) to show with it.
pub fn fault<E, R>(err: &SdkError<E, R>) -> (S3Fault, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("").to_string();
            let message = service.err().message().unwrap_or("").to_string();
            let kind = match code.as_str() {
                "NoSuchKey" | "NotFound" | "NoSuchBucket" => S3Fault::NotFound,
                "NoSuchUpload" => S3Fault::NoSuchUpload,
                "AccessDenied"
                | "Forbidden"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken" => S3Fault::AccessDenied,
                "PreconditionFailed" => S3Fault::Changed,
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout" => {
                    S3Fault::Transient
                }
                _ => S3Fault::Other,
            };
            (kind, format!("{code} {message}").trim_end().to_string())
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            (S3Fault::Transient, DisplayErrorContext(err).to_string())
        }
        _ => (S3Fault::Other, DisplayErrorContext(err).to_string()),
    }
}

/// Turns an SDK error into a [`SourceError`] with a message a person can act on.
pub fn classify<E, R>(err: SdkError<E, R>, what: &str) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (kind, detail) = fault(&err);
    let bucket_missing = detail.starts_with("NoSuchBucket");
    match kind {
        S3Fault::NotFound if bucket_missing => {
            SourceError::NotFound(format!("{what}: the bucket does not exist (NoSuchBucket)"))
        }
        S3Fault::NotFound => SourceError::NotFound(format!("{what} does not exist (NoSuchKey)")),
        S3Fault::AccessDenied => {
            let code = detail.split(' ').next().unwrap_or("");
            SourceError::AccessDenied(format!("{what}: access denied ({code})"))
        }
        S3Fault::Changed => SourceError::Changed(format!(
            "{what} changed since it was queued (etag no longer matches)"
        )),
        S3Fault::Transient => SourceError::Transient(format!("{what}: {detail}")),
        S3Fault::NoSuchUpload | S3Fault::Other => SourceError::Other(format!("{what}: {detail}")),
    }
}

impl S3Source {
    /// GetObject, from byte `from` on when it is not 0 (`Range`). A range past the end
    /// (416, InvalidRange: the object is shorter than the checkpoint says) reads the
    /// whole object again.
    async fn get(
        &self,
        location: &Location,
        if_match: Option<&str>,
        from: u64,
    ) -> Result<OpenedObject, SourceError> {
        let Location::S3(location) = location else {
            return Err(SourceError::Other(format!("{location} is not in a bucket")));
        };
        let mut from = from;
        let out = loop {
            let mut req = self
                .client
                .get_object()
                .bucket(&location.bucket)
                .key(&location.key);
            if let Some(etag) = if_match {
                req = req.if_match(etag);
            }
            if from > 0 {
                req = req.range(super::range_from(from));
            }
            match req.send().await {
                Ok(out) => break out,
                Err(e) => {
                    // A HEAD-less 404 on GetObject may come without a code: say what it is.
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    if from > 0 && status == Some(416) {
                        from = 0;
                        continue;
                    }
                    return Err(match (classify(e, &format!("object {location}")), status) {
                        (SourceError::Other(_), Some(404)) => {
                            SourceError::NotFound(format!("object {location} does not exist"))
                        }
                        (SourceError::Other(_), Some(403)) => {
                            SourceError::AccessDenied(format!("object {location}: access denied"))
                        }
                        (other, _) => other,
                    });
                }
            }
        };
        let (offset, size) = match out.content_range().and_then(super::content_range) {
            Some((start, size)) if from > 0 && start == from => (from, size),
            Some((start, _)) if from > 0 => {
                return Err(SourceError::Other(format!(
                    "object {location}: asked for bytes from {from}, answered from {start}"
                )))
            }
            _ => (0, out.content_length().and_then(|n| u64::try_from(n).ok())),
        };
        Ok(OpenedObject {
            size,
            etag: out.e_tag().map(str::to_string),
            body: Box::new(out.body.into_async_read()),
            offset,
        })
    }
}

impl Source for S3Source {
    fn open<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        Box::pin(self.get(location, if_match, 0))
    }

    fn open_from<'a>(
        &'a self,
        location: &'a Location,
        if_match: Option<&'a str>,
        credential: Option<&'a super::Credential>,
        from: u64,
    ) -> BoxFuture<'a, Result<OpenedObject, SourceError>> {
        if credential.is_some() {
            return self.open_authorized(location, if_match, credential);
        }
        Box::pin(self.get(location, if_match, from))
    }
}
