//! The fault suite's own PostgreSQL cluster, made with Debian's tools (run as root):
//! `pg_createcluster`, `pg_ctlcluster`, `pg_dropcluster`. It is the only cluster the
//! suite restarts or reconfigures; the main cluster (15/main) is never touched.

use std::process::Command;
use std::time::{Duration, Instant};

/// A cluster this process created (and drops).
#[derive(Clone, Debug)]
pub struct Cluster {
    pub version: String,
    pub name: String,
    pub port: u16,
    password: String,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .current_dir("/")
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `pg_lsclusters -h` rows as (version, name, port).
fn clusters() -> Vec<(String, String, u16)> {
    run(Command::new("pg_lsclusters").arg("-h"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The newest installed server version (`/usr/lib/postgresql/<v>`).
pub fn installed_version() -> Option<String> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    versions.last().map(|v| v.to_string())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && !clusters().iter().any(|(_, _, p)| *p == port)
}

impl Cluster {
    /// Drops a leftover cluster of this name, then creates, starts and provisions a new
    /// one on the first free port from `port`: role `siphon` (password, CREATEDB),
    /// role `siphon_reader` granted to it.
    pub fn create(version: &str, name: &str, port: u16) -> Result<Cluster, String> {
        Self::drop_leftover(version, name);
        let port = (port..port + 20)
            .find(|p| port_free(*p))
            .ok_or_else(|| format!("no free port in {port}..{}", port + 20))?;
        run(Command::new("pg_createcluster").args([version, name, "--port", &port.to_string()]))?;
        let cluster = Cluster {
            version: version.to_string(),
            name: name.to_string(),
            port,
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        let provision = || -> Result<(), String> {
            cluster.ctl("start")?;
            cluster
                .psql(&format!(
                    "CREATE ROLE siphon LOGIN CREATEDB PASSWORD '{}'; CREATE ROLE siphon_reader NOLOGIN; \
                     GRANT siphon_reader TO siphon;",
                    cluster.password
                ))
                .map_err(|e| e.replace(&cluster.password, "***"))?;
            cluster.psql("CREATE DATABASE siphon OWNER siphon")?;
            Ok(())
        };
        if let Err(e) = provision() {
            cluster.drop_cluster();
            return Err(e);
        }
        Ok(cluster)
    }

    /// `pg_dropcluster --stop` of a cluster left by an earlier run, if any.
    pub fn drop_leftover(version: &str, name: &str) {
        if clusters().iter().any(|(v, n, _)| v == version && n == name) {
            eprintln!("dropping leftover cluster {version}/{name}");
            let _ = run(Command::new("pg_dropcluster").args(["--stop", version, name]));
        }
    }

    /// Role siphon's password (for a pooler's auth file).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://siphon:...@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://siphon:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Runs SQL as the postgres superuser (psql over the local socket).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        run(Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            &self.port.to_string(),
            "-d",
            "postgres",
            "-c",
            sql,
        ]))
    }

    /// Runs a query as the postgres superuser in database `db` (a reserved connection
    /// slot, so it works when siphon holds every other one); unaligned, tuples only.
    pub fn query(&self, db: &str, sql: &str) -> Result<String, String> {
        run(Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-tA",
            "-F",
            " | ",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            &self.port.to_string(),
            "-d",
            db,
            "-c",
            sql,
        ]))
    }

    /// `pg_ctlcluster <action>` (start, stop, restart), then waits until it answers
    /// (after start/restart).
    pub fn ctl(&self, action: &str) -> Result<(), String> {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            action,
        ]))?;
        if action != "stop" {
            self.wait_ready(Duration::from_secs(60))?;
        }
        Ok(())
    }

    fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let ok = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(format!("cluster {} does not answer", self.name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets (or with `None` resets) `max_connections` and restarts the cluster.
    pub fn set_max_connections(&self, n: Option<u32>) -> Result<(), String> {
        match n {
            Some(n) => self.psql(&format!("ALTER SYSTEM SET max_connections = {n}"))?,
            None => self.psql("ALTER SYSTEM RESET max_connections")?,
        };
        self.ctl("restart")
    }

    /// `pg_dropcluster --stop`.
    pub fn drop_cluster(&self) {
        if let Err(e) =
            run(Command::new("pg_dropcluster").args(["--stop", &self.version, &self.name]))
        {
            eprintln!("cannot drop cluster {}/{}: {e}", self.version, self.name);
        }
    }

    /// The server log (Debian's default location).
    pub fn log_path(&self) -> String {
        format!(
            "/var/log/postgresql/postgresql-{}-{}.log",
            self.version, self.name
        )
    }
}
