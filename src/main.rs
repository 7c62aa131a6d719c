//! The binary: telemetry, configuration from the environment, the server.

use std::process::ExitCode;

use jobserver::config::Config;
use jobserver::startup::{shutdown_signal, Application};

#[tokio::main]
async fn main() -> ExitCode {
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
            return ExitCode::FAILURE;
        }
    };
    match app.local_addr() {
        Ok(addr) => tracing::info!("listening on http://{addr}"),
        Err(e) => tracing::warn!("listening, address unknown: {e}"),
    }
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
