//! The Bulk Data client side of a pull import: kick-off, status polls, manifest pages
//! and cancel, each request through the URL guard ([`HttpSource::call`]). Every answer
//! is hostile input: bodies are read up to a bound, waits are clamped, and nothing a
//! remote sends is logged as a credential.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::model::pull::{same_origin, PullJob};
use crate::sources::http::{Answer, HeaderName, HeaderValue, HttpSource, Method};
use crate::sources::{Credential, SourceError};

/// The largest manifest page or error body read.
pub const MAX_BODY: u64 = 16 << 20;
/// Waits a remote asks for are clamped to this range.
pub const MIN_WAIT: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(120);
/// The wait when a remote says nothing (`Retry-After` missing or unreadable).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Why a request to the remote did not give what was asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try after `wait` (429, 5xx, a network error).
    Later { wait: Duration, why: String },
    /// Will not get better (4xx, a malformed answer, a URL the guard refuses).
    Permanent(String),
    /// 401: the credential was refused. Permanent, unless it was a token siphon fetched
    /// itself, which a new one may replace.
    Unauthorized(String),
}

impl Failure {
    /// A failed request: transient errors (network, 429, 5xx) are worth another try.
    pub fn from_source(e: SourceError) -> Self {
        match e {
            SourceError::Transient(m) => Failure::Later {
                wait: DEFAULT_WAIT,
                why: m,
            },
            other => Failure::Permanent(other.to_string()),
        }
    }
}

/// What a status poll found.
#[derive(Debug)]
pub enum Poll {
    /// Still exporting: ask again after `wait`.
    Working {
        wait: Duration,
        progress: Option<String>,
    },
    /// Complete (or a partial manifest page): its files.
    Manifest(Manifest),
}

/// One output file of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Output {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: String,
}

/// A link of a manifest page.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Link {
    pub relation: String,
    pub url: String,
}

/// A manifest page (Bulk Data `output`, `error`, and `link` to the next page).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Manifest {
    pub requires_access_token: bool,
    pub output: Vec<Output>,
    pub error: Vec<Output>,
    pub link: Vec<Link>,
}

impl Manifest {
    /// The next page's URL (`link` with `relation: next`).
    pub fn next(&self) -> Option<&str> {
        self.link
            .iter()
            .find(|l| l.relation == "next")
            .map(|l| l.url.as_str())
    }
}

/// A manifest page from its JSON.
pub fn parse_manifest(body: &[u8]) -> Result<Manifest, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure::Permanent(format!("the manifest is not a Bulk Data manifest: {e}")))
}

/// How long a `Retry-After` asks to wait (seconds, an HTTP date, or what some servers
/// send: an epoch timestamp), clamped to [`MIN_WAIT`]..[`MAX_WAIT`]; [`DEFAULT_WAIT`]
/// when absent or unreadable.
pub fn retry_after(value: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Duration {
    let Some(v) = value.map(str::trim) else {
        return DEFAULT_WAIT;
    };
    let secs = if let Ok(n) = v.parse::<u64>() {
        // An epoch timestamp (after 2001) rather than a number of seconds.
        if n > 1_000_000_000 {
            n.saturating_sub(now.timestamp().max(0) as u64)
        } else {
            n
        }
    } else if let Ok(t) = chrono::DateTime::parse_from_rfc2822(v) {
        (t.timestamp() - now.timestamp()).max(0) as u64
    } else {
        return DEFAULT_WAIT;
    };
    Duration::from_secs(secs).clamp(MIN_WAIT, MAX_WAIT)
}

/// A client of one remote Bulk Data server.
pub struct Remote<'a> {
    pub http: &'a HttpSource,
    /// The pull's job: its kick-off URL (a submission's manifest URL), whose origin alone
    /// receives `authorization` and the provider's headers.
    pub job: &'a PullJob,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

fn text_header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

impl Remote<'_> {
    /// What a request for `url` sends: everything on the kick-off URL's origin, nothing
    /// elsewhere.
    fn credential(&self, url: &str) -> Credential {
        let here = same_origin(&self.job.export_url, url);
        Credential {
            authorization: self.authorization.clone().filter(|_| here),
            headers: self.job.headers_for(url),
        }
    }

    async fn call(&self, method: Method, url: &str) -> Result<Answer, Failure> {
        let headers = [
            header("accept", "application/fhir+json"),
            header("prefer", "respond-async"),
        ];
        self.http
            .call(method, url, &headers, self.credential(url).some())
            .await
            .map_err(Failure::from_source)
    }

    /// `GET` the kick-off URL: the status URL (`Content-Location`, absolute).
    pub async fn kick_off(&self) -> Result<String, Failure> {
        let mut answer = self.call(Method::GET, &self.job.export_url).await?;
        if answer.status != 202 {
            return Err(refusal("the kick-off", &mut answer).await);
        }
        let location = text_header(&answer, "content-location").ok_or_else(|| {
            Failure::Permanent("the kick-off answered 202 without a Content-Location".into())
        })?;
        url::Url::parse(&answer.url)
            .and_then(|base| base.join(location))
            .map(|u| u.to_string())
            .map_err(|e| {
                Failure::Permanent(format!("the kick-off's Content-Location is not a URL: {e}"))
            })
    }

    /// `GET` the status URL once.
    pub async fn poll(&self, status_url: &str) -> Result<Poll, Failure> {
        let mut answer = self.call(Method::GET, status_url).await?;
        match answer.status {
            202 => Ok(Poll::Working {
                wait: retry_after(text_header(&answer, "retry-after"), chrono::Utc::now()),
                progress: text_header(&answer, "x-progress").map(|p| p.chars().take(200).collect()),
            }),
            200 => {
                let body = read_bounded(&mut answer).await?;
                parse_manifest(&body).map(Poll::Manifest)
            }
            _ => Err(refusal("the status request", &mut answer).await),
        }
    }

    /// `GET` a manifest page a `link` named.
    pub async fn page(&self, url: &str) -> Result<Manifest, Failure> {
        let mut answer = self.call(Method::GET, url).await?;
        if answer.status != 200 {
            return Err(refusal("the manifest page", &mut answer).await);
        }
        let body = read_bounded(&mut answer).await?;
        parse_manifest(&body)
    }

    /// `DELETE` the status URL: the remote may stop and drop its files. Errors are the
    /// caller's to log; nothing depends on them.
    pub async fn cancel(&self, status_url: &str) -> Result<u16, Failure> {
        Ok(self.call(Method::DELETE, status_url).await?.status)
    }
}

/// The answer's body, up to [`MAX_BODY`] (a longer one is an error).
async fn read_bounded(answer: &mut Answer) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    (&mut answer.body)
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| Failure::Later {
            wait: DEFAULT_WAIT,
            why: format!("reading the answer failed: {e}"),
        })?;
    if body.len() as u64 > MAX_BODY {
        return Err(Failure::Permanent(format!(
            "the answer is larger than {} MB",
            MAX_BODY >> 20
        )));
    }
    Ok(body)
}

/// A non-success answer as a failure: 429 and 5xx are worth another try, the rest is
/// permanent. The message names the status and the remote's own words (an
/// OperationOutcome's diagnostics, or the start of the body).
async fn refusal(what: &str, answer: &mut Answer) -> Failure {
    let mut body = Vec::new();
    let _ = (&mut answer.body).take(4096).read_to_end(&mut body).await;
    let said = said(&body);
    let why = format!("{what} answered HTTP {}{said}", answer.status);
    match answer.status {
        429 | 500..=599 => Failure::Later {
            wait: retry_after(text_header(answer, "retry-after"), chrono::Utc::now()),
            why,
        },
        401 => Failure::Unauthorized(why),
        _ => Failure::Permanent(why),
    }
}

/// `: <diagnostics>` of an OperationOutcome body, or of its first 200 characters.
fn said(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v["issue"][0]["diagnostics"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text: String = text.trim().chars().take(200).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_epochs_and_is_clamped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after(Some("3"), now), Duration::from_secs(3));
        assert_eq!(retry_after(Some("0"), now), MIN_WAIT);
        assert_eq!(retry_after(Some("86400"), now), MAX_WAIT);
        assert_eq!(
            retry_after(Some("Thu, 01 Jan 2026 00:00:10 GMT"), now),
            Duration::from_secs(10)
        );
        let epoch = (now.timestamp() + 7).to_string();
        assert_eq!(retry_after(Some(&epoch), now), Duration::from_secs(7));
        assert_eq!(retry_after(Some("soon"), now), DEFAULT_WAIT);
        assert_eq!(retry_after(None, now), DEFAULT_WAIT);
    }

    #[test]
    fn a_manifest_page_gives_its_files_and_next_link() {
        let m = parse_manifest(
            br#"{"transactionTime": "2026-01-01T00:00:00Z", "request": "x",
                 "requiresAccessToken": true,
                 "output": [{"type": "Patient", "url": "https://r.example/1.ndjson", "count": 2}],
                 "error": [], "link": [{"relation": "next", "url": "https://r.example/m/2"}]}"#,
        )
        .unwrap();
        assert!(m.requires_access_token);
        assert_eq!(m.output[0].resource_type, "Patient");
        assert_eq!(m.next(), Some("https://r.example/m/2"));
        assert!(matches!(
            parse_manifest(b"<html>"),
            Err(Failure::Permanent(_))
        ));
        let last = parse_manifest(br#"{"output": []}"#).unwrap();
        assert_eq!(last.next(), None);
    }

    #[test]
    fn a_refusal_quotes_the_operation_outcome() {
        let body = br#"{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "unknown _type Foo"}]}"#;
        assert_eq!(said(body), ": unknown _type Foo");
        assert_eq!(said(b""), "");
        assert_eq!(said(b"gateway timeout"), ": gateway timeout");
    }
}
