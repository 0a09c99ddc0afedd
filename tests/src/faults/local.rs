//! siphon-local child processes, run as users run them (`make serve`'s binary), each in
//! its own process group so a kill takes the whole group. Every group started is
//! registered until it is reaped, so any exit path can kill what is left.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http;

/// Process groups started and not yet reaped.
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// `kill -KILL -- -<pgid>`: every process of the group.
pub fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Kills every registered group (exit paths: panic guard, signals).
pub fn kill_all() {
    let groups: Vec<u32> = std::mem::take(&mut *GROUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for g in groups {
        kill_group(g);
    }
}

fn unregister(pgid: u32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|g| *g != pgid);
}

/// A free port on 127.0.0.1 (bound once, then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// The admin client's `id:secret` from local.env.
pub fn admin() -> String {
    format!(
        "{}:{}",
        siphon_tests::var("SIPHON_ADMIN_CLIENT_ID"),
        siphon_tests::var("SIPHON_ADMIN_CLIENT_SECRET")
    )
}

/// The environment of a siphon-local child: only what it needs (never the shared
/// events queue), AWS pointed at LocalStack on 127.0.0.1.
pub fn base_env(db_url: &str, queue_url: &str, loaders: usize) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            env.insert(k.to_string(), v);
        }
    }
    env.insert(
        "RUST_LOG".into(),
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    for k in [
        "SIPHON_ADMIN_CLIENT_ID",
        "SIPHON_ADMIN_CLIENT_SECRET",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "SIPHON_URL_ALLOWLIST",
    ] {
        env.insert(k.to_string(), siphon_tests::var(k));
    }
    env.insert("SIPHON_S3_FORCE_PATH_STYLE".into(), "true".into());
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env.insert("DATABASE_URL".into(), db_url.to_string());
    env.insert("SIPHON_LOAD_QUEUE_URL".into(), queue_url.to_string());
    env.insert("SIPHON_LOCAL_LOADERS".into(), loaders.to_string());
    env
}

/// The release siphon-local binary (or `SIPHON_LOCAL_BIN`).
pub fn binary() -> PathBuf {
    std::env::var_os("SIPHON_LOCAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| siphon_tests::repo_root().join("target/release/siphon-local"))
}

/// A running siphon-local.
pub struct Local {
    child: Option<tokio::process::Child>,
    pub pgid: u32,
    pub addr: SocketAddr,
}

impl Local {
    /// Starts `bin` with exactly `env` (plus a free `SIPHON_LOCAL_ADDR`), stdout and
    /// stderr to `log`, and waits until its API accepts connections.
    pub async fn start(
        bin: &Path,
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<Local, String> {
        let addr = free_addr();
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.env_clear()
            .envs(env)
            .env("SIPHON_LOCAL_ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let pgid = child.id().ok_or("the child exited at once")?;
        GROUPS.lock().unwrap().push(pgid);
        let mut local = None;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = child.try_wait() {
                unregister(pgid);
                return Err(format!(
                    "siphon-local exited at start ({status}); log {}:\n{}",
                    log.display(),
                    tail(log, 20)
                ));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                local = Some(());
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let this = Local {
            child: Some(child),
            pgid,
            addr,
        };
        match local {
            Some(()) => Ok(this),
            None => Err(format!("siphon-local did not listen on {addr} within 30 s")),
        }
    }

    /// kill -9 of the whole process group, then reaps the child.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(self.pgid);
            let _ = child.wait().await;
            unregister(self.pgid);
        }
    }

    pub async fn rpc(&self, body: &Value) -> Result<Value, String> {
        http::rpc(self.addr, &admin(), body).await
    }

    /// `GET path` (200 expected).
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http::request(
            self.addr,
            "GET",
            path,
            &admin(),
            None,
            Duration::from_secs(60),
        )
        .await?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        Ok(body)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.child.is_some() {
            kill_group(self.pgid);
            unregister(self.pgid);
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
