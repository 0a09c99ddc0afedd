//! What the console's browser tests stand on:
//!
//! - [`Stack`]: `make serve`'s binary (`target/debug/siphon-local`) as a child on a free
//!   loopback port, with a fresh database, fresh queues (and a load dead-letter queue)
//!   and a fresh bucket, the rest of its settings from `infra/local/local.env`; its load
//!   and export workers run inside it. A Client with an AccessPolicy is created as the
//!   admin.
//! - [`Browser`]: Debian's headless Chromium driven through `chromedriver` (WebDriver over
//!   HTTP on 127.0.0.1), with a minimal blocking WebDriver client.
//!
//! Both are children of the test and end with it (on drop, also when a test panics).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The console's client (created by [`Stack::start`]).
pub const CLIENT_ID: &str = "console-user";
pub const CLIENT_SECRET: &str = "console-secret-1";

/// `target/` of this workspace (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| siphon_tests::repo_root().join("target"))
}

/// Where screenshots (and the children's logs) go.
pub fn out_dir() -> PathBuf {
    let dir = target_dir().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub fn admin() -> String {
    basic(
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_ID"),
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET"),
    )
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// A child process killed (and reaped) on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// siphon-local on its own database, queues and bucket.
pub struct Stack {
    child: Kid,
    pub base: String,
    pub bucket: String,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub load_queue: String,
    pub load_dlq: String,
    pub export_queue: String,
    pub log: PathBuf,
    /// The database siphon-local runs on (for rows only siphon writes, made by hand).
    pub db_url: String,
}

/// Settings of one [`Stack`] beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// `SIPHON_LOCAL_LOADERS` (default 2).
    pub loaders: Option<u32>,
    /// The load queue's `DelaySeconds` at first: each file waits this long in the queue
    /// before a loader can take it (a session stays active with its input queued that
    /// long); [`Stack::set_delay`] changes it.
    pub load_delay_seconds: Option<u32>,
    /// The export queue's `DelaySeconds` at first: each export task waits this long
    /// before a worker can take it, so an export stays running that long.
    pub export_delay_seconds: Option<u32>,
}

/// A fresh queue, its messages delayed `delay` seconds when given.
async fn queue(sqs: &aws_sdk_sqs::Client, delay: Option<u32>) -> String {
    let Some(delay) = delay else {
        return siphon_tests::fresh_queue(sqs).await;
    };
    sqs.create_queue()
        .queue_name(format!(
            "siphon-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::DelaySeconds,
            delay.to_string(),
        )
        .send()
        .await
        .expect("create a LocalStack queue")
        .queue_url
        .expect("queue URL")
}

impl Stack {
    /// Starts siphon-local (`name` names its log) and creates the console's client.
    pub async fn start(name: &str, options: Options) -> Stack {
        siphon_tests::use_local_aws();
        let bin = target_dir().join("debug/siphon-local");
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build --workspace --bins` (make test does)",
            bin.display()
        );
        let sqs = siphon_tests::sqs().await;
        let s3 = siphon_tests::s3().await;
        let load_queue = queue(&sqs, options.load_delay_seconds).await;
        let load_dlq = siphon_tests::fresh_queue(&sqs).await;
        let export_queue = queue(&sqs, options.export_delay_seconds).await;
        let db_url = siphon_tests::fresh_db_url().await;
        let bucket = siphon_tests::fresh_bucket(&s3).await;
        let port = free_port();
        let log = out_dir().join(format!("{name}.server.log"));
        let child = Command::new(&bin)
            .envs(siphon_tests::env().iter())
            .env("DATABASE_URL", &db_url)
            .env("SIPHON_LOAD_QUEUE_URL", &load_queue)
            .env("SIPHON_LOAD_DLQ_URL", &load_dlq)
            .env("SIPHON_EXPORT_QUEUE_URL", &export_queue)
            .env_remove("SIPHON_EXPORT_DLQ_URL")
            .env_remove("SIPHON_EVENTS_QUEUE_URL")
            .env("SIPHON_LOCAL_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "SIPHON_LOCAL_LOADERS",
                options.loaders.unwrap_or(2).to_string(),
            )
            .env("SIPHON_LOCAL_EXPORTERS", "1")
            .env("SIPHON_EXPORT_MIN_POLL_MS", "0")
            // No sweep pass during a test: a stalled file made by a test stays stalled.
            .env("SIPHON_SWEEP_INTERVAL_SECONDS", "3600")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut stack = Stack {
            child: Kid(child),
            base: format!("http://127.0.0.1:{port}"),
            bucket,
            s3,
            sqs,
            load_queue,
            load_dlq,
            export_queue,
            log,
            db_url: db_url.clone(),
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = stack.child.0.try_wait() {
                panic!("siphon-local exited ({status}):\n{}", tail(&stack.log));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "siphon-local did not listen within 30 s:\n{}",
                tail(&stack.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The binary must serve the console of this checkout (not a stale build).
        let served = siphon_tests::http_get(&format!("{}/console/app.js", stack.base)).await;
        let on_disk =
            std::fs::read(siphon_tests::repo_root().join("functions/api/console/app.js")).unwrap();
        assert!(
            served.status == 200 && served.body == on_disk,
            "{} serves another console than functions/api/console/: rebuild it with \
             `cargo build --workspace --bins`",
            bin.display()
        );
        let (status, body) = stack
            .admin(
                "PUT",
                "/",
                Some(json!([
                    {"resourceType": "Client", "id": CLIENT_ID, "secret": CLIENT_SECRET,
                     "grant_types": ["basic"]},
                    {"resourceType": "AccessPolicy", "id": CLIENT_ID, "engine": "allow",
                     "link": [{"id": CLIENT_ID, "resourceType": "Client"}]}
                ])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        stack.child.0.try_wait().unwrap();
        stack
    }

    /// `kill -9` of siphon-local (reaped), as a crash or an OOM kill ends it.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    pub fn console_url(&self) -> String {
        format!("{}/console", self.base)
    }

    /// One API call with `authorization`; the body as JSON (a string when it is not).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> siphon_tests::HttpAnswer {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![
            ("authorization", authorization),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        siphon_tests::http(
            method,
            &format!("{}{path}", self.base),
            &headers,
            body.as_bytes(),
        )
        .await
    }

    /// One API call as the admin: status and JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let got = self.call(method, path, &admin(), &[], body).await;
        let value = serde_json::from_slice(&got.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&got.body).into()));
        (got.status, value)
    }

    /// Runs SQL on siphon-local's database directly (rows no caller may write).
    pub async fn sql(&self, statement: &str) {
        let cfg = siphon::storage::DbConfig::from_url(&self.db_url).unwrap();
        let (client, conn) = cfg.pg_config().connect(cfg.tls().unwrap()).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(statement).await.unwrap();
    }

    /// Sets a queue's `DelaySeconds` (for the messages sent from now on).
    pub async fn set_delay(&self, queue: &str, seconds: u32) {
        self.sqs
            .set_queue_attributes()
            .queue_url(queue)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::DelaySeconds,
                seconds.to_string(),
            )
            .send()
            .await
            .expect("set the queue's delay");
    }

    /// Puts an object into this stack's bucket.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        siphon_tests::put(&self.s3, &self.bucket, key, bytes).await;
    }

    /// The LoaderFiles (as the API lists them) of this stack's bucket.
    pub async fn loader_files(&self) -> Vec<Value> {
        let (status, body) = self
            .admin("GET", &format!("/LoaderFile?bucket={}", self.bucket), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    }

    /// Waits (bounded) until `check` holds for the LoaderFile of `key`; returns it.
    pub async fn wait_file(&self, key: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let files = self.loader_files().await;
            if let Some(f) = files.iter().find(|f| f["file"] == key) {
                if check(f) {
                    return f.clone();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{key}: {what} within 60 s: {f}"
                );
            } else {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{key}: no LoaderFile within 60 s"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---- WebDriver ------------------------------------------------------------------------

/// One request to chromedriver (loopback, blocking); the answer's `value`, or the
/// WebDriver error as `Err`.
fn webdriver(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromedriver");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    // chromedriver says `Connection: close` but keeps the socket open: read the head,
    // then exactly Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let (at, length) = loop {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        assert!(
            n > 0,
            "chromedriver closed the connection ({method} {path})"
        );
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("chromedriver answers with a Content-Length");
            break (at, length);
        }
    };
    while raw.len() < at + 4 + length {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        assert!(
            n > 0,
            "chromedriver closed the connection ({method} {path})"
        );
        raw.extend_from_slice(&buf[..n]);
    }
    let status: u16 = String::from_utf8_lossy(&raw[..at])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let value: Value = serde_json::from_slice(&raw[at + 4..]).unwrap_or(Value::Null);
    let value = value.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        Ok(value)
    } else {
        Err(value)
    }
}

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Headless Chromium through chromedriver, one session.
pub struct Browser {
    driver: Kid,
    port: u16,
    session: String,
    profile: PathBuf,
    name: String,
}

impl Browser {
    /// Starts chromedriver and a Chromium session of `width` x `height`.
    pub fn start(name: &str, width: u32, height: u32) -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console's browser tests need Debian's chromium and \
                 chromium-driver (apt-get install chromium chromium-driver; {package} provides it)"
            );
        }
        let port = free_port();
        let log = out_dir().join(format!("{name}.chromedriver.log"));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Kid(driver);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || !webdriver(port, "GET", "/status", None)
                .ok()
                .and_then(|v| v["ready"].as_bool())
                .unwrap_or(false)
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver was not ready within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile =
            std::env::temp_dir().join(format!("siphon-console-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-dev-shm-usage".into(),
            "--password-store=basic".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // An alert stays open (and is seen by `alert_text`) instead of being dismissed.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = webdriver(port, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        let session = session["sessionId"].as_str().unwrap().to_string();
        let browser = Browser {
            driver,
            port,
            session,
            profile,
            name: name.to_string(),
        };
        browser.set_viewport(width, height);
        browser
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        webdriver(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Makes the page's viewport exactly `width` x `height` CSS pixels.
    pub fn set_viewport(&self, width: u32, height: u32) {
        for _ in 0..3 {
            let inner = self.js("return [innerWidth, innerHeight]", json!([]));
            let (w, h) = (inner[0].as_i64().unwrap(), inner[1].as_i64().unwrap());
            if (w, h) == (width as i64, height as i64) {
                return;
            }
            let rect = self.ok("GET", "/window/rect", None);
            let (ow, oh) = (
                rect["width"].as_i64().unwrap(),
                rect["height"].as_i64().unwrap(),
            );
            self.ok(
                "POST",
                "/window/rect",
                Some(json!({"width": ow + width as i64 - w, "height": oh + height as i64 - h})),
            );
        }
    }

    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.ok(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The element `css` selects (the first), waiting for it up to 10 s.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            match self.cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            ) {
                Ok(v) => {
                    return v[ELEMENT]
                        .as_str()
                        .unwrap_or_else(|| panic!("find {css}: {v}"))
                        .to_string()
                }
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    self.screenshot(&format!("{}-missing", self.name));
                    panic!("no element {css} within 10 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Clicks the element `css` selects (as a user would: it must be visible).
    pub fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            let id = self.find(css);
            match self.cmd("POST", &format!("/element/{id}/click"), Some(json!({}))) {
                Ok(_) => return,
                // Re-rendered by a poll between finding and clicking: find it again.
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Types `text` into the element `css` selects (after clearing it). WebDriver key
    /// codes work: `\u{E004}` Tab, `\u{E007}` Enter.
    pub fn type_into(&self, css: &str, text: &str, clear: bool) {
        let id = self.find(css);
        if clear {
            self.ok("POST", &format!("/element/{id}/clear"), Some(json!({})));
        }
        self.ok(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Presses keys on whatever has the focus.
    pub fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.ok(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
        let _ = self.cmd("DELETE", "/actions", None);
    }

    /// Selects the option with `value` of the `<select>` `css` selects.
    pub fn select(&self, css: &str, value: &str) {
        self.find(css);
        self.js(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([css, value]),
        );
    }

    /// The rendered text of the element `css` selects ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits up to `secs` for `script` to return a truthy value, and returns it; on
    /// timeout a screenshot `<name>-timeout` and a panic saying what did not happen.
    pub fn wait(&self, what: &str, secs: u64, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script, args.clone());
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if started.elapsed() > Duration::from_secs(secs) {
                self.screenshot(&format!("{}-timeout", self.name));
                let page = self.text("main");
                panic!("{what}: not within {secs} s (last {v}); the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the element `css` selects shows `needle` in its text.
    pub fn wait_text(&self, css: &str, needle: &str, secs: u64) -> String {
        self.wait(
            &format!("{css} showing {needle:?}"),
            secs,
            "const e = document.querySelector(arguments[0]); \
             return e && e.checkVisibility() && e.innerText.includes(arguments[1]) ? e.innerText : null",
            json!([css, needle]),
        )
        .as_str()
        .unwrap()
        .to_string()
    }

    /// The text of an open alert/confirm/prompt, if one is open.
    pub fn alert_text(&self) -> Option<String> {
        self.cmd("GET", "/alert/text", None)
            .ok()
            .map(|v| v.as_str().unwrap_or("").to_string())
    }

    /// What the page logged as errors since the last call (script errors, Content
    /// Security Policy violations), leaving out the HTTP errors the API answered on
    /// purpose (401, 403, 406...).
    pub fn page_errors(&self) -> Vec<String> {
        let entries = self.ok("POST", "/se/log", Some(json!({"type": "browser"})));
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .filter(|m| {
                !m.contains("Failed to load resource: the server responded with a status of")
            })
            .collect()
    }

    /// Saves a PNG of the viewport to `target/console-screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.ok("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        let path = out_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Signs in through the form.
    pub fn sign_in(&self, base: &str, id: &str, secret: &str) {
        self.goto(&format!("{base}/console"));
        self.type_into("#signin-id", id, true);
        self.type_into("#signin-secret", secret, true);
        self.click("#signin-submit");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromedriver ends Chromium with the session; then chromedriver itself ends.
        let _ = webdriver(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
