//! The one way siphon talks to AWS (and S3-compatible stores): every SDK client (S3,
//! SQS, Secrets Manager) is built from [`sdk_config`], which gives it siphon's own HTTP
//! client:
//!
//! - TLS is rustls with the `ring` provider, as everywhere else in siphon (one TLS
//!   provider in the tree, no C crypto library to build);
//! - every host name is resolved through the URL guard at the moment a connection is
//!   opened ([`GuardedResolver`]), in whatever process opens it: an endpoint whose name
//!   resolves to a private, loopback, link-local or otherwise special address is refused
//!   unless its `host:port` is in `SIPHON_URL_ALLOWLIST`, however it reached the worker
//!   (a request, a queued message, a stored row). Endpoints written as IP addresses
//!   never reach a resolver, so [`sdk_config`] checks them before building anything.

use std::fmt;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};

use crate::sources::http::{vet_host, Resolve, SystemResolver, UrlPolicy};
use crate::sources::SourceError;

/// Resolves host names for the SDK's connections, refusing those the guard refuses.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: UrlPolicy,
    /// The port connections go to (the allow-list is by `host:port`).
    port: u16,
    resolver: Arc<dyn Resolve>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("port", &self.port)
            .finish()
    }
}

impl GuardedResolver {
    /// A resolver for connections to `port`, checked against `policy`, looking names up
    /// with `resolver` (the system's in production, a table in tests).
    pub fn new(policy: UrlPolicy, port: u16, resolver: Arc<dyn Resolve>) -> Self {
        GuardedResolver {
            policy,
            port,
            resolver,
        }
    }
}

impl ResolveDns for GuardedResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            vet_host(&self.policy, &*self.resolver, name, self.port)
                .await
                .map_err(|e| {
                    tracing::warn!(host = name, port = self.port, error = %e, "connection refused by the URL guard");
                    ResolveDnsError::new(e)
                })
        })
    }
}

/// Where an SDK client connects and as whom. Empty fields fall back to the SDK's own
/// settings (`AWS_ENDPOINT_URL`, `AWS_REGION`, the function's role).
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// `(access key id, secret access key)` given with a request.
    pub credentials: Option<(String, String)>,
}

/// The endpoint clients built from the environment use (`AWS_ENDPOINT_URL`), if any.
fn env_endpoint() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The SDK configuration for `connection`, with siphon's guarded HTTP client. The
/// endpoint (given, or `AWS_ENDPOINT_URL`) is checked by the guard first: a refused one
/// is [`SourceError::Refused`], and nothing is built. No network call is made here.
pub async fn sdk_config(
    connection: &Connection,
    policy: &UrlPolicy,
) -> Result<SdkConfig, SourceError> {
    sdk_config_with(connection, policy, Arc::new(SystemResolver)).await
}

/// [`sdk_config`] with its own name resolver (tests resolve from a table).
pub async fn sdk_config_with(
    connection: &Connection,
    policy: &UrlPolicy,
    resolver: Arc<dyn Resolve>,
) -> Result<SdkConfig, SourceError> {
    let endpoint = connection.endpoint_url.clone().or_else(env_endpoint);
    let port = match &endpoint {
        Some(url) => {
            let parsed = url::Url::parse(url.trim()).map_err(|e| {
                SourceError::Refused(format!("endpoint-url: not a valid URL ({e})"))
            })?;
            crate::sources::http::check_url(policy, &*resolver, &parsed).await?;
            parsed.port_or_known_default().unwrap_or(443)
        }
        None => 443,
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_with_resolver(GuardedResolver::new(policy.clone(), port, resolver));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &connection.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some((id, secret)) = &connection.credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "siphon-request",
        ));
    }
    if let Some(url) = &connection.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    Ok(loader.load().await)
}

/// The SDK configuration of the function itself (its role, `AWS_ENDPOINT_URL`), checked
/// against the allow-list of the environment. A refused `AWS_ENDPOINT_URL` is a
/// misconfiguration: it stops the cold start with the guard's reason.
pub async fn own_config() -> Result<SdkConfig, SourceError> {
    let policy = UrlPolicy::from_env(&crate::config::Env::from_process());
    sdk_config(&Connection::default(), &policy).await
}
