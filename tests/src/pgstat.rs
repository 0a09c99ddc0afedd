//! What the local Postgres did over a benchmark run besides its total CPU: WAL written,
//! checkpoints, buffers its backends had to write themselves, autovacuum runs on the
//! loaded tables, and CPU seconds by process role (read from `/proc`). The benchmarks
//! print it beside their CPU figures so that a run that cost the server more can be
//! explained from numbers (a checkpoint mid-load, autovacuum, backend writes) rather than
//! called noise.

use std::collections::BTreeMap;

/// A snapshot taken before a run; [`Snapshot::since`] after it gives the [`Activity`].
pub struct Snapshot {
    wal_lsn: String,
    bgwriter: [i64; 5],
    autovacuum: i64,
    /// (sessions, commits, rollbacks) of the client's database.
    database: [i64; 3],
    /// pid -> (role, own CPU ticks)
    processes: BTreeMap<u32, (String, u64)>,
    /// The postmaster's ended children's ticks.
    ended: u64,
}

/// What the server did between a [`Snapshot`] and now.
#[derive(Debug, Default)]
pub struct Activity {
    pub wal_mb: f64,
    pub checkpoints_timed: i64,
    pub checkpoints_requested: i64,
    /// Buffers written by the checkpointer, the background writer and backends.
    pub buffers_checkpoint: i64,
    pub buffers_clean: i64,
    pub buffers_backend: i64,
    /// Autovacuum and autoanalyze runs on tables of the database the client is in.
    pub autovacuum_runs: i64,
    /// Sessions opened, transactions committed and rolled back in that database.
    pub sessions: i64,
    pub commits: i64,
    pub rollbacks: i64,
    /// CPU seconds by role: `backend` (live), `ended` (backends and autovacuum workers
    /// that exited), `checkpointer`, `background writer`, `walwriter`, ...
    pub cpu: BTreeMap<String, f64>,
}

const BGWRITER: &str = "SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_clean, buffers_backend FROM pg_stat_bgwriter";
const DATABASE: &str = "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()";
const AUTOVACUUM: &str =
    "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint FROM pg_stat_all_tables";

impl Snapshot {
    /// Takes a snapshot through `client` (any database of the local cluster).
    pub async fn take(client: &tokio_postgres::Client) -> Snapshot {
        let (processes, ended) = processes();
        Snapshot {
            wal_lsn: client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .unwrap()
                .get(0),
            bgwriter: bgwriter(client).await,
            autovacuum: autovacuum(client).await,
            database: database(client).await,
            processes,
            ended,
        }
    }

    /// What the server did since the snapshot (read once the run's backends have gone).
    pub async fn since(&self, client: &tokio_postgres::Client) -> Activity {
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .ok();
        let wal: f64 = client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
                &[&self.wal_lsn],
            )
            .await
            .unwrap()
            .get(0);
        let b = bgwriter(client).await;
        let d = database(client).await;
        let (now, ended) = processes();
        let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, (role, ticks)) in &now {
            let before = self.processes.get(pid).map_or(0, |(_, t)| *t);
            *cpu.entry(role.clone()).or_default() += ticks.saturating_sub(before) as f64 / 100.0;
        }
        // A process that ended since the snapshot is in the postmaster's reaped time with
        // its whole life: less what it had used by the snapshot.
        let gone: u64 = (self.processes.iter())
            .filter(|(pid, _)| !now.contains_key(*pid))
            .map(|(_, (_, t))| *t)
            .sum();
        let ended = ended.saturating_sub(self.ended).saturating_sub(gone);
        *cpu.entry("ended".into()).or_default() += ended as f64 / 100.0;
        cpu.retain(|_, s| *s > 0.0);
        Activity {
            wal_mb: wal / 1e6,
            checkpoints_timed: b[0] - self.bgwriter[0],
            checkpoints_requested: b[1] - self.bgwriter[1],
            buffers_checkpoint: b[2] - self.bgwriter[2],
            buffers_clean: b[3] - self.bgwriter[3],
            buffers_backend: b[4] - self.bgwriter[4],
            autovacuum_runs: autovacuum(client).await - self.autovacuum,
            sessions: d[0] - self.database[0],
            commits: d[1] - self.database[1],
            rollbacks: d[2] - self.database[2],
            cpu,
        }
    }
}

impl Activity {
    /// CPU seconds of every Postgres process over the run: what the server spent on it.
    pub fn cpu_total(&self) -> f64 {
        self.cpu.values().sum()
    }
}

impl std::fmt::Display for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sessions {}, commits {}, rollbacks {}, WAL {:.0} MB, checkpoints {} timed + {} requested, buffers written by checkpointer {} / bgwriter {} / backends {}, autovacuum runs {}; CPU s",
            self.sessions,
            self.commits,
            self.rollbacks,
            self.wal_mb,
            self.checkpoints_timed,
            self.checkpoints_requested,
            self.buffers_checkpoint,
            self.buffers_clean,
            self.buffers_backend,
            self.autovacuum_runs
        )?;
        for (role, s) in &self.cpu {
            write!(f, " {role} {s:.2}")?;
        }
        Ok(())
    }
}

/// A warning when this machine is a VM that hands freed memory back to its host (Linux
/// free page reporting, `virtio_balloon`): a page the guest reuses after the host took
/// it back costs a host fault at its first write, charged to whatever process writes it
/// (for a loading Postgres, the kernel's copy of each new table block into the page
/// cache). On the 2-core development VM that made the same load cost Postgres 7.9 or
/// 14 CPU s depending on where its pages came from (docs/performance.md). `None` when
/// reporting is off (its order above the largest block, 10) or absent.
pub fn memory_warning() -> Option<String> {
    let dir = std::path::Path::new("/sys/module/page_reporting/parameters");
    let order: u32 = std::fs::read_to_string(dir.join("page_reporting_order"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (order < 10).then(|| {
        format!(
            "note: this VM reports freed memory to its host (page_reporting_order {order}): \
             Postgres's CPU figures can swing by half for the same rows; for steady figures, as root: \
             echo 10 > {}/page_reporting_order, then touch the free memory once (docs/performance.md)",
            dir.display()
        )
    })
}

async fn bgwriter(client: &tokio_postgres::Client) -> [i64; 5] {
    let row = client.query_one(BGWRITER, &[]).await.unwrap();
    std::array::from_fn(|i| row.get(i))
}

async fn database(client: &tokio_postgres::Client) -> [i64; 3] {
    let row = client.query_one(DATABASE, &[]).await.unwrap();
    std::array::from_fn(|i| row.get(i))
}

async fn autovacuum(client: &tokio_postgres::Client) -> i64 {
    client.query_one(AUTOVACUUM, &[]).await.unwrap().get(0)
}

/// Every `postgres` process: pid -> (role, own ticks), and the postmaster's ended
/// children's ticks.
fn processes() -> (BTreeMap<u32, (String, u64)>, u64) {
    let mut out = BTreeMap::new();
    let mut ended = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(t) = proc_times(pid).filter(|t| t.comm == "postgres") else {
            continue;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let role = role_of(&cmdline);
        if role == "postmaster" {
            ended += t.children;
        }
        out.insert(pid, (role, t.own));
    }
    (out, ended)
}

/// One process's CPU ticks (USER_HZ, 100 on Linux whatever the kernel's HZ), from
/// `/proc/<pid>/stat`.
pub struct ProcTimes {
    pub comm: String,
    /// user + system, all its threads
    pub own: u64,
    /// user + system of its ended (reaped) children
    pub children: u64,
}

/// `/proc/<pid>/stat` of a live process; `None` once it has gone.
pub fn proc_times(pid: u32) -> Option<ProcTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    // after ") ": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some(ProcTimes {
        comm: stat[open + 1..close].to_string(),
        own: n(11) + n(12),
        children: n(13) + n(14),
    })
}

/// A process's role from its command line: `postgres: 15/main: checkpointer ` ->
/// `checkpointer`; a backend (`postgres: 15/main: user db host(port) idle`) -> `backend`;
/// the postmaster (`/usr/lib/postgresql/15/bin/postgres -D ...`) -> `postmaster`.
fn role_of(cmdline: &str) -> String {
    let Some(rest) = cmdline.strip_prefix("postgres: ") else {
        return "postmaster".into();
    };
    // "15/main: checkpointer" (cluster name set) or "checkpointer".
    let rest = match rest.split_once(": ") {
        Some((cluster, r)) if !cluster.contains(' ') => r,
        _ => rest,
    };
    let rest = rest.trim_end_matches('\0').trim();
    const ROLES: [&str; 7] = [
        "checkpointer",
        "background writer",
        "walwriter",
        "autovacuum launcher",
        "autovacuum worker",
        "logical replication launcher",
        "stats collector",
    ];
    ROLES
        .iter()
        .find(|r| rest.starts_with(**r))
        .map_or_else(|| "backend".into(), |r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::role_of;

    #[test]
    fn roles_come_from_the_command_line() {
        assert_eq!(role_of("postgres: 15/main: checkpointer "), "checkpointer");
        assert_eq!(
            role_of("postgres: 15/main: background writer "),
            "background writer"
        );
        assert_eq!(role_of("postgres: walwriter "), "walwriter");
        assert_eq!(
            role_of("postgres: 15/main: siphon siphon_test_1 127.0.0.1(5000) COPY"),
            "backend"
        );
        assert_eq!(
            role_of("postgres: 15/main: autovacuum worker siphon_test_1"),
            "autovacuum worker"
        );
        assert_eq!(
            role_of("/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main\0"),
            "postmaster"
        );
    }
}
