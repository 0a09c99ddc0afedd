//! `make serve`'s settings: every function's, plus the events queue and the address.

use std::net::SocketAddr;

use siphon::config::{ConfigError, Env};

/// Everything siphon-local reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub api: siphon_api::Config,
    pub dump: siphon_dump::Config,
    pub loader: siphon_loader::Config,
    /// `SIPHON_EVENTS_QUEUE_URL`: S3 notifications for siphon-s3-ingest (optional).
    pub events_queue_url: Option<String>,
    /// siphon-s3-ingest's own settings.
    pub ingest: siphon_s3_ingest::Config,
    /// `SIPHON_LOCAL_ADDR` (default 127.0.0.1:8080).
    pub addr: SocketAddr,
    /// `SIPHON_LOCAL_LOADERS` (default 4, 0 to 64): loader workers polling the load queue at once,
    /// each taking one message at a time as a Lambda instance with batch size 1 does.
    pub loaders: usize,
    /// The sweep's settings (`SIPHON_SWEEP_*`; passes here run every `interval`).
    pub sweep: siphon_sweep::Config,
    /// The export worker's, when exports are configured (`SIPHON_EXPORT_BUCKET`).
    pub export: Option<siphon_export::Config>,
    /// `SIPHON_LOCAL_EXPORTERS` (default 2): export workers polling the export queue.
    pub exporters: usize,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // 0: no loader (the API and export workers only; what bench-inventory measures).
        let loaders = env.number("SIPHON_LOCAL_LOADERS", 4, 0, 64)? as usize;
        let mut api = siphon_api::Config::from_env(env)?;
        if env.get("SIPHON_DB_POOL_SIZE").is_none() {
            // One process stands in for many Lambda instances: each loader and exporter
            // holds a connection for its batches and briefly one for its heartbeat.
            api.db = api.db.with_pool_size(8 + 2 * loaders);
        }
        Ok(Config {
            api,
            dump: siphon_dump::Config::from_env(env)?,
            loader: siphon_loader::Config::from_env(env)?,
            loaders,
            sweep: siphon_sweep::Config::from_env(env)?,
            export: match env.get("SIPHON_EXPORT_BUCKET") {
                Some(_) => Some(siphon_export::Config::from_env(env)?),
                None => None,
            },
            exporters: env.number("SIPHON_LOCAL_EXPORTERS", 2, 1, 64)? as usize,
            events_queue_url: env.get("SIPHON_EVENTS_QUEUE_URL").map(str::to_string),
            ingest: siphon_s3_ingest::Config::from_env(env)?,
            addr: env
                .parse("SIPHON_LOCAL_ADDR", "an address such as 127.0.0.1:8080")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_defaults_to_loopback() {
        let env = Env::from_pairs(&[("SIPHON_LOAD_QUEUE_URL", "q")]);
        assert_eq!(
            Config::from_env(&env).unwrap().addr.to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(Config::from_env(&env).unwrap().loaders, 4);
        let e = Config::from_env(&env.clone().with("SIPHON_LOCAL_ADDR", "localhost")).unwrap_err();
        assert_eq!(e.variable, "SIPHON_LOCAL_ADDR");
        let none = env.clone().with("SIPHON_LOCAL_LOADERS", "0");
        assert_eq!(Config::from_env(&none).unwrap().loaders, 0);
        let e = Config::from_env(&env.with("SIPHON_LOCAL_LOADERS", "65")).unwrap_err();
        assert_eq!(e.variable, "SIPHON_LOCAL_LOADERS");
    }
}
