//! Configuration: every knob of the server, its default, and how it is read
//! from the environment.
//!
//! `Config::default()` holds the defaults (each a named constant below),
//! `Config::from_env()` overrides them from environment variables and
//! `Config::validate()` refuses values the server cannot run with. The binary
//! calls `from_env` once at start and logs the effective config; tests build
//! `Config` values directly and never touch the environment.
//!
//! Worker types share one naming pattern: `<TYPE>_WORKERS`,
//! `<TYPE>_QUEUE_CAPACITY`, `<TYPE>_TIMEOUT_MS`, `<TYPE>_QUEUE_TIMEOUT_MS`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

/// Address the HTTP server listens on.
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8000";
/// Message workers: one thread is plenty for a demonstration job type.
pub const DEFAULT_MESSAGE_WORKERS: usize = 1;
/// Jobs that may wait for a message worker before new ones get 503.
pub const DEFAULT_MESSAGE_QUEUE_CAPACITY: usize = 10;
/// Total time a message job may take, queue wait included.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 5_000;
/// Requests per minute per client IP on job routes; 0 turns limiting off.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
/// Requests a client may send at once before the per-minute rate applies.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 50;
/// Time running jobs get to finish after SIGTERM / Ctrl-C.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Largest JSON body accepted on job routes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// One worker type's pool and queue settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    /// Dedicated OS threads serving this queue.
    pub workers: usize,
    /// Jobs that may wait in the queue; the next one is refused with 503.
    pub queue_capacity: usize,
    /// Longest a job may wait in the queue before it is answered 504 unstarted.
    pub queue_timeout: Duration,
    /// Longest a job may take from admission to answer (queue wait included).
    pub timeout: Duration,
}

impl PoolConfig {
    /// A pool whose queue budget equals its total budget.
    pub fn new(workers: usize, queue_capacity: usize, timeout: Duration) -> Self {
        PoolConfig {
            workers,
            queue_capacity,
            queue_timeout: timeout,
            timeout,
        }
    }
}

/// Per-client-IP rate limit on job routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    /// Sustained requests per minute; 0 turns limiting off.
    pub per_minute: u32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

impl RateLimitConfig {
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }
}

/// Everything the server needs to start.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub message: PoolConfig,
    pub rate_limit: RateLimitConfig,
    pub shutdown_grace: Duration,
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_addr: DEFAULT_BIND_ADDR
                .parse()
                .expect("DEFAULT_BIND_ADDR is a valid socket address"),
            message: PoolConfig::new(
                DEFAULT_MESSAGE_WORKERS,
                DEFAULT_MESSAGE_QUEUE_CAPACITY,
                Duration::from_millis(DEFAULT_MESSAGE_TIMEOUT_MS),
            ),
            rate_limit: RateLimitConfig {
                per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
                burst: DEFAULT_RATE_LIMIT_BURST,
            },
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A configuration value the server refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(var: &str, value: impl ToString, reason: impl ToString) -> Self {
        ConfigError {
            var: var.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl Config {
    /// Defaults overridden by the process environment, then validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by `lookup` (the environment in production, a map
    /// in tests), then validated.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let mut config = Config::default();
        env.parse("BIND_ADDR", &mut config.bind_addr)?;
        env.pool("MESSAGE", &mut config.message)?;
        env.parse("RATE_LIMIT_PER_MINUTE", &mut config.rate_limit.per_minute)?;
        env.parse("RATE_LIMIT_BURST", &mut config.rate_limit.burst)?;
        env.millis("SHUTDOWN_GRACE_MS", &mut config.shutdown_grace)?;
        env.parse("MAX_BODY_BYTES", &mut config.max_body_bytes)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the server cannot run with, naming the variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_pool("MESSAGE", &self.message)?;
        if self.rate_limit.enabled() && self.rate_limit.burst == 0 {
            return Err(ConfigError::new(
                "RATE_LIMIT_BURST",
                0,
                "must be at least 1 while RATE_LIMIT_PER_MINUTE > 0",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", 0, "must be at least 1"));
        }
        Ok(())
    }
}

fn validate_pool(prefix: &str, pool: &PoolConfig) -> Result<(), ConfigError> {
    if pool.workers == 0 {
        return Err(ConfigError::new(
            &format!("{prefix}_WORKERS"),
            0,
            "must be at least 1",
        ));
    }
    if pool.queue_capacity == 0 {
        return Err(ConfigError::new(
            &format!("{prefix}_QUEUE_CAPACITY"),
            0,
            "must be at least 1",
        ));
    }
    if pool.timeout.is_zero() {
        return Err(ConfigError::new(
            &format!("{prefix}_TIMEOUT_MS"),
            0,
            "must be at least 1",
        ));
    }
    if pool.queue_timeout.is_zero() || pool.queue_timeout > pool.timeout {
        return Err(ConfigError::new(
            &format!("{prefix}_QUEUE_TIMEOUT_MS"),
            pool.queue_timeout.as_millis(),
            format!(
                "must be between 1 and {prefix}_TIMEOUT_MS ({})",
                pool.timeout.as_millis()
            ),
        ));
    }
    Ok(())
}

/// Typed reads of optional variables; an unset variable keeps the default.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn parse<T>(&self, var: &str, slot: &mut T) -> Result<(), ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        if let Some(raw) = (self.0)(var) {
            *slot = raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::new(var, &raw, e))?;
        }
        Ok(())
    }

    fn millis(&self, var: &str, slot: &mut Duration) -> Result<(), ConfigError> {
        let mut ms = slot.as_millis() as u64;
        self.parse(var, &mut ms)?;
        *slot = Duration::from_millis(ms);
        Ok(())
    }

    /// `<PREFIX>_WORKERS`, `_QUEUE_CAPACITY`, `_TIMEOUT_MS`, `_QUEUE_TIMEOUT_MS`.
    /// The queue budget follows the total budget unless set on its own.
    pub fn pool(&self, prefix: &str, pool: &mut PoolConfig) -> Result<(), ConfigError> {
        self.parse(&format!("{prefix}_WORKERS"), &mut pool.workers)?;
        self.parse(
            &format!("{prefix}_QUEUE_CAPACITY"),
            &mut pool.queue_capacity,
        )?;
        let queue_follows_total = pool.queue_timeout == pool.timeout;
        self.millis(&format!("{prefix}_TIMEOUT_MS"), &mut pool.timeout)?;
        if queue_follows_total {
            pool.queue_timeout = pool.timeout;
        }
        self.millis(
            &format!("{prefix}_QUEUE_TIMEOUT_MS"),
            &mut pool.queue_timeout,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let config = from(&[]).expect("defaults are valid");
        assert_eq!(config.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert_eq!(config.message.workers, DEFAULT_MESSAGE_WORKERS);
        assert_eq!(config.message.queue_timeout, config.message.timeout);
    }

    #[test]
    fn a_malformed_number_is_refused_naming_the_variable() {
        let err = from(&[("MESSAGE_WORKERS", "two")]).unwrap_err();
        assert_eq!(err.var, "MESSAGE_WORKERS", "{err}");
    }

    #[test]
    fn zero_workers_or_zero_capacity_is_refused() {
        assert_eq!(
            from(&[("MESSAGE_WORKERS", "0")]).unwrap_err().var,
            "MESSAGE_WORKERS"
        );
        assert_eq!(
            from(&[("MESSAGE_QUEUE_CAPACITY", "0")]).unwrap_err().var,
            "MESSAGE_QUEUE_CAPACITY"
        );
    }

    #[test]
    fn the_queue_budget_follows_the_total_unless_set_and_never_exceeds_it() {
        let c = from(&[("MESSAGE_TIMEOUT_MS", "9000")]).unwrap();
        assert_eq!(c.message.queue_timeout, Duration::from_millis(9000));
        let c = from(&[("MESSAGE_QUEUE_TIMEOUT_MS", "1000")]).unwrap();
        assert_eq!(c.message.queue_timeout, Duration::from_millis(1000));
        let err = from(&[("MESSAGE_QUEUE_TIMEOUT_MS", "60000")]).unwrap_err();
        assert_eq!(err.var, "MESSAGE_QUEUE_TIMEOUT_MS");
    }

    #[test]
    fn rate_limit_zero_turns_limiting_off() {
        let c = from(&[("RATE_LIMIT_PER_MINUTE", "0")]).unwrap();
        assert!(!c.rate_limit.enabled());
    }
}
