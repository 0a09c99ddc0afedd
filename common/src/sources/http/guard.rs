//! The URL-safety guard: which URLs siphon may fetch, so that a caller cannot point it
//! at the cloud metadata service, the Lambda runtime API or anything else inside the
//! network (server-side request forgery).
//!
//! A URL passes when
//! - its scheme is `https` (or `http` for a `host:port` in the allow-list),
//! - it carries no user name or password,
//! - every address its host resolves to is public, or its `host:port` is in the
//!   allow-list (`SIPHON_URL_ALLOWLIST`: local development lists LocalStack there),
//! - and none of them is the Lambda runtime API (`AWS_LAMBDA_RUNTIME_API`), allow-list
//!   or not.
//!
//! [`vet`] resolves the host once and returns the addresses that passed: the connection
//! is opened to exactly those, so DNS cannot answer differently a second time.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use super::{Resolve, RESOLVE_TIMEOUT};
use crate::config::Env;
use crate::sources::SourceError;

/// The environment variable with the allow-list: comma-separated `host:port` entries.
pub const ALLOWLIST_ENV: &str = "SIPHON_URL_ALLOWLIST";
/// The environment variable Lambda sets to the runtime API's `host:port`.
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// Which URLs may be fetched. Without allow-list entries only public `https` URLs pass.
/// The Lambda runtime API (`AWS_LAMBDA_RUNTIME_API`, read by [`UrlPolicy::from_env`]) is
/// refused by any policy, allow-listed or not.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// `host:port` entries, lower case (`localhost:4566`, `[::1]:9000`).
    allow: HashSet<String>,
    /// The Lambda runtime API, `host:port`: refused even when allow-listed.
    runtime_api: Option<String>,
}

impl UrlPolicy {
    /// The allow-list from `SIPHON_URL_ALLOWLIST` (comma-separated `host:port`) and the
    /// runtime API from `AWS_LAMBDA_RUNTIME_API`.
    pub fn from_env(env: &Env) -> Self {
        let entries = env.list(ALLOWLIST_ENV);
        let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
        Self::allowing(&entries).with_runtime_api(env.get(RUNTIME_API_ENV))
    }

    /// An allow-list of `host:port` entries (blank entries are ignored). Hosts listed here
    /// may be fetched over `http` too, and may resolve to private addresses.
    pub fn allowing(entries: &[&str]) -> Self {
        let allow = entries
            .iter()
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        UrlPolicy {
            allow,
            runtime_api: None,
        }
    }

    /// Refuses the Lambda runtime API at `host_port` (as Lambda sets it).
    pub fn with_runtime_api(mut self, host_port: Option<&str>) -> Self {
        self.runtime_api = host_port
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty());
        self
    }

    /// No allow-list: public `https` URLs only.
    pub fn deny_all_private() -> Self {
        Self::allowing(&[])
    }

    /// True when `host_port` (as `host:port`, IPv6 hosts in brackets) is allow-listed.
    pub fn is_allowed(&self, host_port: &str) -> bool {
        self.allow.contains(&host_port.to_ascii_lowercase())
    }

    fn is_runtime_api(&self, host_port: &str) -> bool {
        self.runtime_api.as_deref() == Some(host_port)
    }
}

/// A URL that passed the guard, with the only addresses it may be fetched from.
#[derive(Clone, Debug)]
pub(crate) struct Vetted {
    pub url: Url,
    pub host: Host<String>,
    pub addrs: Vec<SocketAddr>,
}

/// The URL as it may be logged or shown: no user name, password, query or fragment.
pub(crate) fn shown(url: &Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        s.push_str(&format!(":{port}"));
    }
    s.push_str(url.path());
    s
}

/// Parses a URL given by a caller; a malformed one is refused (without echoing it, since
/// it may hold a password).
pub(crate) fn parse(url: &str) -> Result<Url, SourceError> {
    Url::parse(url.trim()).map_err(|e| SourceError::Refused(format!("not a valid URL ({e})")))
}

fn refused(url: &Url, why: impl std::fmt::Display) -> SourceError {
    let error = SourceError::Refused(format!("{} is refused: {why}", shown(url)));
    tracing::info!(url = %shown(url), error = %error, "URL refused");
    error
}

/// The checks that need no DNS: scheme, user name and password, host.
fn check_syntax(policy: &UrlPolicy, url: &Url) -> Result<(Host<String>, u16, bool), SourceError> {
    let scheme = url.scheme();
    if scheme != "https" && scheme != "http" {
        return Err(SourceError::Refused(format!(
            "URL scheme {scheme:?} is not allowed: only https (and http for hosts in \
             {ALLOWLIST_ENV})"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused(
            url,
            "URLs with a user name or password are not allowed",
        ));
    }
    let host = match url.host() {
        Some(h) => h.to_owned(),
        None => return Err(refused(url, "the URL has no host")),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refused(url, "the URL has no port"))?;
    let host_port = format!("{}:{port}", url.host_str().unwrap_or(""));
    let allowed = policy.is_allowed(&host_port);
    if scheme == "http" && !allowed {
        return Err(refused(
            url,
            format!("http is only allowed for hosts in {ALLOWLIST_ENV}; use https"),
        ));
    }
    if policy.is_runtime_api(&host_port.to_ascii_lowercase()) {
        return Err(refused(url, "it is the Lambda runtime API"));
    }
    Ok((host, port, allowed))
}

/// Checks `url` and resolves its host once (IP literals are not resolved): the addresses
/// returned are the only ones it may be fetched from. Opens no connection.
pub(crate) async fn vet(
    policy: &UrlPolicy,
    resolver: &dyn Resolve,
    url: &Url,
) -> Result<Vetted, SourceError> {
    let (host, port, allowed) = check_syntax(policy, url)?;
    let host_str = url.host_str().unwrap_or("");
    let (ips, literal) = match &host {
        Host::Ipv4(ip) => (vec![IpAddr::V4(*ip)], true),
        Host::Ipv6(ip) => (vec![IpAddr::V6(*ip)], true),
        Host::Domain(name) => {
            let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(name, port))
                .await
                .map_err(|_| {
                    SourceError::Transient(format!(
                        "{}: resolving {name} timed out after {} s",
                        shown(url),
                        RESOLVE_TIMEOUT.as_secs()
                    ))
                })?;
            let ips = resolved.map_err(|e| resolve_error(url, name, &e))?;
            if ips.is_empty() {
                return Err(SourceError::NotFound(format!(
                    "{}: host {name} resolves to no address",
                    shown(url)
                )));
            }
            (ips, false)
        }
    };
    // "127.0.0.1 is a loopback address", "internal.test resolves to 10.0.0.1, a private
    // address".
    let what = |ip: &IpAddr, reason: &str| match literal {
        true => format!("{host_str} is {reason}"),
        false => format!("{host_str} resolves to {ip}, {reason}"),
    };
    for ip in &ips {
        let addr = SocketAddr::new(ip.to_canonical(), port);
        if policy.is_runtime_api(&addr.to_string()) {
            return Err(refused(url, what(ip, "the Lambda runtime API")));
        }
        if allowed {
            continue;
        }
        if let Some(reason) = special_purpose(*ip) {
            return Err(refused(url, what(ip, &reason)));
        }
    }
    Ok(Vetted {
        url: url.clone(),
        host,
        addrs: ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    })
}

/// A failed lookup: "no such host" is permanent, anything that looks temporary is not.
fn resolve_error(url: &Url, name: &str, e: &std::io::Error) -> SourceError {
    use std::io::ErrorKind;
    let message = format!("{}: cannot resolve {name}: {e}", shown(url));
    let temporary = matches!(
        e.kind(),
        ErrorKind::TimedOut | ErrorKind::Interrupted | ErrorKind::WouldBlock
    ) || e.to_string().to_ascii_lowercase().contains("temporary");
    if temporary {
        SourceError::Transient(message)
    } else {
        SourceError::NotFound(message)
    }
}

/// IPv4 ranges that are not the public internet (first match wins).
const V4_SPECIAL: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 32, "an unspecified address"),
    ([0, 0, 0, 0], 8, "a \"this network\" address"),
    ([10, 0, 0, 0], 8, "a private address"),
    ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
    ([127, 0, 0, 0], 8, "a loopback address"),
    (
        [169, 254, 169, 254],
        32,
        "a link-local address (the cloud metadata service)",
    ),
    ([169, 254, 0, 0], 16, "a link-local address"),
    ([172, 16, 0, 0], 12, "a private address"),
    ([192, 0, 0, 0], 24, "a reserved (IETF protocol) address"),
    ([192, 0, 2, 0], 24, "a documentation address"),
    ([192, 88, 99, 0], 24, "a reserved (6to4 relay) address"),
    ([192, 168, 0, 0], 16, "a private address"),
    ([198, 18, 0, 0], 15, "a benchmarking address"),
    ([198, 51, 100, 0], 24, "a documentation address"),
    ([203, 0, 113, 0], 24, "a documentation address"),
    ([224, 0, 0, 0], 4, "a multicast address"),
    ([255, 255, 255, 255], 32, "the broadcast address"),
    ([240, 0, 0, 0], 4, "a reserved address"),
];

/// IPv6 ranges that are not the public internet, after the IPv4-embedding forms are
/// handled (first match wins). Anything outside 2000::/3 is refused as well.
const V6_SPECIAL: &[(u128, u8, &str)] = &[
    (0x0064_ff9b_0001 << 80, 48, "a local-use NAT64 address"),
    (0x0100 << 112, 64, "a discard-only address"),
    (0x2001_0db8 << 96, 32, "a documentation address"),
    (0x2001 << 112, 23, "a reserved (IETF protocol) address"),
    (0x3fff << 112, 20, "a documentation address"),
    (0xfc00 << 112, 7, "a unique-local address"),
    (0xfe80 << 112, 10, "a link-local address"),
    (0xfec0 << 112, 10, "a site-local address"),
    (0xff00 << 112, 8, "a multicast address"),
];

fn v4_special(ip: Ipv4Addr) -> Option<&'static str> {
    let n = u32::from(ip);
    V4_SPECIAL.iter().find_map(|(base, len, why)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
        (n & mask == u32::from_be_bytes(*base) & mask).then_some(*why)
    })
}

fn in_v6(n: u128, base: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    n & mask == base & mask
}

fn v6_special(ip: Ipv6Addr) -> Option<String> {
    let n = u128::from(ip);
    // The low 32 bits, for the forms that embed an IPv4 address there.
    let low_v4 = Ipv4Addr::from(n as u32);
    let embedded =
        |form: &str, v4: Ipv4Addr| v4_special(v4).map(|why| format!("the {form} of {v4}, {why}"));
    if n == 0 {
        return Some("an unspecified address".into());
    }
    if n == 1 {
        return Some("a loopback address".into());
    }
    if in_v6(n, 0xffff << 32, 96) {
        return embedded("IPv4-mapped form", low_v4);
    }
    if in_v6(n, 0, 96) {
        return Some(
            embedded("IPv4-compatible form", low_v4)
                .unwrap_or_else(|| "a deprecated IPv4-compatible address".into()),
        );
    }
    if in_v6(n, 0xffff << 48, 96) {
        return Some(
            embedded("IPv4-translated form", low_v4)
                .unwrap_or_else(|| "an IPv4-translated address".into()),
        );
    }
    if in_v6(n, 0x0064_ff9b << 96, 96) {
        return embedded("NAT64 form", low_v4);
    }
    if in_v6(n, 0x2002 << 112, 16) {
        // 6to4: the IPv4 address sits right after the 2002::/16 prefix.
        return embedded("6to4 form", Ipv4Addr::from((n >> 80) as u32));
    }
    if let Some((_, _, why)) = V6_SPECIAL.iter().find(|(b, l, _)| in_v6(n, *b, *l)) {
        return Some((*why).into());
    }
    if !in_v6(n, 0x2000 << 112, 3) {
        return Some("a reserved address".into());
    }
    None
}

/// Why `ip` is not a public internet address ("a private address", "the IPv4-mapped form
/// of 127.0.0.1, a loopback address", ...), or `None` when it is one.
pub fn special_purpose(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_special(v4).map(str::to_string),
        IpAddr::V6(v6) => v6_special(v6),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;

    fn reason(ip: &str) -> Option<String> {
        special_purpose(ip.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "52.216.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "223.255.255.255",
            "2600:1f18::1",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(reason(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv4_special_ranges_are_named() {
        for (ip, what) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("169.254.170.2", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("192.0.0.170", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.88.99.1", "6to4 relay"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            let got = reason(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(got.contains(what), "{ip}: {got}");
        }
    }

    #[test]
    fn ipv6_special_ranges_are_named() {
        for (ip, what) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd00::1", "unique-local"),
            ("fd00:ec2::254", "unique-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "reserved"),
            ("100::1", "discard"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("4000::1", "reserved"),
            ("::2", "IPv4-compatible"),
        ] {
            let got = reason(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(got.contains(what), "{ip}: {got}");
        }
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_judged_by_the_ipv4_address() {
        for (ip, what) in [
            (
                "::ffff:127.0.0.1",
                "the IPv4-mapped form of 127.0.0.1, a loopback address",
            ),
            ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            (
                "::127.0.0.1",
                "IPv4-compatible form of 127.0.0.1, a loopback",
            ),
            ("::8.8.8.8", "deprecated IPv4-compatible"),
            ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, a loopback"),
            ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1, a private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:a00:1::", "6to4 form of 10.0.0.1, a private"),
            ("2002:7f00:1::1", "6to4 form of 127.0.0.1, a loopback"),
            ("::ffff:0:7f00:1", "IPv4-translated"),
        ] {
            let got = reason(ip).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(got.contains(what), "{ip}: {got}");
        }
    }

    #[test]
    fn allow_list_entries_are_trimmed_and_case_insensitive() {
        let p = UrlPolicy::allowing(&[" LocalHost:4566 ", "", "127.0.0.1:4566", "[::1]:9000"]);
        assert!(p.is_allowed("localhost:4566"));
        assert!(p.is_allowed("LOCALHOST:4566"));
        assert!(p.is_allowed("127.0.0.1:4566"));
        assert!(p.is_allowed("[::1]:9000"));
        assert!(!p.is_allowed("localhost:4567"));
        assert!(!p.is_allowed(""));
        assert!(!UrlPolicy::deny_all_private().is_allowed("localhost:4566"));
    }

    /// Answers from a table and records every question.
    #[derive(Default)]
    struct Table {
        entries: Vec<(&'static str, Vec<IpAddr>)>,
        asked: Mutex<Vec<String>>,
    }

    impl Table {
        fn with(entries: &[(&'static str, &[&str])]) -> Self {
            Table {
                entries: entries
                    .iter()
                    .map(|(h, ips)| (*h, ips.iter().map(|ip| ip.parse().unwrap()).collect()))
                    .collect(),
                asked: Mutex::default(),
            }
        }
    }

    impl Resolve for Table {
        fn resolve<'a>(&'a self, host: &'a str, _: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            self.asked.lock().unwrap().push(host.to_string());
            let found = self
                .entries
                .iter()
                .find(|(h, _)| *h == host)
                .map(|(_, ips)| ips.clone());
            Box::pin(async move {
                found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    async fn vet_str(policy: &UrlPolicy, table: &Table, url: &str) -> Result<Vetted, SourceError> {
        vet(policy, table, &parse(url)?).await
    }

    fn refusal(r: Result<Vetted, SourceError>) -> String {
        match r {
            Err(SourceError::Refused(m)) => m,
            other => panic!("expected Refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn schemes_user_info_and_literals_are_refused_without_resolving() {
        let table = Table::with(&[]);
        let p = UrlPolicy::deny_all_private();
        for (url, what) in [
            ("file:///etc/passwd", "\"file\""),
            ("gopher://example.invalid/x", "\"gopher\""),
            ("ftp://example.invalid/x", "\"ftp\""),
            ("http://example.invalid/x", "http is only allowed"),
            ("https://127.0.0.1/", "127.0.0.1 is a loopback address"),
            ("https://0x7f.1/", "127.0.0.1 is a loopback address"),
            ("https://2130706433/", "loopback"),
            ("https://[::1]:8443/", "[::1] is a loopback address"),
            (
                "https://[::ffff:127.0.0.1]/",
                "IPv4-mapped form of 127.0.0.1, a loopback",
            ),
            ("https://169.254.169.254/latest/meta-data/", "link-local"),
            ("https://[fd00:ec2::254]/", "unique-local"),
            ("https://0.0.0.0/", "unspecified"),
            ("not a url", "not a valid URL"),
        ] {
            let m = refusal(vet_str(&p, &table, url).await);
            assert!(m.contains(what), "{url}: {m}");
        }
        let m = refusal(vet_str(&p, &table, "https://user:s3cret@example.invalid/x?sig=abc").await);
        assert!(m.contains("user name or password"), "{m}");
        assert!(
            !m.contains("s3cret") && !m.contains("user:") && !m.contains("sig="),
            "{m}"
        );
        assert!(
            table.asked.lock().unwrap().is_empty(),
            "nothing may be resolved"
        );
    }

    #[tokio::test]
    async fn any_special_address_among_the_answers_refuses() {
        let table = Table::with(&[
            (
                "public.test",
                &["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            ),
            ("mixed.test", &["93.184.215.14", "10.0.0.1"]),
            ("metadata.test", &["169.254.169.254"]),
        ]);
        let p = UrlPolicy::deny_all_private();
        let ok = vet_str(&p, &table, "https://public.test/a.ndjson.gz")
            .await
            .unwrap();
        assert_eq!(ok.addrs.len(), 2);
        assert!(ok.addrs.iter().all(|a| a.port() == 443));
        let m = refusal(vet_str(&p, &table, "https://mixed.test/x").await);
        assert!(
            m.contains("mixed.test resolves to 10.0.0.1, a private address"),
            "{m}"
        );
        let m = refusal(vet_str(&p, &table, "https://metadata.test/x").await);
        assert!(
            m.contains("169.254.169.254, a link-local address (the cloud metadata service)"),
            "{m}"
        );
        // A host that does not resolve is not a refusal.
        let err = vet_str(&p, &table, "https://nowhere.test/x")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NotFound(_)), "{err:?}");
    }

    #[tokio::test]
    async fn the_allow_list_admits_http_and_private_addresses_for_its_entries_only() {
        let table = Table::with(&[("localstack.test", &["10.1.2.3"])]);
        let p = UrlPolicy::allowing(&["localstack.test:4566", "127.0.0.1:4566"]);
        vet_str(&p, &table, "http://localstack.test:4566/b/k")
            .await
            .unwrap();
        vet_str(&p, &table, "http://127.0.0.1:4566/b/k")
            .await
            .unwrap();
        refusal(vet_str(&p, &table, "http://localstack.test:4567/b/k").await);
        refusal(vet_str(&p, &table, "https://localstack.test/b/k").await);
        refusal(vet_str(&p, &table, "http://127.0.0.1:4567/").await);
    }

    #[tokio::test]
    async fn the_lambda_runtime_api_is_refused_even_when_allow_listed() {
        let table = Table::with(&[("runtime.test", &["127.0.0.1"])]);
        let p = UrlPolicy::from_env(&Env::from_pairs(&[
            (ALLOWLIST_ENV, "127.0.0.1:9001,runtime.test:9001"),
            (RUNTIME_API_ENV, "127.0.0.1:9001"),
        ]));
        for url in [
            "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "http://runtime.test:9001/2018-06-01/runtime/invocation/next",
            "https://[::ffff:127.0.0.1]:9001/",
        ] {
            let m = refusal(vet_str(&p, &table, url).await);
            assert!(m.contains("runtime API"), "{url}: {m}");
        }
    }
}

/// Property-based fuzzing of the guard (proptest): any URL, any policy, any answer from
/// a stub resolver (no lookup, no connection). `make test` runs 256 cases per target,
/// `make fuzz` a million (`PROPTEST_CASES`).
#[cfg(test)]
mod fuzz {
    use std::io;

    use futures::future::BoxFuture;
    use proptest::prelude::*;

    use super::*;

    /// Resolves every name to the same addresses.
    struct Stub(Vec<IpAddr>);

    impl Resolve for Stub {
        fn resolve<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            let ips = self.0.clone();
            Box::pin(async move { Ok(ips) })
        }
    }

    /// Addresses, special-purpose ones well represented (private, loopback, metadata,
    /// CGNAT, unique-local, IPv4 inside IPv6 forms).
    fn ip() -> impl Strategy<Value = IpAddr> {
        let private_v4 = prop_oneof![
            any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(10, b, c, d)),
            any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
            any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
            (16u8..32, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(172, b, c, d)),
            any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(192, 168, c, d)),
            (64u8..128, any::<[u8; 2]>()).prop_map(|(b, [c, d])| Ipv4Addr::new(100, b, c, d)),
            Just(Ipv4Addr::new(0, 0, 0, 0)),
        ];
        prop_oneof![
            3 => any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            1 => any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
            1 => private_v4.clone().prop_map(IpAddr::V4),
            1 => private_v4
                .clone()
                .prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
            1 => private_v4.clone().prop_map(|v4| {
                IpAddr::V6(Ipv6Addr::from(
                    (0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)),
                ))
            }),
            1 => private_v4.prop_map(|v4| {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2002_u128 << 112) | (u128::from(u32::from(v4)) << 80),
                ))
            }),
            1 => prop::sample::select(vec![
                "::1",
                "::",
                "fc00::1",
                "fd12:3456::1",
                "fe80::1",
                "ff02::1"
            ])
            .prop_map(|s| s.parse().unwrap()),
        ]
    }

    /// URLs as a caller might write them to get inside: odd schemes, user info, IP
    /// literals in decimal, hex and octal, IPv6 literals, ports.
    fn url() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            "[a-z]{1,8}\\.test",
            Just("allowed.test".to_string()),
            ip().prop_map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            }),
            any::<u32>().prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| format!("0x{n:x}")),
            any::<[u8; 4]>().prop_map(|[a, b, c, d]| format!("0{a:o}.0{b:o}.{c}.{d}")),
            Just("[::ffff:127.0.0.1]".to_string()),
        ];
        (
            prop_oneof![
                3 => Just("https"),
                2 => prop::sample::select(vec!["http", "HTTPS", "ftp", "file", "s3", "gopher"]),
            ],
            prop::option::of("[a-z]{1,5}(:[a-z]{0,5})?@"),
            host,
            prop::option::of(prop::sample::select(vec![443u16, 80, 4566, 9000, 9001, 0])),
            "(/[a-zA-Z0-9.%-]{0,8}){0,3}",
        )
            .prop_map(|(scheme, user, host, port, path)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{}{host}{port}{path}", user.unwrap_or_default())
            })
    }

    fn policy() -> impl Strategy<Value = UrlPolicy> {
        (
            prop::sample::subsequence(
                vec![
                    "allowed.test:443",
                    "allowed.test:4566",
                    "127.0.0.1:4566",
                    "[::1]:9000",
                ],
                0..=4,
            ),
            any::<bool>(),
        )
            .prop_map(|(allow, runtime)| {
                UrlPolicy::allowing(&allow).with_runtime_api(runtime.then_some("127.0.0.1:9001"))
            })
    }

    proptest! {
        /// Whatever the URL, the policy and the resolver's answer: a URL that passes is
        /// https (or http for an allow-listed host:port), carries no user info, is not
        /// the runtime API, is fetched from exactly the resolved addresses, and every one
        /// of them is public unless its host:port is allow-listed.
        #[test]
        fn fuzz_the_guard_never_lets_a_private_address_through(
            raw in prop_oneof![url(), any::<String>()],
            policy in policy(),
            answer in prop::collection::vec(ip(), 0..4),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let Ok(url) = parse(&raw) else { return Ok(()) };
            let stub = Stub(answer.clone());
            let Ok(vetted) = rt.block_on(vet(&policy, &stub, &url)) else { return Ok(()) };
            let port = url.port_or_known_default().unwrap();
            let host_port = format!("{}:{port}", url.host_str().unwrap());
            let allowed = policy.is_allowed(&host_port);
            prop_assert!(url.scheme() == "https" || (url.scheme() == "http" && allowed), "{}", raw);
            prop_assert!(url.username().is_empty() && url.password().is_none(), "{}", raw);
            if matches!(url.host(), Some(Host::Domain(_))) {
                let resolved: Vec<SocketAddr> = answer.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                prop_assert_eq!(&vetted.addrs, &resolved);
            }
            for addr in &vetted.addrs {
                let canonical = SocketAddr::new(addr.ip().to_canonical(), port);
                prop_assert!(canonical.to_string() != "127.0.0.1:9001" || policy.runtime_api.is_none(),
                    "{} reached the runtime API", raw);
                prop_assert!(allowed || special_purpose(addr.ip()).is_none(),
                    "{} was let through to {}", raw, addr);
            }
        }

        /// Every private, loopback, link-local or CGNAT IPv4 address is special, bare or
        /// inside an IPv6 form (mapped, NAT64, 6to4).
        #[test]
        fn fuzz_private_addresses_are_special_in_every_form(ip in ip()) {
            let v4 = match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(v6) => {
                    let n = u128::from(v6);
                    if n >> 32 == 0xffff || n >> 32 == 0x0064_ff9b << 64 {
                        Some(Ipv4Addr::from(n as u32))
                    } else if n >> 112 == 0x2002 {
                        Some(Ipv4Addr::from((n >> 80) as u32))
                    } else {
                        None
                    }
                }
            };
            if let Some(v4) = v4 {
                if v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
                    || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
                {
                    prop_assert!(special_purpose(ip).is_some(), "{} passed as public", ip);
                }
            }
        }
    }
}
