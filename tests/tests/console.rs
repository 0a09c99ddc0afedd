//! The console (`GET /console`) in a real browser: Debian's headless Chromium through
//! chromedriver, against `make serve`'s binary (siphon-local, its workers inside) on a
//! fresh database, queues and bucket. Each scenario saves screenshots under
//! `target/console-screenshots/`.

mod console_harness;

use std::time::{Duration, Instant};

use console_harness::{basic, Browser, Options, Stack, CLIENT_ID, CLIENT_SECRET};
use serde_json::{json, Value};
use siphon_tests::gen;

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// The console's signed-in state, from inside the page.
fn storage_is_empty(browser: &Browser) {
    let held = browser.js(
        "return [localStorage.length, sessionStorage.length, document.cookie]",
        json!([]),
    );
    assert_eq!(
        held,
        json!([0, 0, ""]),
        "the console keeps nothing in the browser"
    );
}

/// No alert opened, no script error, no Content Security Policy violation.
fn page_is_clean(browser: &Browser) {
    assert_eq!(browser.alert_text(), None, "no alert/confirm opened");
    assert_eq!(
        browser.page_errors(),
        Vec::<String>::new(),
        "the page logged errors"
    );
}

#[tokio::test]
async fn sign_in_says_why_it_was_refused_then_shows_the_overview() {
    let stack = Stack::start("sign-in", Options::default()).await;
    // The three files, with their policy; nothing else under /console.
    for (path, ty) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let got = siphon_tests::http_get(&format!("{}{path}", stack.base)).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.headers["content-type"].starts_with(ty), "{path}");
        assert_eq!(
            got.headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        );
        assert_eq!(got.headers["x-content-type-options"], "nosniff");
        assert_eq!(got.headers["referrer-policy"], "no-referrer");
    }
    let html = siphon_tests::http_get(&format!("{}/console", stack.base)).await;
    assert_eq!(html.headers["cache-control"], "no-store");
    let other = siphon_tests::http_get(&format!("{}/console/secrets.json", stack.base)).await;
    assert_eq!(
        other.status, 401,
        "anything else under /console needs credentials"
    );
    // The console's calls get no WWW-Authenticate (no browser password dialog); others do.
    let status = json!({"method": "aidbox.bulk/load-from-bucket-status"});
    let wrong = basic(CLIENT_ID, "wrong-secret");
    let got = stack
        .call(
            "POST",
            "/rpc",
            &wrong,
            &[("x-siphon-console", "1")],
            Some(status.clone()),
        )
        .await;
    assert_eq!(got.status, 401);
    assert!(!got.headers.contains_key("www-authenticate"));
    let got = stack.call("POST", "/rpc", &wrong, &[], Some(status)).await;
    assert!(got.headers.contains_key("www-authenticate"));
    // A client no AccessPolicy allows.
    let (s, b) = stack
        .admin(
            "PUT",
            "/",
            Some(
                json!([{"resourceType": "Client", "id": "no-policy", "secret": "np-secret",
                         "grant_types": ["basic"]}]),
            ),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let browser = Browser::start("sign-in", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, "wrong-secret");
    let message = browser.wait_text("#signin-error", "Wrong client id or secret", 10);
    assert!(message.contains("401"), "{message}");
    assert!(browser.js("return document.getElementById('nav').hidden", json!([])) == json!(true));
    // Every control has a label.
    let unlabelled = browser.js(
        "return [...document.querySelectorAll('input, select')].filter(i => !i.labels.length).map(i => i.id)",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]), "inputs without a label");
    page_is_clean(&browser);
    browser.screenshot("sign-in-wrong-secret");

    browser.sign_in(&stack.base, "no-policy", "np-secret");
    let message = browser.wait_text("#signin-error", "no AccessPolicy", 10);
    assert!(message.contains("403"), "{message}");

    // Signing in with the keyboard alone: Tab from the id to the secret, Enter submits.
    browser.goto(&stack.console_url());
    browser.type_into("#signin-id", CLIENT_ID, true);
    browser.keys(&format!("\u{E004}{CLIENT_SECRET}\u{E007}"));
    browser.wait_text("[data-stat=total] .value", "0", 10);
    browser.wait_text("[data-stat=loaded] .value", "0", 10);
    assert!(browser.text("#who-name").contains(CLIENT_ID));
    assert_eq!(
        browser.js(
            "return document.getElementById('signin-secret').value",
            json!([])
        ),
        json!(""),
        "the secret is not left in the form"
    );
    storage_is_empty(&browser);
    page_is_clean(&browser);
    // The policy is in force: an inline script (as injected markup would bring) is refused.
    browser.js(
        "const s = document.createElement('script'); s.textContent = 'window.pwned = 1'; \
         document.body.append(s);",
        json!([]),
    );
    assert_eq!(browser.js("return window.pwned || 0", json!([])), json!(0));
    let refused = browser.page_errors();
    assert!(
        refused.len() == 1 && refused[0].contains("Content Security Policy"),
        "{refused:?}"
    );
    browser.screenshot("overview");
    // Signing out forgets the credentials: the screens are empty and need a new sign-in.
    browser.click("#sign-out");
    browser.wait(
        "the sign-in form again",
        5,
        "return !document.getElementById('view-signin').hidden && \
         document.getElementById('overview-cards').childElementCount === 0",
        json!([]),
    );
}

#[tokio::test]
async fn import_tests_then_imports_and_follows_the_file_to_done() {
    const PATIENTS: u64 = 120_000;
    let stack = Stack::start(
        "import",
        Options {
            loaders: Some(1),
            ..Default::default()
        },
    )
    .await;
    let made = Instant::now();
    let big = gen::gzip(&gen::ndjson("Patient", PATIENTS, 1));
    let encounters = gen::gzip(&gen::ndjson("Encounter", 300, 2));
    let new_bytes = (big.len() + encounters.len()) as u64;
    stack.put("in/Patient-big.ndjson.gz", big).await;
    stack.put("in/Encounter.ndjson.gz", encounters).await;
    stack.put("in/notes.txt", b"not ndjson".to_vec()).await;
    stack
        .put(
            "elsewhere/Condition.ndjson.gz",
            gen::gzip(&gen::ndjson("Condition", 10, 3)),
        )
        .await;
    println!("data made in {:?}", made.elapsed());

    let browser = Browser::start("import", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, CLIENT_SECRET);
    browser.wait_text("[data-stat=total] .value", "0", 10);
    browser.select("#poll-every", "1000");
    browser.click("#nav [data-view=import]");
    browser.type_into("#import-bucket", &format!("s3://{}/", stack.bucket), true);
    browser.type_into("#import-prefixes", "in/", true);
    browser.type_into("#import-threads", "1", true);
    browser.click("#import-test");
    browser.wait_text("#import-plan", "By type", 15);
    let cell = |row: &str, col: usize| {
        browser.text(&format!(
            "#import-plan tr[data-plan='{row}'] td:nth-of-type({col})"
        ))
    };
    assert_eq!(browser.text("[data-stat=plan-files] .value"), "2");
    assert_eq!(
        (cell("new", 1), cell("unchanged", 1)),
        ("2".into(), "0".into())
    );
    assert_eq!(cell("type:Patient", 1), "1");
    assert_eq!(cell("type:Encounter", 1), "1");
    assert!(cell("type:Patient", 2).contains("kB") || cell("type:Patient", 2).contains("MB"));
    assert_eq!(
        browser.js(
            "return document.querySelector('[data-plan=\"new\"] td:nth-of-type(2)').title",
            json!([])
        ),
        json!(format!("{} bytes", thousands(new_bytes))),
        "the exact bytes, as a tooltip"
    );
    assert!(
        stack.loader_files().await.is_empty(),
        "a test changes nothing"
    );
    browser.screenshot("import-test");

    browser.click("#import-go");
    // The page follows the import: LoaderFiles of that bucket.
    browser.wait(
        "the LoaderFiles view filtered to the bucket",
        10,
        "return !document.getElementById('view-files').hidden && \
         document.getElementById('filter-bucket').value === arguments[0]",
        json!([stack.bucket]),
    );
    browser.wait_text("#notice", "2 queued", 5);
    let script = "const row = [...document.querySelectorAll('#files-body tr[data-id]')]\
                    .find(r => r.innerText.includes('Patient-big'));\
                  if (!row) return null;\
                  return {status: row.dataset.status,\
                          progress: row.querySelector('[data-progress]').dataset.progress,\
                          bar: row.querySelector('progress').value,\
                          loaded: row.querySelector('[data-role=loaded]').innerText};";
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut shot = false;
    let mut shot_mid = false;
    loop {
        let v = browser.js(script, json!([]));
        if v["status"] == "done" {
            assert_eq!(v["progress"], "1.000", "{v}");
            assert_eq!(v["bar"], 1000, "{v}");
            break;
        }
        if v["status"] == "in-progress" {
            let p = v["progress"].as_str().unwrap_or("").to_string();
            let value: f64 = p.parse().unwrap_or(0.0);
            if value > 0.0 && value < 1.0 && !seen.contains(&p) {
                seen.push(p);
                // The first, then once more past a third (the picture in docs/console.md).
                if !shot || (value > 0.3 && !shot_mid) {
                    browser.screenshot("files-progress");
                    shot_mid = value > 0.3;
                    shot = true;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the big file did not end within 90 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "Patient-big: {PATIENTS} in {:?}, progress seen {seen:?}",
        started.elapsed()
    );
    assert!(
        seen.len() >= 2,
        "the progress bar moved while the file loaded (saw {seen:?})"
    );
    browser.wait(
        "Patient-big done with every row loaded",
        10,
        "return [...document.querySelectorAll('#files-body tr[data-status=done]')].some(r => \
           r.innerText.includes('Patient-big') && \
           r.querySelector('[data-role=loaded]').innerText === '120,000')",
        json!([]),
    );
    browser.wait(
        "both files done",
        30,
        "return document.querySelectorAll('#files-body tr[data-status=done]').length === 2",
        json!([]),
    );
    assert!(browser.text("#files-body").contains("Encounter"));
    assert!(
        !browser.text("#files-body").contains("Condition"),
        "prefix in/ only"
    );
    browser.screenshot("files-done");
    // The overview counts them.
    browser.click("#nav [data-view=overview]");
    browser.wait_text("[data-stat=done] .value", "2", 10);
    browser.wait_text("[data-stat=loaded] .value", "120,300", 10);
    let rate = browser.wait(
        "a load rate from two polls",
        10,
        "const t = document.querySelector('[data-stat=rate] .value').innerText; \
         return /^[0-9,]+\\/s$/.test(t) ? t : null",
        json!([]),
    );
    println!("rate shown: {rate}");
    // The charts. The live one has a rate from this page's polls since the sign-in (0
    // loaded then, 120,300 now); the last hour's bars add up to every resource loaded,
    // each file's count spread over the minutes it took.
    let charts = browser.wait(
        "both charts",
        10,
        "const live = document.querySelector('[data-chart=live]'); \
         const hour = document.querySelector('[data-chart=hour]'); \
         if (!live || !hour || +live.dataset.points < 1) return null; \
         return {livePoints: +live.dataset.points, liveMax: +live.dataset.max, \
                 liveLine: !!live.querySelector('polyline'), \
                 hourPoints: +hour.dataset.points, hourTotal: +hour.dataset.total, \
                 bars: hour.querySelectorAll('rect').length, \
                 label: hour.querySelector('svg').getAttribute('aria-label'), \
                 caption: hour.querySelector('figcaption').innerText}",
        json!([]),
    );
    println!("charts: {charts}");
    assert!(charts["liveMax"].as_f64().unwrap_or(0.0) > 0.0, "{charts}");
    assert_eq!(charts["liveLine"], json!(true), "{charts}");
    assert_eq!(charts["hourPoints"], json!(60), "{charts}");
    assert_eq!(charts["hourTotal"], json!(120_300), "{charts}");
    assert!(charts["bars"].as_u64().unwrap_or(0) >= 1, "{charts}");
    assert!(
        charts["label"]
            .as_str()
            .unwrap_or("")
            .contains("120,300 resources in all"),
        "{charts}"
    );
    browser.screenshot("overview-charts");
    storage_is_empty(&browser);
    page_is_clean(&browser);
}

/// `1234567` -> `1,234,567`, as the console writes numbers.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The console's client's `Authorization`.
fn user() -> String {
    basic(CLIENT_ID, CLIENT_SECRET)
}

/// load-from-bucket of `prefix` through the API (as the console's client).
#[tokio::test]
async fn an_inventory_import_is_tested_then_followed_as_its_session() {
    use siphon_tests::inventory::{self, Format, Listed, Run};
    const PATIENTS: u64 = 500;
    let stack = Stack::start("inventory", Options::default()).await;
    stack
        .put(
            "src/Patient-1.ndjson.gz",
            gen::gzip(&gen::ndjson("Patient", PATIENTS, 4)),
        )
        .await;
    let head = stack
        .s3
        .head_object()
        .bucket(&stack.bucket)
        .key("src/Patient-1.ndjson.gz")
        .send()
        .await
        .unwrap();
    let rows = vec![Listed::object(
        "src/Patient-1.ndjson.gz",
        head.content_length().unwrap(),
        head.e_tag().unwrap(),
    )];
    // The bucket is its own inventory's destination, as S3 allows.
    let run = Run {
        inventory_bucket: &stack.bucket,
        dest: "inventories",
        source: &stack.bucket,
        config: "daily",
        when: "2026-11-23T01-00Z",
        format: Format::Csv,
        versioned: false,
        files: 1,
        without: &[],
    };
    let manifest = inventory::write(&stack.s3, &run, &rows, 1_795_400_000_000).await;

    let browser = Browser::start("inventory", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, CLIENT_SECRET);
    browser.click("#nav [data-view=import]");
    browser.type_into("#import-bucket", &format!("s3://{}", stack.bucket), true);
    browser.type_into("#import-inventory", &manifest, true);
    browser.click("#import-test");
    browser.wait_text("#import-plan", "By type", 15);
    assert_eq!(browser.text("[data-stat=plan-files] .value"), "1");
    assert_eq!(
        browser.text("#import-plan tr[data-plan='new'] td:nth-of-type(1)"),
        "1"
    );
    assert!(
        stack.loader_files().await.is_empty(),
        "a test changes nothing"
    );
    browser.screenshot("inventory-test");

    // Import: the inventory is planned by a session; the page opens it and follows it.
    browser.click("#import-go");
    browser.wait(
        "the sessions view with the import's session open",
        10,
        "return !document.getElementById('view-sessions').hidden && \
         !document.getElementById('session-detail').hidden && \
         document.getElementById('session-title').innerText.startsWith('Session ')",
        json!([]),
    );
    browser.wait(
        "the session done",
        60,
        "return document.getElementById('session-detail').dataset.status === 'done'",
        json!([]),
    );
    browser.screenshot("inventory-session-done");
    // Its files are a click away: LoaderFiles filtered to the session.
    browser.click("#inputs-body [data-key=inventory-files]");
    browser.wait(
        "the LoaderFiles view filtered to the session",
        10,
        "return !document.getElementById('view-files').hidden && \
         document.getElementById('filter-import').value.length > 0 && \
         document.querySelectorAll('#files-body tr[data-id]').length === 1",
        json!([]),
    );
    let files = stack.loader_files().await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["status"], "done", "{files:?}");
    assert_eq!(files[0]["loaded"], PATIENTS, "{files:?}");
    assert_eq!(files[0]["inventory"], json!(manifest), "{files:?}");
}

async fn import_prefix(stack: &Stack, prefix: &str) {
    let got = stack
        .call(
            "POST",
            "/rpc",
            &user(),
            &[],
            Some(json!({"method": "aidbox.bulk/load-from-bucket",
                        "params": {"bucket": format!("s3://{}/{prefix}", stack.bucket)}})),
        )
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// Shows the LoaderFiles of the stack's bucket.
fn files_of_bucket(browser: &Browser, stack: &Stack) {
    browser.click("#nav [data-view=files]");
    browser.type_into("#filter-bucket", &stack.bucket, true);
    browser.click("#files-filter button[type=submit]");
}

/// The row (`tr`) of the LoaderFiles table whose file name contains `name`, as a CSS
/// selector (rows carry their LoaderFile id).
fn file_row(browser: &Browser, name: &str) -> String {
    let id = browser.wait(
        &format!("a LoaderFile row for {name}"),
        15,
        "const r = [...document.querySelectorAll('#files-body tr[data-id]')]\
           .find(r => r.querySelector('td').innerText.includes(arguments[0])); \
         return r ? r.dataset.id : null",
        json!([name]),
    );
    format!("#files-body tr[data-id='{}']", id.as_str().unwrap())
}

const XSS: &str = "<img src=x onerror=alert(1)>";

#[tokio::test]
async fn failed_files_show_their_invalid_lines_as_text_and_dead_letters_retry() {
    let stack = Stack::start("failed", Options::default()).await;
    let mixed = [
        r#"{"resourceType":"Patient","id":"ok-1"}"#.to_string(),
        format!(r#"{{"resourceType":"Patient","id":"x","bad":"{XSS}""#),
        r#"{"resourceType":"Observation","id":"wrong-type"}"#.to_string(),
        r#"{"resourceType":"Patient","id":"ok-2"}"#.to_string(),
    ]
    .join("\n");
    stack
        .put("bad/Patient-mixed.ndjson.gz", gen::gzip(mixed.as_bytes()))
        .await;
    stack
        .put(
            "bad/Patient-cut.ndjson.gz",
            siphon_tests::corpus::truncated(3000, 50),
        )
        .await;
    import_prefix(&stack, "bad/").await;
    stack
        .wait_file("bad/Patient-mixed.ndjson.gz", "done", |f| {
            f["status"] == "done"
        })
        .await;
    let cut = stack
        .wait_file("bad/Patient-cut.ndjson.gz", "error", |f| {
            f["status"] == "error"
        })
        .await;
    // The queue gave up on the cut file's message: it is in the load dead-letter queue.
    stack
        .sqs
        .send_message()
        .queue_url(&stack.load_dlq)
        .message_body(
            json!({"loader_file_id": cut["id"], "bucket": stack.bucket,
                   "key": "bad/Patient-cut.ndjson.gz"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();

    // A file whose worker died: its lease ran out long ago, the sweep recovered it before.
    // (Only siphon writes LoaderFiles: this one is written into the table by hand.)
    let stalled = json!({"resourceType": "LoaderFile", "id": "stalled-1",
                         "file": "bad/Patient-stalled.ndjson.gz", "bucket": stack.bucket,
                         "type": "Patient", "status": "in-progress", "size": 4000,
                         "loaded": 10, "failed": 0, "checkpoint": {"line": 10, "bytes": 9000},
                         "start": "2026-01-01T00:00:00Z", "owner": CLIENT_ID,
                         "lease": {"owner": "dead-worker", "until": "2026-01-01T00:01:00Z"},
                         "recovery": {"at": "2026-01-01T00:00:30Z", "count": 2,
                                      "how": "visibility reset"}});
    stack
        .sql(&format!(
            "INSERT INTO loaderfile (id, txid, status, resource) VALUES ('stalled-1', nextval('transaction_id_seq'), 'created', '{}')",
            stalled.to_string().replace('\'', "''")
        ))
        .await;

    let browser = Browser::start("failed", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, CLIENT_SECRET);
    browser.wait_text("[data-stat=error] .value", "1", 10);
    browser.wait_text("[data-stat=failed] .value", "2", 10);
    files_of_bucket(&browser, &stack);
    let mixed_row = file_row(&browser, "Patient-mixed");
    assert_eq!(
        browser.text(&format!("{mixed_row} [data-role=failed]")),
        "2"
    );
    browser.click(&format!("{mixed_row} [data-action=errors]"));
    browser.wait_text("#errors-body", "wrong-type", 10);
    let rows = browser.js(
        "return [...document.querySelectorAll('#errors-body tr')].map(r => \
           [...r.querySelectorAll('td')].map(td => td.textContent))",
        json!([]),
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "2");
    let excerpt = rows[0][2].as_str().unwrap();
    assert!(
        excerpt.contains(XSS),
        "the excerpt shows the line's characters: {excerpt}"
    );
    assert_eq!(rows[1][0], "3");
    assert!(
        rows[1][1].as_str().unwrap().contains("Observation"),
        "{rows:?}"
    );
    assert_eq!(
        browser.js("return document.querySelectorAll('img').length", json!([])),
        json!(0),
        "no element made from data"
    );
    page_is_clean(&browser);
    browser.js(
        "document.getElementById('errors-panel').scrollIntoView({block: 'end'})",
        json!([]),
    );
    browser.screenshot("invalid-lines");
    // The failed file: its error in its row and in the panel.
    let cut_row = file_row(&browser, "Patient-cut");
    let error = browser.text(&format!("{cut_row} [data-role=error]"));
    assert!(error.contains("truncated"), "{error}");
    browser.click(&format!("{cut_row} [data-action=errors]"));
    browser.wait_text("#errors-error", "truncated", 10);
    let stalled = browser.text("#files-body tr[data-id=stalled-1]");
    assert!(
        stalled.contains("stalled since 2026-01-01 00:01:00Z")
            && stalled.contains("recovered 2× (visibility reset)"),
        "{stalled}"
    );
    // Deleting files and dead letters are the admin's: this client sees neither.
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#files-body [data-action=delete]').length",
            json!([])
        ),
        json!(0)
    );
    assert_eq!(
        browser.js(
            "return document.querySelector('#nav [data-view=dead]').hidden",
            json!([])
        ),
        json!(true)
    );
    browser.click("#sign-out");
    browser.sign_in(
        &stack.base,
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_ID"),
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET"),
    );
    browser.wait_text("#who-name", "(admin)", 10);
    files_of_bucket(&browser, &stack);
    let mixed_row = file_row(&browser, "Patient-mixed");
    // Delete asks first; Cancel keeps the file, Delete forgets it.
    browser.click(&format!("{mixed_row} [data-action=delete]"));
    browser.wait_text("#dialog", "Delete this LoaderFile?", 5);
    browser.click("#dialog-cancel");
    assert_eq!(stack.loader_files().await.len(), 3);
    browser.click(&format!("{mixed_row} [data-action=delete]"));
    browser.wait_text("#dialog", "Rows already loaded stay", 5);
    browser.click("#dialog-ok");
    browser.wait_text("#notice", "deleted", 10);
    browser.wait(
        "the deleted file's row gone",
        10,
        "return !document.querySelector(arguments[0])",
        json!([mixed_row]),
    );
    let left = stack.loader_files().await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left
        .iter()
        .all(|f| f["file"] != "bad/Patient-mixed.ndjson.gz"));

    // Dead letters: listed with the file's error, retried back onto the load queue.
    browser.click("#nav [data-view=dead]");
    browser.wait_text("#dead-body", "Patient-cut", 15);
    let dead = browser.text("#dead-body");
    assert!(
        dead.contains("truncated") && dead.contains("error"),
        "{dead}"
    );
    assert!(dead.contains(cut["id"].as_str().unwrap()), "{dead}");
    browser.screenshot("dead-letters");
    browser.click("#dead-body [data-action=retry]");
    browser.wait_text("#dead-message", "back on the load queue", 10);
    browser.wait_text("#dead-body", "No dead letters", 10);
    // The retried file goes through the loader again (and fails again, the same way).
    stack
        .wait_file("bad/Patient-cut.ndjson.gz", "loaded again", |f| {
            f["status"] == "error" && f["error"].as_str().unwrap_or("").contains("truncated")
        })
        .await;
    page_is_clean(&browser);
}

#[tokio::test]
async fn a_session_is_paused_and_resumed_with_its_secret() {
    let stack = Stack::start(
        "session",
        Options {
            // The session stays active with its input queued until the test lifts this.
            load_delay_seconds: Some(900),
            loaders: Some(1),
            ..Default::default()
        },
    )
    .await;
    stack
        .put(
            "s/Patient.ndjson.gz",
            gen::gzip(&gen::ndjson("Patient", 2000, 5)),
        )
        .await;
    let browser = Browser::start("session", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, CLIENT_SECRET);
    browser.wait_text("[data-stat=total] .value", "0", 10);
    browser.select("#poll-every", "1000");
    browser.click("#nav [data-view=sessions]");
    browser.wait_text("#sessions-body", "No $import sessions yet", 10);
    // The session's input waits in the (delayed) load queue: the session stays active.
    let started = stack
        .call(
            "POST",
            "/$import",
            &user(),
            &[],
            Some(json!({"resource": {
                "id": "imp-console", "secret": "sess-secret",
                "inputFormat": "application/fhir+ndjson",
                "inputs": [{"type": "Patient",
                            "url": format!("s3://{}/s/Patient.ndjson.gz", stack.bucket)}]}})),
        )
        .await;
    assert_eq!(
        started.status,
        201,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    browser.wait_text("#sessions-body", "imp-console", 10);
    browser.click("#sessions-body tr[data-id=imp-console] button");
    let status_is = |status: &str, secs: u64| {
        browser.wait(
            &format!("the session shown {status}"),
            secs,
            "return document.getElementById('session-detail').dataset.status === arguments[0]",
            json!([status]),
        );
    };
    status_is("active", 5);
    let act = |action: &str, secret: &str| {
        browser.click(&format!("#session-actions [data-action='{action}']"));
        browser.wait_text("#dialog", "Session secret", 5);
        browser.type_into("#dialog-secret", secret, true);
        browser.click("#dialog-ok");
    };
    // Resume of an active session: the server's 406 and its message.
    act("resume", "sess-secret");
    let message = browser.wait_text("#session-message", "406", 10);
    assert!(message.contains("active"), "{message}");
    // A wrong secret: 403 and the server's message.
    act("pause", "not-the-secret");
    let message = browser.wait_text("#session-message", "403", 10);
    assert!(message.to_lowercase().contains("secret"), "{message}");
    act("pause", "sess-secret");
    browser.wait_text("#session-message", "now paused", 10);
    status_is("paused", 5);
    browser.wait(
        "the list showing it paused",
        5,
        "return document.querySelector('#sessions-body tr[data-id=imp-console]').dataset.status === 'paused'",
        json!([]),
    );
    page_is_clean(&browser);
    browser.screenshot("session-paused");
    let (_, view) = stack.admin("GET", "/$import/imp-console", None).await;
    assert_eq!(view["status"], "paused", "{view}");
    // Resuming queues the file again, this time without a delay.
    stack.set_delay(&stack.load_queue, 0).await;
    act("resume", "sess-secret");
    browser.wait_text("#session-message", "now active", 10);
    // Its input loads and the session ends done.
    status_is("done", 30);
    browser.wait_text(
        "#inputs-body tr[data-input='0'] [data-label=Loaded]",
        "2,000",
        5,
    );
    // The session's live chart saw it: 0 loaded while paused, 2,000 after.
    let live = browser.wait(
        "the session's live chart with a rate",
        10,
        "const c = document.querySelector('#session-chart [data-chart=session]'); \
         return c && +c.dataset.max > 0 ? {points: +c.dataset.points, max: +c.dataset.max} : null",
        json!([]),
    );
    println!("session chart: {live}");
    browser.screenshot("session-done");
    storage_is_empty(&browser);
}

/// Kicks off `$export?_type=Patient` as the console's client; returns the export id.
async fn kick_off_export(stack: &Stack) -> String {
    let auth = user();
    let got = stack
        .call(
            "GET",
            "/$export?_type=Patient",
            &auth,
            &[
                ("accept", "application/fhir+json"),
                ("prefer", "respond-async"),
            ],
            None,
        )
        .await;
    assert_eq!(got.status, 202, "{}", String::from_utf8_lossy(&got.body));
    got.headers["content-location"]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn exports_are_followed_cancelled_and_their_files_linked() {
    let stack = Stack::start(
        "export",
        Options {
            // The first export stays running (its task queued) until the test lifts this.
            export_delay_seconds: Some(900),
            ..Default::default()
        },
    )
    .await;
    let patients: Vec<Value> = (0..25).map(|n| gen::resource("Patient", n, 9)).collect();
    let (s, b) = stack.admin("PUT", "/", Some(Value::Array(patients))).await;
    assert_eq!(s, 200, "{b}");
    let browser = Browser::start("export", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, CLIENT_ID, CLIENT_SECRET);
    browser.wait_text("[data-stat=total] .value", "0", 10);
    browser.select("#poll-every", "1000");
    browser.click("#nav [data-view=exports]");
    browser.wait_text("#exports-body", "No exports yet", 10);
    // The first export's task waits in the (delayed) export queue: it stays active.
    let cancelled = kick_off_export(&stack).await;
    let row = |id: &str| format!("#exports-body tr[data-id='{id}']");
    browser.wait_text(&row(&cancelled), "active", 10);
    // Its status shows the live chart of a running export (nothing written yet: its task
    // waits in the queue, so the rate is 0 once two polls are in).
    browser.click(&format!("{} [data-action=open]", row(&cancelled)));
    let live = browser.wait(
        "the running export's live chart",
        10,
        "const c = document.querySelector('#export-body [data-chart=export]'); \
         return c && +c.dataset.points >= 1 \
           ? {caption: c.querySelector('figcaption').innerText, max: +c.dataset.max, \
              progress: document.getElementById('export-body').innerText} : null",
        json!([]),
    );
    assert!(
        live["caption"]
            .as_str()
            .unwrap_or("")
            .contains("written per second"),
        "{live}"
    );
    assert_eq!(live["max"], json!(0), "{live}");
    assert!(
        live["progress"]
            .as_str()
            .unwrap_or("")
            .contains("0 resources"),
        "{live}"
    );
    browser.click(&format!("{} [data-action=cancel]", row(&cancelled)));
    browser.wait_text("#dialog", "Cancel export", 5);
    browser.click("#dialog-ok");
    browser.wait_text("#export-message", "202", 10);
    let status = stack
        .call(
            "GET",
            &format!("/$export-status/{cancelled}"),
            &user(),
            &[],
            None,
        )
        .await;
    assert_eq!(status.status, 404, "a cancelled export's status is 404");
    browser.wait(
        "the cancelled export shown cancelled (or gone)",
        10,
        "const r = document.querySelector(arguments[0]); \
         return !r || r.dataset.status === 'cancelled'",
        json!([row(&cancelled)]),
    );
    // Another, without the delay, completes: its files, with download links.
    stack.set_delay(&stack.export_queue, 0).await;
    let kept = kick_off_export(&stack).await;
    browser.wait(
        "the kept export done",
        40,
        "const r = document.querySelector(arguments[0]); return r && r.dataset.status === 'done'",
        json!([row(&kept)]),
    );
    assert!(
        browser.text(&row(&kept)).contains("25"),
        "resources counted"
    );
    browser.click(&format!("{} button", row(&kept)));
    browser.wait_text("#export-body", "Download", 10);
    let links = browser.js(
        "return [...document.querySelectorAll('#export-body a[data-role=download]')]\
           .map(a => [a.href, a.innerText, a.rel])",
        json!([]),
    );
    let links = links.as_array().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    let href = links[0][0].as_str().unwrap();
    assert!(href.starts_with("http://127.0.0.1:4566/"), "{href}");
    assert!(
        links[0][1].as_str().unwrap().contains("Patient"),
        "{links:?}"
    );
    assert!(links[0][2].as_str().unwrap().contains("noreferrer"));
    browser.screenshot("export-files");
    let file = siphon_tests::http_get(href).await;
    assert_eq!(file.status, 200);
    assert_eq!(
        file.body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        25
    );
    page_is_clean(&browser);
}

#[tokio::test]
async fn the_phone_layout_fits_and_reads() {
    let stack = Stack::start("phone", Options::default()).await;
    stack
        .put(
            "p/Patient.ndjson.gz",
            gen::gzip(&gen::ndjson("Patient", 500, 4)),
        )
        .await;
    let lines = format!(
        "{}\n{{\"resourceType\":\"Patient\"}}\n",
        r#"{"resourceType":"Patient","id":"fine"}"#
    );
    stack
        .put("p/Patient-some-bad.ndjson.gz", gen::gzip(lines.as_bytes()))
        .await;
    import_prefix(&stack, "p/").await;
    stack
        .wait_file("p/Patient.ndjson.gz", "done", |f| f["status"] == "done")
        .await;
    stack
        .wait_file("p/Patient-some-bad.ndjson.gz", "done", |f| {
            f["status"] == "done"
        })
        .await;

    let browser = Browser::start("phone", PHONE.0, PHONE.1);
    let fits = |what: &str| {
        let sizes = browser.js(
            "return [document.documentElement.scrollWidth, innerWidth, \
               [...document.querySelectorAll('body *')].filter(e => e.checkVisibility() && \
                 e.getBoundingClientRect().right > innerWidth + 0.5).slice(0, 5)\
                 .map(e => e.tagName + '#' + e.id + '.' + e.className)]",
            json!([]),
        );
        if sizes[0].as_i64() > sizes[1].as_i64() {
            browser.screenshot(&format!("phone-{what}-too-wide"));
            panic!("{what}: no horizontal scrolling at {PHONE:?} ({sizes})");
        }
    };
    browser.goto(&stack.console_url());
    browser.find("#signin-id");
    fits("sign-in");
    // The admin: every screen and button (deleting a LoaderFile is the admin's), so all
    // of them are measured.
    browser.sign_in(
        &stack.base,
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_ID"),
        &siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET"),
    );
    browser.wait_text("[data-stat=loaded] .value", "501", 10);
    fits("overview");
    // Every screen's button this client may use is on screen, none clipped (the rest,
    // such as dead letters for a client that is not the admin, are not shown at all).
    let off = browser.js(
        "return [...document.querySelectorAll('#nav button')].filter(b => { \
           if (!b.checkVisibility()) return false; \
           const r = b.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth || r.width < 40; \
         }).map(b => b.innerText)",
        json!([]),
    );
    assert_eq!(off, json!([]));
    browser.screenshot("phone-overview");
    files_of_bucket(&browser, &stack);
    file_row(&browser, "Patient-some-bad");
    fits("LoaderFiles");
    // Rows are cards: each cell labelled, one under the other.
    let label = browser.js(
        "const td = document.querySelector('#files-body tr[data-id] td[data-label=Status]'); \
         return [getComputedStyle(td).display, getComputedStyle(td, '::before').content]",
        json!([]),
    );
    assert_eq!(label, json!(["block", "\"Status\""]));
    browser.screenshot("phone-files");
    let bad = file_row(&browser, "Patient-some-bad");
    browser.click(&format!("{bad} [data-action=errors]"));
    browser.wait_text("#errors-body", "id", 10);
    fits("invalid lines");
    browser.click(&format!("{bad} [data-action=delete]"));
    browser.wait_text("#dialog", "Delete this LoaderFile?", 5);
    let dialog = browser.js(
        "const r = document.getElementById('dialog').getBoundingClientRect(); \
         return r.left >= 0 && r.right <= innerWidth && r.top >= 0 && r.bottom <= innerHeight",
        json!([]),
    );
    assert_eq!(dialog, json!(true), "the dialog fits the screen");
    browser.screenshot("phone-dialog");
    browser.click("#dialog-cancel");
    browser.click("#nav [data-view=import]");
    browser.find("#import-bucket");
    fits("import");
    browser.screenshot("phone-import");
    page_is_clean(&browser);
}

#[tokio::test]
async fn a_scoped_client_sees_only_its_own_work_and_only_what_its_scopes_allow() {
    let stack = Stack::start("scoped", Options::default()).await;
    stack
        .put(
            "theirs/Patient.ndjson.gz",
            gen::gzip(&gen::ndjson("Patient", 30, 1)),
        )
        .await;
    stack
        .put(
            "mine/Patient.ndjson.gz",
            gen::gzip(&gen::ndjson("Patient", 20, 2)),
        )
        .await;
    // Another client's load (the console user's), and the reader's own.
    import_prefix(&stack, "theirs/").await;
    let (s, b) = stack
        .admin(
            "PUT",
            "/",
            Some(json!([
                {"resourceType": "Client", "id": "reader", "secret": "reader-secret"},
                {"resourceType": "AccessPolicy", "id": "reader", "scope": "system/*.rs",
                 "link": [{"id": "reader", "resourceType": "Client"}]},
                {"resourceType": "Client", "id": "writer", "secret": "writer-secret"},
                {"resourceType": "AccessPolicy", "id": "writer", "scope": "system/Patient.cru",
                 "link": [{"id": "writer", "resourceType": "Client"}]}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let got = stack
        .call(
            "POST",
            "/rpc",
            &basic("writer", "writer-secret"),
            &[],
            Some(json!({"method": "aidbox.bulk/load-from-bucket",
                        "params": {"bucket": format!("s3://{}/mine/", stack.bucket)}})),
        )
        .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    stack
        .wait_file("mine/Patient.ndjson.gz", "done", |f| f["status"] == "done")
        .await;
    stack
        .wait_file("theirs/Patient.ndjson.gz", "done", |f| {
            f["status"] == "done"
        })
        .await;

    // A reader: no import screen, no dead letters, nobody's files.
    let browser = Browser::start("scoped", DESKTOP.0, DESKTOP.1);
    browser.sign_in(&stack.base, "reader", "reader-secret");
    browser.wait_text("#who-name", "reader", 10);
    let hidden = browser.js(
        "return ['import', 'dead', 'files', 'exports'].map(v => document.querySelector('#nav [data-view=' + v + ']').hidden)",
        json!([]),
    );
    assert_eq!(hidden, json!([true, true, false, false]));
    browser.click("#nav [data-view=files]");
    browser.wait_text("#files-body", "No LoaderFiles", 10);
    page_is_clean(&browser);
    browser.screenshot("scoped-reader");
    // Typing the dead letters' address does not open them either.
    browser.click("#sign-out");
    browser.js("location.hash = '#dead'", json!([]));
    browser.type_into("#signin-id", "reader", true);
    browser.type_into("#signin-secret", "reader-secret", true);
    browser.click("#signin-submit");
    browser.wait_text("#who-name", "reader", 10);
    assert_eq!(
        browser.js(
            "return document.getElementById('view-dead').hidden",
            json!([])
        ),
        json!(true)
    );

    // A writer: the import screen, its own file only, no delete buttons.
    browser.click("#sign-out");
    browser.sign_in(&stack.base, "writer", "writer-secret");
    browser.wait_text("#who-name", "writer", 10);
    assert_eq!(
        browser.js(
            "return document.querySelector('#nav [data-view=import]').hidden",
            json!([])
        ),
        json!(false)
    );
    files_of_bucket(&browser, &stack);
    file_row(&browser, "mine/Patient");
    let rows = browser.js(
        "return document.querySelectorAll('#files-body tr[data-id]').length",
        json!([]),
    );
    assert_eq!(rows, json!(1), "only the writer's own file");
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#files-body [data-action=delete]').length",
            json!([])
        ),
        json!(0)
    );
    page_is_clean(&browser);
    browser.screenshot("scoped-writer");
}
