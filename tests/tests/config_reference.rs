//! The configuration, checked three ways against the code:
//! - every function of `template.yaml`, given exactly the environment the template gives
//!   it, parses its typed `Config` and boots with every service its routes use (the API
//!   with both dead-letter queues, tokens and exports; s3-ingest with automatic
//!   inventory imports; ...);
//! - every variable a `Config` reads is listed in `docs/configuration.md`, and every
//!   variable listed there is read by some `Config` (or by the AWS SDK or the logs);
//! - every variable the template sets for a function is one that function reads.
//!
//! One test in this binary: it changes the process environment (the AWS SDK reads
//! `AWS_ENDPOINT_URL` from it), which nothing else here may see.

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::Value as Yaml;
use siphon::config::Env;
use siphon::storage::Db;

/// Variables read by the AWS SDK or the log setup rather than a `Config`.
const OUTSIDE_CONFIG: [&str; 5] = [
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "RUST_LOG",
    "AWS_LAMBDA_RUNTIME_API",
];

fn template() -> Yaml {
    let text = std::fs::read_to_string(siphon_tests::repo_root().join("template.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// A value for `name` as the template would make it in AWS (references resolved to the
/// parameter's default or to a plausible resource value).
fn resolve(template: &Yaml, name: &str, value: &Yaml) -> String {
    let placeholder = || {
        if name.ends_with("_QUEUE_URL") || name.ends_with("_DLQ_URL") {
            "https://sqs.us-east-1.amazonaws.com/000000000000/q".to_string()
        } else if name.ends_with("_ARN") {
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:s".to_string()
        } else if name.contains("BUCKET") {
            "bucket".to_string()
        } else if name == "PGHOST" {
            "db.example.org".to_string()
        } else {
            String::new()
        }
    };
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Tagged(t) => match (t.tag.to_string().as_str(), &t.value) {
            ("!Ref", Yaml::String(r)) => match &template["Parameters"][r.as_str()]["Default"] {
                Yaml::Null => placeholder(),
                Yaml::String(d) if d.is_empty() => placeholder(),
                d => resolve(template, name, d),
            },
            ("!If", Yaml::Sequence(branches)) => {
                // The branch that is not `AWS::NoValue`: what a deployment that uses the
                // feature sets.
                let pick = branches
                    .iter()
                    .skip(1)
                    .find(|b| !matches!(b, Yaml::Tagged(t) if t.value == Yaml::String("AWS::NoValue".into())))
                    .unwrap_or(&branches[1]);
                resolve(template, name, pick)
            }
            _ => placeholder(),
        },
        _ => placeholder(),
    }
}

/// Each function's environment, as the template gives it (Globals included).
fn environments(template: &Yaml) -> BTreeMap<String, Vec<(String, String)>> {
    let globals = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != Yaml::String("AWS::Serverless::Function".into()) {
            continue;
        }
        let mut vars = Vec::new();
        let own = resource["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for (k, v) in globals.iter().chain(own.iter()) {
            let k = k.as_str().unwrap().to_string();
            let value = resolve(template, &k, v);
            vars.push((k, value));
        }
        out.insert(name.as_str().unwrap().to_string(), vars);
    }
    out
}

fn env_of(vars: &[(String, String)]) -> Env {
    vars.iter().fold(Env::default(), |e, (k, v)| e.with(k, v))
}

/// The variable names of the reference's table (first column, in backticks).
fn documented() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(siphon_tests::repo_root().join("docs/configuration.md")).unwrap();
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        for part in first.split('`').skip(1).step_by(2) {
            if part
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                out.insert(part.to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn the_template_the_reference_and_the_configs_agree() {
    // SAFETY: the only test of this binary; the SDK reads these from the process.
    unsafe {
        std::env::remove_var("AWS_ENDPOINT_URL");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let template = template();
    let envs = environments(&template);
    let mut read = BTreeSet::new();
    for (function, vars) in &envs {
        let env = env_of(vars);
        let set: BTreeSet<String> = vars.iter().map(|(k, _)| k.clone()).collect();
        let db = || Db::new(siphon::storage::DbConfig::from_env(&env).unwrap());
        match function.as_str() {
            "ApiFunction" => {
                let c = siphon_api::Config::from_env(&env).unwrap();
                let app = siphon_api::App::boot(&c, db()).await.unwrap();
                let dead = app
                    .dead_letters
                    .as_ref()
                    .expect("the API lists dead letters");
                let names: Vec<&str> = dead.pairs.iter().map(|p| p.name).collect();
                assert_eq!(names, ["load", "export"], "the API's dead-letter queues");
                assert!(app.exports.is_some() && app.task_queue.is_some(), "exports");
                assert!(app.auth.tokens_enabled(), "SMART tokens");
            }
            "DumpFunction" => {
                let c = siphon_dump::Config::from_env(&env).unwrap();
                let app = siphon_dump::App::new(&c, db());
                assert!(
                    app.auth.tokens_enabled(),
                    "the dump function checks bearer tokens"
                );
            }
            "LoaderFunction" => {
                let c = siphon_loader::Config::from_env(&env).unwrap();
                siphon_loader::boot(&c, db()).await.unwrap();
            }
            "ExportFunction" => {
                let c = siphon_export::Config::from_env(&env).unwrap();
                assert!(
                    c.load_queue_url.is_some(),
                    "inventory imports queue their files"
                );
                siphon_export::boot(&c, db()).await.unwrap();
            }
            "S3IngestFunction" => {
                let c = siphon_s3_ingest::Config::from_env(&env).unwrap();
                let ingest = siphon_s3_ingest::boot(&c, db()).await.unwrap();
                assert!(ingest.auto.is_some(), "new S3 Inventory runs are imported");
            }
            "SweepFunction" => {
                let c = siphon_sweep::Config::from_env(&env).unwrap();
                siphon_sweep::boot(&c, db()).await.unwrap();
                assert!(c.export_queue_url.is_some(), "export tasks are swept too");
            }
            other => panic!("{other}: a function this test does not know: add it"),
        }
        let asked = env.asked();
        let unread: Vec<&String> = set
            .iter()
            .filter(|k| !asked.contains(*k) && !OUTSIDE_CONFIG.contains(&k.as_str()))
            .collect();
        assert!(
            unread.is_empty(),
            "{function}: the template sets {unread:?}, which it never reads"
        );
        read.extend(asked);
    }
    assert_eq!(envs.len(), 6, "six functions");
    // make serve reads the same, and a few of its own.
    let local = siphon_tests::config_env();
    siphon_local::Config::from_env(&local).unwrap();
    read.extend(local.asked());
    let documented = documented();
    let missing: Vec<&String> = read.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "read by the code but not in docs/configuration.md: {missing:?}"
    );
    let stale: Vec<&String> = documented
        .iter()
        .filter(|d| !read.contains(*d) && !OUTSIDE_CONFIG.contains(&d.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "in docs/configuration.md but read by nothing: {stale:?}"
    );
}
