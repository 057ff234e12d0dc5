//! `parley-api`: serve (default), `worker`, `migrate`, or `create-admin --email E --password P`.

use anyhow::{Context, bail};
use parley_api::{Application, startup};
use parley_shared::Config;
use parley_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => Application::build(config).await?.run_until_stopped().await,
        Some("migrate") => {
            startup::build_state(config).await?;
            println!("migrations applied");
            Ok(())
        }
        Some("create-admin") => {
            let email = flag(&args, "--email").context("create-admin needs --email")?;
            let password = flag(&args, "--password").context("create-admin needs --password")?;
            let state = startup::build_state(config).await?;
            startup::create_admin(&state, &email, &password).await
        }
        Some("worker") => {
            // The same workers as `parley-worker`, from this binary.
            parley_shared::metrics::install();
            let ctx = parley_worker::WorkerContext::connect(config).await?;
            parley_worker::ops::spawn(&ctx).await?;
            parley_worker::run(ctx, startup::shutdown_signal()).await
        }
        Some(other) => bail!("unknown command {other:?}; expected serve, worker, migrate or create-admin"),
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}
