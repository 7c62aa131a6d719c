//! Configuration parsing: defaults, each variable, and the refusals.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

/// Asserts that `var=value` alone is refused, naming `var`.
fn refuses(var: &str, value: &str) {
    assert_eq!(from(&[(var, value)]).unwrap_err().var, var);
}

#[test]
fn an_empty_environment_gives_the_documented_defaults() {
    let config = from(&[]).expect("defaults are valid");
    assert_eq!(config.bind_addr.to_string(), DEFAULT_BIND_ADDR);
    assert_eq!(config.message.workers, DEFAULT_MESSAGE_WORKERS);
    assert_eq!(config.message.queue_timeout, config.message.timeout);
}

#[test]
fn trusted_proxies_take_addresses_and_ranges_and_refuse_anything_else() {
    let c = from(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1")]).unwrap();
    let conn = &c.connections;
    assert!(conn.trusts("10.2.3.4".parse().unwrap()));
    assert!(conn.trusts("127.0.0.1".parse().unwrap()));
    assert!(conn.trusts("::1".parse().unwrap()));
    assert!(!conn.trusts("127.0.0.2".parse().unwrap()));
    let err = from(&[("TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")]).unwrap_err();
    assert_eq!(err.var, "TRUSTED_PROXIES");
    assert!(err.reason.contains("proxy.local"), "{err}");
    refuses("MAX_CONNECTIONS", "0");
}

#[test]
fn a_malformed_number_is_refused_naming_the_variable() {
    let err = from(&[("MESSAGE_WORKERS", "two")]).unwrap_err();
    assert_eq!(err.var, "MESSAGE_WORKERS", "{err}");
}

#[test]
fn zero_workers_or_zero_capacity_is_refused() {
    refuses("MESSAGE_WORKERS", "0");
    refuses("MESSAGE_QUEUE_CAPACITY", "0");
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
fn pdf_workers_default_to_the_cores_and_the_queue_follows_the_workers() {
    let c = from(&[]).unwrap();
    assert_eq!(c.pdf.pool.workers, available_cores());
    let c = from(&[("PDF_WORKERS", "3")]).unwrap();
    assert_eq!(c.pdf.pool.queue_capacity, 3 * DEFAULT_PDF_QUEUE_PER_WORKER);
    let c = from(&[("PDF_WORKERS", "3"), ("PDF_QUEUE_CAPACITY", "1")]).unwrap();
    assert_eq!(c.pdf.pool.queue_capacity, 1);
}

#[test]
fn a_default_dpi_above_the_maximum_is_refused() {
    let err = from(&[("PDF_MAX_DPI", "100")]).unwrap_err();
    assert_eq!(err.var, "PDF_DEFAULT_DPI");
}

#[test]
fn async_budgets_and_retention_come_from_their_variables_and_zero_is_refused() {
    let c = from(&[]).unwrap();
    assert_eq!(
        c.pdf.pool.async_timeout,
        Duration::from_millis(DEFAULT_PDF_ASYNC_TIMEOUT_MS)
    );
    assert_eq!(
        c.jobs.result_ttl,
        Duration::from_secs(DEFAULT_RESULT_TTL_SECS)
    );
    let c = from(&[
        ("MESSAGE_ASYNC_TIMEOUT_MS", "1234"),
        ("RESULT_TTL_SECS", "60"),
        ("MAX_TRACKED_JOBS", "7"),
    ])
    .unwrap();
    assert_eq!(c.message.async_timeout, Duration::from_millis(1234));
    assert_eq!(c.jobs.result_ttl, Duration::from_secs(60));
    assert_eq!(c.jobs.max_tracked, 7);
    for var in [
        "PDF_ASYNC_TIMEOUT_MS",
        "RESULT_TTL_SECS",
        "MAX_TRACKED_JOBS",
    ] {
        refuses(var, "0");
    }
}

#[test]
fn the_output_folder_is_output_dir_and_cargos_out_dir_is_ignored() {
    assert_eq!(from(&[]).unwrap().output_dir, PathBuf::from("out"));
    let c = from(&[("OUTPUT_DIR", "/srv/renders"), ("OUT_DIR", "/old")]).unwrap();
    assert_eq!(c.output_dir, PathBuf::from("/srv/renders"));
    let c = from(&[("OUT_DIR", "/old")]).unwrap();
    assert_eq!(
        c.output_dir,
        PathBuf::from("/old"),
        "the old name still works"
    );
    let cargo = "/src/app/target/release/build/jobserver-0123456789abcdef/out";
    let c = from(&[("OUT_DIR", cargo)]).unwrap();
    assert_eq!(
        c.output_dir,
        PathBuf::from("out"),
        "cargo's OUT_DIR is not ours"
    );
}

#[test]
fn every_variable_is_read_from_the_environment_and_documented_in_the_readme() {
    let readme = include_str!("../../README.md");
    for var in ALL_VARS {
        assert!(
            readme.contains(&format!("`{var}`")),
            "{var} is not documented in README.md"
        );
    }
    // Each variable the config reads is in the list: a lookup that
    // records the names it was asked for.
    let asked = std::cell::RefCell::new(Vec::new());
    Config::from_lookup(|name| {
        asked.borrow_mut().push(name.to_string());
        None
    })
    .unwrap();
    for name in asked.into_inner() {
        assert!(
            ALL_VARS.contains(&name.as_str()),
            "{name} is missing from ALL_VARS"
        );
    }
}

#[test]
fn the_disk_floor_defaults_to_512_mb_and_zero_turns_it_off() {
    assert_eq!(
        from(&[]).unwrap().min_free_disk_mb,
        DEFAULT_MIN_FREE_DISK_MB
    );
    assert_eq!(
        from(&[("MIN_FREE_DISK_MB", "0")]).unwrap().min_free_disk_mb,
        0
    );
    let err = from(&[("MIN_FREE_DISK_MB", "-1")]).unwrap_err();
    assert_eq!(err.var, "MIN_FREE_DISK_MB");
}

#[test]
fn the_memory_budget_is_split_over_the_renderers() {
    let c = from(&[
        ("PDF_WORKERS", "4"),
        ("PDF_RENDERER_MEMORY_BUDGET_MB", "4096"),
    ])
    .unwrap();
    assert_eq!(c.pdf.renderer_cap_mb(), 1024);
    let c = from(&[("PDF_WORKERS", "2"), ("PDF_RENDERER_MEMORY_BUDGET_MB", "0")]).unwrap();
    assert_eq!(
        c.pdf.renderer_cap_mb(),
        DEFAULT_PDF_RENDERER_MEMORY_LIMIT_MB
    );
    let c = from(&[
        ("PDF_WORKERS", "1"),
        ("PDF_RENDERER_MEMORY_LIMIT_MB", "512"),
    ])
    .unwrap();
    assert!(c.pdf.renderer_memory_budget_mb > 0, "derived when unset");
    assert!(c.pdf.renderer_cap_mb() <= 512);
}

#[test]
fn a_budget_too_small_for_each_renderer_is_refused_naming_both_variables() {
    let err = from(&[
        ("PDF_WORKERS", "8"),
        ("PDF_RENDERER_MEMORY_BUDGET_MB", "1024"),
    ])
    .unwrap_err();
    assert_eq!(err.var, "PDF_RENDERER_MEMORY_BUDGET_MB");
    let text = err.to_string();
    assert!(
        text.contains("PDF_WORKERS") && text.contains("128 MB"),
        "{text}"
    );
    assert!(text.contains("at least 2048"), "{text}");
    // A per-renderer limit below the floor is the operator's choice;
    // the budget only has to meet it.
    from(&[
        ("PDF_WORKERS", "8"),
        ("PDF_RENDERER_MEMORY_LIMIT_MB", "128"),
        ("PDF_RENDERER_MEMORY_BUDGET_MB", "1024"),
    ])
    .unwrap();
}

#[test]
fn rate_limit_zero_turns_limiting_off() {
    let c = from(&[("RATE_LIMIT_PER_MINUTE", "0")]).unwrap();
    assert!(!c.rate_limit.enabled());
}

#[test]
fn uploads_spool_past_1_mib_by_default_and_the_threshold_comes_from_its_variable() {
    let c = from(&[]).unwrap();
    assert_eq!(c.pdf.upload_spool_threshold_bytes, 1024 * 1024);
    assert_eq!(
        c.pdf.upload_spool_threshold_bytes,
        DEFAULT_UPLOAD_SPOOL_THRESHOLD_BYTES
    );
    let c = from(&[("UPLOAD_SPOOL_THRESHOLD_BYTES", "4096")]).unwrap();
    assert_eq!(c.pdf.upload_spool_threshold_bytes, 4096);
    let c = from(&[("UPLOAD_SPOOL_THRESHOLD_BYTES", "0")]).unwrap();
    assert_eq!(
        c.pdf.upload_spool_threshold_bytes, 0,
        "0 spools every upload"
    );
    refuses("UPLOAD_SPOOL_THRESHOLD_BYTES", "1MB");
}
