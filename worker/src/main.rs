//! `parley-worker`: runs the job handlers against the configured queue until SIGTERM.

use parley_shared::Config;
use parley_shared::telemetry;
use parley_worker::WorkerContext;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    parley_shared::metrics::install();
    let ctx = WorkerContext::connect(config).await?;
    parley_worker::ops::spawn(&ctx).await?;
    tracing::info!("worker started");
    parley_worker::run(ctx, shutdown_signal()).await?;
    tracing::info!("worker stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("stopping: no new jobs; running jobs get the grace period");
}
