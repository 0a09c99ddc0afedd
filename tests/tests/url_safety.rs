//! The URL-safety guard and the HTTPS source, against servers on 127.0.0.1 only.
//!
//! Nothing here needs Postgres or LocalStack, and nothing may reach past loopback even if
//! the guard is broken: host names go through a table ([`Table`]), and the connector
//! ([`Recorder`]) records every address it is asked for and opens loopback connections
//! only. Refusals are proven twice: the error says why, and the listener or connector
//! behind the refused address saw nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;

use siphon::sources::http::{HttpSource, UrlPolicy};
use siphon::sources::SourceError;

mod tls_harness;

use tls_harness::*;

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
