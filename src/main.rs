//! The binary: telemetry, configuration from the environment, the server.

use std::process::ExitCode;

use jobserver::config::Config;
use jobserver::startup::{shutdown_signal, Application};

fn main() -> ExitCode {
    // Renderer mode: a child process of the server, speaking frames on
    // stdin/stdout (so nothing else may print to stdout).
    if std::env::args().nth(1).as_deref() == Some("--renderer") {
        std::process::exit(jobserver::render::child::main());
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> ExitCode {
    jobserver::telemetry::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(config = %serde_json::to_string(&config).unwrap_or_default(), "effective configuration");
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();
    match app.local_addr() {
        Ok(addr) => tracing::info!("listening on http://{addr}"),
        Err(e) => tracing::warn!("listening, address unknown: {e}"),
    }
    match app.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
