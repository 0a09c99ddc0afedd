//! The URL-safety guard and the HTTPS source, against servers on 127.0.0.1 only.
//!
//! Nothing here needs Postgres or LocalStack, and nothing may reach past loopback even if
//! the guard is broken: host names go through a table ([`Table`]), and the connector
//! ([`Recorder`]) records every address it is asked for and opens loopback connections
//! only. Refusals are proven twice: the error says why, and the listener or connector
//! behind the refused address saw nothing.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;
use siphon::sources::http::{Connect, HttpSource, Resolve, UrlPolicy};
use siphon::sources::{OpenedObject, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Host names the tests use, and where the table sends them.
const NAMES: &[(&str, &[&str])] = &[
    ("data.test", &["127.0.0.1"]),
    ("other.test", &["127.0.0.1"]),
    ("internal.test", &["10.0.0.1"]),
    ("metadata.test", &["169.254.169.254"]),
    ("ula.test", &["fd00::1"]),
    ("mapped.test", &["::ffff:127.0.0.1"]),
    ("nat64.test", &["64:ff9b::a9fe:a9fe"]),
    ("linklocal6.test", &["fe80::1"]),
    ("cgnat.test", &["100.64.0.1"]),
    ("zero.test", &["0.0.0.0"]),
    ("mixed.test", &["93.184.215.14", "10.0.0.1"]),
];

/// A DNS table that records every question.
#[derive(Default)]
struct Table {
    asked: Mutex<Vec<String>>,
}

impl Resolve for Table {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        self.asked.lock().unwrap().push(host.to_string());
        let found = NAMES.iter().find(|(name, _)| *name == host);
        Box::pin(async move {
            let (_, ips) = found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, host))?;
            Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect())
        })
    }
}

impl Table {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// Records every address it is asked to connect to; connects to loopback ones only
/// (when `loopback` is set), and fails every other.
struct Recorder {
    loopback: bool,
    calls: Mutex<Vec<SocketAddr>>,
}

impl Recorder {
    fn new(loopback: bool) -> Arc<Self> {
        Arc::new(Recorder {
            loopback,
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<SocketAddr> {
        self.calls.lock().unwrap().clone()
    }
}

impl Connect for Recorder {
    fn connect<'a>(&'a self, addr: SocketAddr) -> BoxFuture<'a, io::Result<TcpStream>> {
        self.calls.lock().unwrap().push(addr);
        Box::pin(async move {
            if self.loopback && addr.ip().is_loopback() {
                TcpStream::connect(addr).await
            } else {
                Err(io::Error::other(format!(
                    "the test connector refuses {addr}"
                )))
            }
        })
    }
}

/// A TCP listener on loopback that counts the connections it accepts.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    /// On `ip`; `None` when that loopback (e.g. `::1`) is not available here.
    async fn on(ip: &str) -> Option<Listener> {
        let listener = TcpListener::bind((ip, 0)).await.ok()?;
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Some(Listener { port, accepted })
    }

    /// Connections seen, after giving any in flight a moment to land.
    async fn accepted(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.accepted.load(Ordering::SeqCst)
    }
}

fn refusal(result: Result<impl Sized, SourceError>) -> String {
    match result {
        Err(SourceError::Refused(m)) => m,
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("expected Refused, got success"),
    }
}

fn error_of(result: Result<OpenedObject, SourceError>) -> SourceError {
    match result {
        Err(e) => e,
        Ok(_) => panic!("expected an error, got the object"),
    }
}

async fn read_all(mut object: OpenedObject) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    object.body.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

#[tokio::test]
async fn loopback_literals_are_refused_and_never_connected() {
    let v4 = Listener::on("127.0.0.1").await.unwrap();
    let v6 = Listener::on("::1").await;
    let source = HttpSource::new(UrlPolicy::deny_all_private());
    let mut urls = vec![
        format!("http://127.0.0.1:{}/", v4.port),
        format!("https://127.0.0.1:{}/data.ndjson.gz", v4.port),
        format!("https://127.1:{}/", v4.port),
        format!("https://0x7f.0.0.1:{}/", v4.port),
        format!("https://2130706433:{}/", v4.port),
        format!("https://[::ffff:127.0.0.1]:{}/", v4.port),
    ];
    match &v6 {
        Some(v6) => urls.extend([
            format!("http://[::1]:{}/", v6.port),
            format!("https://[::1]:{}/", v6.port),
        ]),
        None => eprintln!("::1 is not available here: IPv6 loopback not tried"),
    }
    for url in &urls {
        let m = refusal(source.check(url).await);
        assert!(m.contains("refused"), "{url}: {m}");
        let m = refusal(source.open_url(url, None).await);
        assert!(
            m.contains("loopback") || m.contains("http is only allowed"),
            "{url}: {m}"
        );
    }
    let m = refusal(
        source
            .open_url(&format!("https://127.0.0.1:{}/", v4.port), None)
            .await,
    );
    assert!(m.contains("127.0.0.1 is a loopback address"), "{m}");
    assert_eq!(v4.accepted().await, 0, "a refused URL was connected to");
    if let Some(v6) = v6 {
        assert_eq!(v6.accepted().await, 0, "a refused URL was connected to");
    }
}

#[tokio::test]
async fn other_schemes_and_user_info_are_refused_before_any_lookup() {
    let table = Arc::new(Table::default());
    let connector = Recorder::new(false);
    let source = HttpSource::with_parts(
        UrlPolicy::allowing(&["data.test:443"]),
        table.clone(),
        connector.clone(),
        RootCertStore::empty(),
    );
    for (url, what) in [
        ("file:///etc/passwd", "\"file\""),
        ("gopher://example.invalid/x", "\"gopher\""),
        ("ftp://data.test/x.ndjson.gz", "\"ftp\""),
        ("s3://bucket/key", "\"s3\""),
        ("http://example.invalid/x", "http is only allowed"),
        ("no scheme at all", "not a valid URL"),
    ] {
        let m = refusal(source.check(url).await);
        assert!(m.contains(what), "{url}: {m}");
        let m = refusal(source.open_url(url, None).await);
        assert!(m.contains(what), "{url}: {m}");
    }
    // Even an allow-listed host: no credentials in URLs, and none in the message.
    let url = "https://admin:hunter2@data.test/x.ndjson.gz?X-Amz-Signature=abc";
    let m = refusal(source.open_url(url, None).await);
    assert!(m.contains("user name or password"), "{m}");
    assert!(
        !m.contains("hunter2") && !m.contains("admin") && !m.contains("Signature"),
        "{m}"
    );
    assert!(table.asked().is_empty(), "resolved: {:?}", table.asked());
    assert!(
        connector.calls().is_empty(),
        "connected: {:?}",
        connector.calls()
    );
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_refused() {
    let table = Arc::new(Table::default());
    let connector = Recorder::new(false);
    let source = HttpSource::with_parts(
        UrlPolicy::allowing(&["localhost:4566"]),
        table.clone(),
        connector.clone(),
        RootCertStore::empty(),
    );
    for (host, what) in [
        ("internal.test", "resolves to 10.0.0.1, a private address"),
        (
            "metadata.test",
            "resolves to 169.254.169.254, a link-local address (the cloud metadata service)",
        ),
        ("ula.test", "resolves to fd00::1, a unique-local address"),
        (
            "mapped.test",
            "resolves to ::ffff:127.0.0.1, the IPv4-mapped form of 127.0.0.1, a loopback address",
        ),
        (
            "nat64.test",
            "the NAT64 form of 169.254.169.254, a link-local address (the cloud metadata service)",
        ),
        (
            "linklocal6.test",
            "resolves to fe80::1, a link-local address",
        ),
        ("cgnat.test", "carrier-grade NAT"),
        ("zero.test", "resolves to 0.0.0.0, an unspecified address"),
        ("mixed.test", "resolves to 10.0.0.1, a private address"),
    ] {
        let url = format!("https://{host}/Patient.ndjson.gz?token=secret");
        let m = refusal(source.check(&url).await);
        assert!(m.contains(host) && m.contains(what), "{url}: {m}");
        assert!(!m.contains("secret"), "{m}");
        let m = refusal(source.open_url(&url, Some("\"etag\"")).await);
        assert!(m.contains(what), "{url}: {m}");
    }
    assert!(table.asked().contains(&"metadata.test".to_string()));
    assert!(
        connector.calls().is_empty(),
        "connected: {:?}",
        connector.calls()
    );
}

/// A CA made for one test, and a key and certificate it signed for `names`.
struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new(names: &[&str]) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "siphon test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params.signed_by(&key, &ca).unwrap();
        Pki {
            ca: ca.der().clone(),
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }
}

/// The test file: a few MB of gzipped ndjson, made once.
fn big_file() -> Arc<Vec<u8>> {
    static FILE: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let gz = siphon_tests::gen::gzip(&siphon_tests::gen::ndjson("Patient", 30_000, 7));
        Arc::new(gz)
    })
    .clone()
}

/// Request line and If-Match of every request a [`Server`] answered.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

const ETAG: &str = "\"v1-3f2a\"";

/// An HTTPS server on 127.0.0.1 with a certificate for `data.test`, answering by path:
/// `/data.ndjson.gz` (the big file, honouring If-Match), `/redirect?to=URL`,
/// `/status/N`, `/truncated` (a body cut short), `/weak` (a weak ETag).
struct Server {
    port: u16,
    pki: Pki,
    seen: Seen,
}

impl Server {
    async fn start() -> Server {
        let pki = Pki::new(&["data.test"]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake: fine.
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, log).await;
                    }
                });
            }
        });
        Server { port, pki, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("https://data.test:{}{path}", self.port)
    }

    /// A source trusting this server's CA, allowing `data.test:<port>` (it is 127.0.0.1).
    fn source(&self, connector: Arc<Recorder>) -> HttpSource {
        let policy = UrlPolicy::allowing(&[&format!("data.test:{}", self.port)]);
        HttpSource::with_parts(
            policy,
            Arc::new(Table::default()),
            connector,
            self.pki.roots(),
        )
    }
}

async fn serve<S>(mut stream: S, seen: Seen) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let request_line = head.lines().next().unwrap_or("").to_string();
    let if_match = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("if-match")
            .then(|| value.trim().to_string())
    });
    seen.lock()
        .unwrap()
        .push((request_line.clone(), if_match.clone()));
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("https://data.test{target}")).unwrap();

    let respond = |status: &str, headers: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match url.path() {
        "/data.ndjson.gz" if if_match.as_deref().is_some_and(|m| m != ETAG) => {
            stream
                .write_all(respond("412 Precondition Failed", "", 0).as_bytes())
                .await?;
        }
        "/data.ndjson.gz" => {
            let file = big_file();
            let headers = format!("ETag: {ETAG}\r\nContent-Type: application/gzip\r\n");
            stream
                .write_all(respond("200 OK", &headers, file.len()).as_bytes())
                .await?;
            for chunk in file.chunks(64 * 1024) {
                stream.write_all(chunk).await?;
            }
        }
        "/redirect" => {
            let to = url
                .query_pairs()
                .find(|(k, _)| k == "to")
                .unwrap()
                .1
                .to_string();
            let headers = format!("Location: {to}\r\n");
            stream
                .write_all(respond("302 Found", &headers, 0).as_bytes())
                .await?;
        }
        "/loop" => {
            stream
                .write_all(respond("301 Moved Permanently", "Location: /loop\r\n", 0).as_bytes())
                .await?;
        }
        "/truncated" => {
            stream
                .write_all(respond("200 OK", "", 100_000).as_bytes())
                .await?;
            stream.write_all(&[b'x'; 1000]).await?;
        }
        "/weak" => {
            stream
                .write_all(respond("200 OK", "ETag: W/\"w1\"\r\n", 2).as_bytes())
                .await?;
            stream.write_all(b"hi").await?;
        }
        path => {
            let code = path.strip_prefix("/status/").unwrap_or("404");
            stream
                .write_all(respond(&format!("{code} Test"), "", 0).as_bytes())
                .await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

#[tokio::test]
async fn streams_a_gzipped_file_over_tls_from_an_allowed_host() {
    let server = Server::start().await;
    let connector = Recorder::new(true);
    let source = server.source(connector.clone());
    let url = server.url("/data.ndjson.gz?X-Amz-Signature=abc");
    source.check(&url).await.unwrap();
    // http is allowed too for an allow-listed host:port (the check alone: it speaks TLS).
    source
        .check(&format!("http://data.test:{}/", server.port))
        .await
        .unwrap();

    let file = big_file();
    assert!(
        file.len() > 2 * 1024 * 1024,
        "the file is {} bytes",
        file.len()
    );
    let object = source.open_url(&url, None).await.unwrap();
    assert_eq!(object.size, Some(file.len() as u64));
    assert_eq!(object.etag.as_deref(), Some(ETAG));
    let got = read_all(object).await.unwrap();
    assert!(
        got == *file,
        "got {} bytes, not the file's {}",
        got.len(),
        file.len()
    );

    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    assert_eq!(connector.calls(), vec![addr]);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].0,
        "GET /data.ndjson.gz?X-Amz-Signature=abc HTTP/1.1"
    );
}

#[tokio::test]
async fn if_match_is_sent_and_a_changed_file_says_so() {
    let server = Server::start().await;
    let source = server.source(Recorder::new(true));
    let url = server.url("/data.ndjson.gz");
    let object = source.open_url(&url, Some(ETAG)).await.unwrap();
    assert_eq!(read_all(object).await.unwrap().len(), big_file().len());
    let err = error_of(source.open_url(&url, Some("\"v0-old\"")).await);
    assert!(matches!(err, SourceError::Changed(_)), "{err:?}");
    assert!(err.to_string().contains("changed"), "{err}");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0].1.as_deref(), Some(ETAG));
    assert_eq!(seen[1].1.as_deref(), Some("\"v0-old\""));
}

#[tokio::test]
async fn status_codes_map_to_source_errors() {
    let server = Server::start().await;
    let source = server.source(Recorder::new(true));
    for (code, expected) in [
        (404, "NotFound"),
        (410, "NotFound"),
        (401, "AccessDenied"),
        (403, "AccessDenied"),
        (412, "Changed"),
        (408, "Transient"),
        (429, "Transient"),
        (500, "Transient"),
        (503, "Transient"),
        (400, "Other"),
        (418, "Other"),
    ] {
        let err = error_of(
            source
                .open_url(&server.url(&format!("/status/{code}")), None)
                .await,
        );
        let kind = format!("{err:?}");
        assert!(kind.starts_with(expected), "{code}: {kind}");
        assert!(err.to_string().contains(&code.to_string()), "{code}: {err}");
    }
    // A weak ETag is not reported: it could never satisfy If-Match.
    let object = source.open_url(&server.url("/weak"), None).await.unwrap();
    assert_eq!(object.etag, None);
    assert_eq!(read_all(object).await.unwrap(), b"hi");
}

#[tokio::test]
async fn a_body_cut_short_fails_on_read() {
    let server = Server::start().await;
    let source = server.source(Recorder::new(true));
    let object = source
        .open_url(&server.url("/truncated"), None)
        .await
        .unwrap();
    assert_eq!(object.size, Some(100_000));
    let err = read_all(object).await.unwrap_err();
    assert!(err.to_string().contains("/truncated"), "{err}");
}

#[tokio::test]
async fn every_redirect_hop_is_checked() {
    let server = Server::start().await;
    let listener = Listener::on("127.0.0.1").await.unwrap();
    let connector = Recorder::new(true);
    let source = server.source(connector.clone());
    let first_hop = SocketAddr::from(([127, 0, 0, 1], server.port));
    let redirect = |to: &str| {
        let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
        server.url(&format!("/redirect?to={to}"))
    };

    for (to, what) in [
        (
            format!("http://127.0.0.1:{}/", listener.port),
            "http is only allowed",
        ),
        (
            format!("https://127.0.0.1:{}/", listener.port),
            "127.0.0.1 is a loopback address",
        ),
        (
            "https://internal.test/x".to_string(),
            "resolves to 10.0.0.1, a private address",
        ),
        (
            "https://metadata.test/latest/meta-data/".to_string(),
            "169.254.169.254",
        ),
        ("file:///etc/passwd".to_string(), "\"file\""),
    ] {
        let m = refusal(source.open_url(&redirect(&to), None).await);
        assert!(m.contains(what), "{to}: {m}");
        // The first hop was fetched, the refused one never connected.
        assert!(
            connector.calls().iter().all(|a| *a == first_hop),
            "{to}: {:?}",
            connector.calls()
        );
    }
    assert_eq!(
        listener.accepted().await,
        0,
        "a refused redirect was connected to"
    );

    // An allowed redirect is followed; an endless one is not.
    let object = source
        .open_url(&redirect("/data.ndjson.gz"), None)
        .await
        .unwrap();
    assert_eq!(read_all(object).await.unwrap(), *big_file());
    let err = error_of(source.open_url(&server.url("/loop"), None).await);
    assert!(
        matches!(&err, SourceError::Other(m) if m.contains("redirects")),
        "{err:?}"
    );
    let loops = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| l.contains("/loop"))
        .count();
    assert_eq!(loops, 6, "the first request and 5 redirects");
}

#[tokio::test]
async fn untrusted_or_misnamed_certificates_fail() {
    let server = Server::start().await;
    // The certificate is for data.test, not other.test (which also leads to 127.0.0.1).
    let policy = UrlPolicy::allowing(&[&format!("other.test:{}", server.port)]);
    let source = HttpSource::with_parts(
        policy,
        Arc::new(Table::default()),
        Recorder::new(true),
        server.pki.roots(),
    );
    let err = error_of(
        source
            .open_url(
                &format!("https://other.test:{}/data.ndjson.gz", server.port),
                None,
            )
            .await,
    );
    assert!(!matches!(err, SourceError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");

    // The right name, but a CA the source does not trust.
    let stranger = Pki::new(&["data.test"]);
    let policy = UrlPolicy::allowing(&[&format!("data.test:{}", server.port)]);
    let source = HttpSource::with_parts(
        policy,
        Arc::new(Table::default()),
        Recorder::new(true),
        stranger.roots(),
    );
    let err = error_of(source.open_url(&server.url("/data.ndjson.gz"), None).await);
    assert!(!matches!(err, SourceError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Nothing was served to either.
    assert!(server.seen.lock().unwrap().is_empty());
}
