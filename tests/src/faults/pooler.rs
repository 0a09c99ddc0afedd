//! PgBouncer (Debian's package) in front of the fault suite's cluster, on 127.0.0.1, in
//! `pool_mode = transaction`: locally, what RDS Proxy is to siphon in AWS. Started as a
//! child of this process (switched to the `postgres` user, as PgBouncer refuses root),
//! its files in a directory of its own that is removed with it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Debian's binary.
const BINARY: &str = "/usr/sbin/pgbouncer";

/// A running PgBouncer.
pub struct Bouncer {
    child: Option<tokio::process::Child>,
    dir: PathBuf,
    pub port: u16,
    /// Server connections it may open to the database.
    pub server_connections: u32,
}

fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("id {flag} postgres: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "no postgres user".to_string())
    };
    Ok((id("-u")?, id("-g")?))
}

impl Bouncer {
    /// Starts PgBouncer on a free loopback port in front of `server_port`, pooling by
    /// transaction with at most `server_connections` to the database, and waits until
    /// it accepts connections. `password` is role siphon's (SCRAM both ways).
    pub async fn start(
        server_port: u16,
        password: &str,
        server_connections: u32,
        log: &Path,
    ) -> Result<Bouncer, String> {
        if !Path::new(BINARY).exists() {
            return Err(format!("{BINARY} is missing: apt-get install pgbouncer"));
        }
        let port = super::local::free_addr().port();
        let dir = std::env::temp_dir().join(format!("siphon-faults-pgbouncer-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let users = dir.join("userlist.txt");
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(&users, format!("\"siphon\" \"{password}\"\n"))
            .map_err(|e| e.to_string())?;
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={server_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {server_connections}\n\
                 max_db_connections = {server_connections}\n\
                 max_client_conn = 1000\n\
                 query_wait_timeout = 120\n\
                 ignore_startup_parameters = extra_float_digits\n",
                users.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let (uid, gid) = postgres_ids()?;
        use std::os::unix::fs::PermissionsExt;
        for p in [&dir, &users, &ini] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(BINARY)
            .args(["-u", "postgres"])
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{BINARY}: {e}"))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "pgbouncer exited at start ({status}):\n{}",
                    super::local::tail(log, 20)
                ));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Bouncer {
                    child: Some(child),
                    dir,
                    port,
                    server_connections,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "pgbouncer did not listen on port {port} within 20 s"
        ))
    }

    /// `url` (a direct `postgres://` URL of the cluster on `server_port`) through the
    /// pooler instead.
    pub fn url(&self, url: &str, server_port: u16) -> String {
        url.replace(
            &format!("@127.0.0.1:{server_port}/"),
            &format!("@127.0.0.1:{}/", self.port),
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reaped before its directory goes (up to 1 s): the next pooler of a run may
            // take the port, and no zombie outlives the scenario.
            for _ in 0..50 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
