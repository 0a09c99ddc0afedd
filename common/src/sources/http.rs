//! Files behind `https://` URLs, fetched safely.
//!
//! Every URL, and every redirect hop, first passes the guard ([`UrlPolicy`], see
//! `http/guard.rs`): https only, no user info, no private, loopback, link-local or otherwise
//! special address unless its `host:port` is allow-listed. The host is resolved once,
//! through the [`Resolve`] port, and the connection is opened (through the [`Connect`]
//! port) only to the addresses that passed, so a DNS answer that changes between the
//! check and the fetch (rebinding) cannot redirect it. TLS is rustls with the `ring`
//! provider, verified against the URL's host name.
//!
//! Each hop is one HTTP/1.1 connection (no pool): a fetch streams a whole file, so
//! reusing connections buys nothing, and a pool keyed by host name could hand a
//! connection checked for one answer to a request vetted against another.

mod guard;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body_util::{BodyStream, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, HOST, IF_MATCH,
    LOCATION, RANGE, USER_AGENT,
};
pub use hyper::header::{HeaderName, HeaderValue};
pub use hyper::Method;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::io::StreamReader;
use url::{Host, Position, Url};

pub use guard::{special_purpose, UrlPolicy, ALLOWLIST_ENV, RUNTIME_API_ENV};

use super::{Credential, OpenedObject, SourceError};
use guard::{shown, Vetted};

/// How long opening the TCP connection may take (all pinned addresses together), and
/// then, separately, the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer with the response headers.
pub const RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a host name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the body may stall between two chunks before the read fails.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Checks `url` against `policy` as a fetch would (scheme, user info, every resolved
/// address), without connecting: what clients of other protocols (the AWS SDK) call for
/// an endpoint before they are built.
pub async fn check_url(
    policy: &UrlPolicy,
    resolver: &dyn Resolve,
    url: &Url,
) -> Result<(), SourceError> {
    guard::vet(policy, resolver, url).await.map(|_| ())
}

/// The addresses a connection to `host:port` may use, or why none may: `host` is
/// resolved with `resolver` and each address checked against `policy` as for an
/// `https://host:port/` URL. The AWS SDK's connections resolve names through this.
pub async fn vet_host(
    policy: &UrlPolicy,
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
) -> Result<Vec<IpAddr>, SourceError> {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = Url::parse(&format!("https://{host}:{port}/"))
        .map_err(|_| SourceError::Refused(format!("{host} is not a valid host name")))?;
    let vetted = guard::vet(policy, resolver, &url).await?;
    Ok(vetted.addrs.iter().map(|a| a.ip()).collect())
}

/// Turns a host name into addresses (the DNS port; tests plug in a table).
pub trait Resolve: Send + Sync {
    /// Every address `host` resolves to; `port` is a hint some resolvers need.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo`, through `tokio::net::lookup_host`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let mut ips = Vec::new();
            for addr in tokio::net::lookup_host((host, port)).await? {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }
}

/// Opens TCP connections (the network port; tests plug in one that records or refuses).
/// It is only ever given addresses that passed the guard.
pub trait Connect: Send + Sync {
    /// A TCP connection to `addr`.
    fn connect<'a>(&'a self, addr: SocketAddr) -> BoxFuture<'a, io::Result<TcpStream>>;
}

/// Plain `tokio::net::TcpStream::connect`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    fn connect<'a>(&'a self, addr: SocketAddr) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// The answer to [`HttpSource::call`]: status, headers and the body, streamed.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Box<dyn AsyncRead + Send + Unpin>,
    /// The URL that answered (after redirects).
    pub url: String,
}

/// Files behind `https://` URLs (and `http://` ones for allow-listed hosts). Cheap to
/// clone: clones share the resolver, connector and TLS settings.
#[derive(Clone)]
pub struct HttpSource {
    inner: Arc<Inner>,
}

struct Inner {
    policy: UrlPolicy,
    resolver: Arc<dyn Resolve>,
    connector: Arc<dyn Connect>,
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// What the connection runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl HttpSource {
    /// The production source: system DNS, plain TCP, the Mozilla (webpki) roots.
    pub fn new(policy: UrlPolicy) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_parts(
            policy,
            Arc::new(SystemResolver),
            Arc::new(TcpConnect),
            roots,
        )
    }

    /// A source with its own resolver, connector and trusted roots (tests use a table of
    /// names, a recording connector and a CA made on the spot).
    pub fn with_parts(
        policy: UrlPolicy,
        resolver: Arc<dyn Resolve>,
        connector: Arc<dyn Connect>,
        roots: rustls::RootCertStore,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpSource {
            inner: Arc::new(Inner {
                policy,
                resolver,
                connector,
                tls: TlsConnector::from(Arc::new(config)),
            }),
        }
    }

    /// The policy URLs are checked against.
    pub fn policy(&self) -> &UrlPolicy {
        &self.inner.policy
    }

    /// Scheme + host + resolved-address checks, no connection: what the API calls to answer
    /// 400 early. [`SourceError::Refused`] means the URL is not allowed; a host that does
    /// not resolve is [`SourceError::NotFound`] (or `Transient` when DNS failed for now).
    pub async fn check(&self, url: &str) -> Result<(), SourceError> {
        let url = guard::parse(url)?;
        self.vet(&url).await.map(|_| ())
    }

    /// GETs the URL and streams its body (never buffered whole). `if_match` is an ETag to
    /// require: it is sent as `If-Match`, and a 412 answer is [`SourceError::Changed`].
    /// Redirects (301, 302, 303, 307, 308) are followed up to [`MAX_REDIRECTS`] times,
    /// each hop checked like the first URL. Only strong ETags are reported: a weak one
    /// (`W/"..."`) could never satisfy `If-Match`.
    pub async fn open_url(
        &self,
        url: &str,
        if_match: Option<&str>,
    ) -> Result<OpenedObject, SourceError> {
        self.open_url_with(url, if_match, None).await
    }

    /// [`HttpSource::open_url`] sending `credential` (an `Authorization` header, a
    /// provider's headers) to the URL's origin only: a redirect to another origin goes
    /// without it.
    pub async fn open_url_with(
        &self,
        url: &str,
        if_match: Option<&str>,
        credential: Option<&Credential>,
    ) -> Result<OpenedObject, SourceError> {
        let headers = if_match_header(if_match)?;
        let (url, response) = self
            .request(Method::GET, url, &headers, credential, &Bytes::new())
            .await?;
        opened(&url, response)
    }

    /// [`HttpSource::open_url_with`] from byte `from` on (`Range: bytes=from-`). A 206
    /// whose `Content-Range` starts at `from` is the rest of the file (offset `from`, size
    /// the whole file's); a 200 is the whole file (offset 0: the server does not do
    /// ranges); a 416 (nothing at `from`: the file is shorter than the checkpoint says)
    /// reads the whole file again. A 206 of another range is refused.
    pub async fn open_url_from(
        &self,
        url: &str,
        if_match: Option<&str>,
        credential: Option<&Credential>,
        from: u64,
    ) -> Result<OpenedObject, SourceError> {
        if from == 0 {
            return self.open_url_with(url, if_match, credential).await;
        }
        let mut headers = if_match_header(if_match)?;
        let range = super::range_from(from);
        headers.push((RANGE, HeaderValue::from_str(&range).expect("ASCII")));
        let (final_url, response) = self
            .request(Method::GET, url, &headers, credential, &Bytes::new())
            .await?;
        match response.status() {
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return self.open_url_with(url, if_match, credential).await;
            }
            StatusCode::PARTIAL_CONTENT => {}
            _ => return opened(&final_url, response),
        }
        let answered = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match answered.as_deref().and_then(super::content_range) {
            Some((start, size)) if start == from => {
                let mut object = opened(&final_url, response)?;
                object.offset = from;
                object.size = size;
                Ok(object)
            }
            _ => Err(SourceError::Other(format!(
                "{}: asked for {range}, answered Content-Range {}",
                shown(&final_url),
                answered.as_deref().unwrap_or("(none)")
            ))),
        }
    }

    /// One request of a protocol client (the Bulk Data client of a pull import): any
    /// method, extra `headers`, and `credential` sent to the first URL's origin only.
    /// GET follows redirects as [`HttpSource::open_url`] does, each hop vetted; other
    /// methods answer the first response. The answer is not judged by its status: the
    /// caller reads it (202, 429 and `Retry-After` mean something to it).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        credential: Option<&Credential>,
    ) -> Result<Answer, SourceError> {
        self.call_with_body(method, url, headers, credential, Bytes::new())
            .await
    }

    /// [`HttpSource::call`] sending `body` (a token request's form, say).
    pub async fn call_with_body(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        credential: Option<&Credential>,
        body: Bytes,
    ) -> Result<Answer, SourceError> {
        let (url, response) = self
            .request(method, url, headers, credential, &body)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok(Answer {
            status,
            headers,
            body: body_reader(shown(&url), response.into_body()),
            url: url.to_string(),
        })
    }

    /// Sends the request through the guard, following GET redirects; the final URL and
    /// response.
    async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        credential: Option<&Credential>,
        body: &Bytes,
    ) -> Result<(Url, Response<Incoming>), SourceError> {
        let first = guard::parse(url)?;
        let mut url = first.clone();
        let mut redirects = 0;
        loop {
            let target = match self.vet(&url).await {
                Err(SourceError::Refused(m)) if redirects > 0 => {
                    return Err(SourceError::Refused(format!("redirected: {m}")));
                }
                other => other?,
            };
            let mut all: Vec<(HeaderName, HeaderValue)> = headers.to_vec();
            if let Some(c) = credential.filter(|_| url.origin() == first.origin()) {
                all.extend(credential_headers(c)?);
            }
            let response = self
                .send(&target, method.clone(), &all, body.clone())
                .await?;
            let status = response.status();
            if method != Method::GET || !is_redirect(status) {
                return Ok((target.url, response));
            }
            let Some(next) = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            else {
                return Err(SourceError::Other(format!(
                    "{}: HTTP {status} without a usable Location",
                    shown(&url)
                )));
            };
            if redirects == MAX_REDIRECTS {
                return Err(SourceError::Other(format!(
                    "{}: more than {MAX_REDIRECTS} redirects",
                    shown(&url)
                )));
            }
            redirects += 1;
            tracing::debug!(from = %shown(&url), to = %shown(&next), %status, "following a redirect");
            url = next;
        }
    }

    async fn vet(&self, url: &Url) -> Result<Vetted, SourceError> {
        guard::vet(&self.inner.policy, &*self.inner.resolver, url).await
    }

    /// One request to a vetted URL, over a connection to one of its pinned addresses.
    async fn send(
        &self,
        target: &Vetted,
        method: Method,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Response<Incoming>, SourceError> {
        let url = &target.url;
        let tcp = self.connect(target).await?;
        let io: Box<dyn Io> = if url.scheme() == "https" {
            Box::new(self.tls(target, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| SourceError::Transient(format!("{}: {e}", shown(url))))?;
        let shown_url = shown(url);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(url = %shown_url, error = %e, "HTTP connection ended with an error");
            }
        });

        let mut request = Request::builder()
            .method(method.clone())
            .uri(&url[Position::BeforePath..Position::AfterQuery])
            .header(HOST, host_header(url))
            .header(USER_AGENT, concat!("siphon/", env!("CARGO_PKG_VERSION")))
            // The stored bytes, as they are: a .gz file must not be decoded on the way.
            .header(ACCEPT_ENCODING, "identity");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| SourceError::Other(format!("{}: {e}", shown(url))))?;
        tracing::debug!(url = %shown(url), %method, "request");
        let response = tokio::time::timeout(RESPONSE_HEADERS_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| {
                SourceError::Transient(format!(
                    "{}: no response within {} s",
                    shown(url),
                    RESPONSE_HEADERS_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| {
                let message = format!("{}: {e}", shown(url));
                if e.is_parse() || e.is_user() {
                    SourceError::Other(message)
                } else {
                    SourceError::Transient(message)
                }
            })?;
        Ok(response)
    }

    /// A TCP connection to the first pinned address that answers.
    async fn connect(&self, target: &Vetted) -> Result<TcpStream, SourceError> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut last = String::from("no address");
        for addr in &target.addrs {
            match tokio::time::timeout_at(deadline, self.inner.connector.connect(*addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => {
                    tracing::debug!(url = %shown(&target.url), %addr, error = %e, "connect failed");
                    last = format!("{addr}: {e}");
                }
                Err(_) => {
                    last = format!("timed out after {} s", CONNECT_TIMEOUT.as_secs());
                    break;
                }
            }
        }
        Err(SourceError::Transient(format!(
            "{}: cannot connect ({last})",
            shown(&target.url)
        )))
    }

    /// The TLS handshake, verifying the certificate against the URL's host.
    async fn tls(
        &self,
        target: &Vetted,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SourceError> {
        let url = &target.url;
        let name = match &target.host {
            Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|_| {
                SourceError::Other(format!(
                    "{}: {d} is not a valid TLS server name",
                    shown(url)
                ))
            })?,
            Host::Ipv4(ip) => ServerName::from(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => ServerName::from(IpAddr::V6(*ip)),
        };
        let handshake = self.inner.tls.connect(name, tcp);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                let tls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                match tls_error {
                    // A certificate problem will not fix itself on a retry.
                    Some(tls) => Err(SourceError::Other(format!(
                        "{}: TLS handshake failed: {tls}",
                        shown(url)
                    ))),
                    None => Err(SourceError::Transient(format!(
                        "{}: TLS handshake failed: {e}",
                        shown(url)
                    ))),
                }
            }
            Err(_) => Err(SourceError::Transient(format!(
                "{}: TLS handshake timed out after {} s",
                shown(url),
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// `host[:port]`, the port only when it is not the scheme's default.
fn host_header(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    }
}

/// The status of a final (non-redirect) answer, as a [`SourceError`] when it is not a
/// success.
fn status_error(url: &Url, status: StatusCode) -> Option<SourceError> {
    let url = shown(url);
    Some(match status.as_u16() {
        200..=299 => return None,
        404 | 410 => SourceError::NotFound(format!("{url} does not exist (HTTP {status})")),
        401 | 403 => SourceError::AccessDenied(format!("{url}: access denied (HTTP {status})")),
        412 => SourceError::Changed(format!(
            "{url} changed since it was queued (etag no longer matches, HTTP {status})"
        )),
        408 | 429 | 500..=599 => SourceError::Transient(format!("{url}: HTTP {status}")),
        _ => SourceError::Other(format!("{url}: unexpected HTTP {status}")),
    })
}

/// `If-Match: etag`, or no header.
fn if_match_header(if_match: Option<&str>) -> Result<Vec<(HeaderName, HeaderValue)>, SourceError> {
    let Some(etag) = if_match else {
        return Ok(Vec::new());
    };
    let value = HeaderValue::from_str(etag)
        .map_err(|_| SourceError::Other(format!("etag {etag:?} is not a valid If-Match value")))?;
    Ok(vec![(IF_MATCH, value)])
}

fn opened(url: &Url, response: Response<Incoming>) -> Result<OpenedObject, SourceError> {
    if let Some(error) = status_error(url, response.status()) {
        return Err(error);
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::trim)
    };
    let size = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let etag = header(ETAG)
        .filter(|e| !e.is_empty() && !e.starts_with("W/"))
        .map(str::to_string);
    Ok(OpenedObject {
        size,
        etag,
        body: body_reader(shown(url), response.into_body()),
        offset: 0,
    })
}

/// The body as an `AsyncRead`: chunks as they arrive, a network error or a stall longer
/// than [`BODY_IDLE_TIMEOUT`] as an `io::Error`.
fn body_reader(url: String, body: Incoming) -> Box<dyn AsyncRead + Send + Unpin> {
    let frames = Box::pin(BodyStream::new(body));
    let chunks = futures::stream::unfold(Some((frames, url)), |state| async move {
        let (mut frames, url) = state?;
        loop {
            match tokio::time::timeout(BODY_IDLE_TIMEOUT, frames.next()).await {
                Err(_) => {
                    let message = format!(
                        "{url}: no data for {} s while reading the body",
                        BODY_IDLE_TIMEOUT.as_secs()
                    );
                    return Some((Err(io::Error::new(io::ErrorKind::TimedOut, message)), None));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    let error = io::Error::other(format!("{url}: reading the body failed: {e}"));
                    return Some((Err(error), None));
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Some((Ok(data), Some((frames, url)))),
                    _ => continue,
                },
            }
        }
    });
    Box::new(StreamReader::new(Box::pin(chunks)))
}
/// A credential's headers, each marked sensitive (never logged by the HTTP stack).
fn credential_headers(c: &Credential) -> Result<Vec<(HeaderName, HeaderValue)>, SourceError> {
    let invalid = || SourceError::Other("the credential is not a valid header value".into());
    let mut out = Vec::with_capacity(c.headers.len() + 1);
    if let Some(a) = &c.authorization {
        let mut value = HeaderValue::from_str(a).map_err(|_| invalid())?;
        value.set_sensitive(true);
        out.push((AUTHORIZATION, value));
    }
    for (name, value) in &c.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}
