//! Test servers and network stand-ins shared by the URL tests: a DNS table, a recording
//! connector that only ever opens loopback connections, a counting listener, a test CA
//! and an HTTPS server on 127.0.0.1. Nothing here can reach past loopback.

#![allow(dead_code)]

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
pub const NAMES: &[(&str, &[&str])] = &[
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
pub struct Table {
    pub asked: Mutex<Vec<String>>,
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
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// Records every address it is asked to connect to; connects to loopback ones only
/// (when `loopback` is set), and fails every other.
pub struct Recorder {
    pub loopback: bool,
    pub calls: Mutex<Vec<SocketAddr>>,
}

impl Recorder {
    pub fn new(loopback: bool) -> Arc<Self> {
        Arc::new(Recorder {
            loopback,
            calls: Mutex::default(),
        })
    }

    pub fn calls(&self) -> Vec<SocketAddr> {
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
pub struct Listener {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
}

impl Listener {
    /// On `ip`; `None` when that loopback (e.g. `::1`) is not available here.
    pub async fn on(ip: &str) -> Option<Listener> {
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
    pub async fn accepted(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.accepted.load(Ordering::SeqCst)
    }
}

pub fn refusal(result: Result<impl Sized, SourceError>) -> String {
    match result {
        Err(SourceError::Refused(m)) => m,
        Err(other) => panic!("expected Refused, got {other:?}"),
        Ok(_) => panic!("expected Refused, got success"),
    }
}

pub fn error_of(result: Result<OpenedObject, SourceError>) -> SourceError {
    match result {
        Err(e) => e,
        Ok(_) => panic!("expected an error, got the object"),
    }
}

pub async fn read_all(mut object: OpenedObject) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    object.body.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// A CA made for one test, and a key and certificate it signed for `names`.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new(names: &[&str]) -> Pki {
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

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        roots
    }
}

/// The test file: a few MB of gzipped ndjson, made once.
pub fn big_file() -> Arc<Vec<u8>> {
    static FILE: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let gz = siphon_tests::gen::gzip(&siphon_tests::gen::ndjson("Patient", 30_000, 7));
        Arc::new(gz)
    })
    .clone()
}

/// Request line and If-Match of every request a [`Server`] answered.
pub type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

pub const ETAG: &str = "\"v1-3f2a\"";

/// An HTTPS server on 127.0.0.1 with a certificate for `data.test`, answering by path:
/// `/data.ndjson.gz` (the big file, honouring If-Match), `/redirect?to=URL`,
/// `/status/N`, `/truncated` (a body cut short), `/weak` (a weak ETag).
pub struct Server {
    pub port: u16,
    pub pki: Pki,
    pub seen: Seen,
}

impl Server {
    pub async fn start() -> Server {
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

    pub fn url(&self, path: &str) -> String {
        format!("https://data.test:{}{path}", self.port)
    }

    /// A source trusting this server's CA, allowing `data.test:<port>` (it is 127.0.0.1).
    pub fn source(&self, connector: Arc<Recorder>) -> HttpSource {
        let policy = UrlPolicy::allowing(&[&format!("data.test:{}", self.port)]);
        HttpSource::with_parts(
            policy,
            Arc::new(Table::default()),
            connector,
            self.pki.roots(),
        )
    }
}

pub async fn serve<S>(mut stream: S, seen: Seen) -> io::Result<()>
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
