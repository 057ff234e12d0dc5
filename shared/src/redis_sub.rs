//! A Redis pub/sub subscription that outlives a dropped connection: when the server goes
//! away it is made again, with backoff, for as long as the process runs. Messages published
//! while it was down are missed; its users fall back to polling for those.

use anyhow::Context;
use futures::StreamExt;
use std::time::Duration;

/// Subscribes to `channel` now (so nothing published after this returns is missed), then
/// hands every message's payload to `deliver`, re-subscribing whenever the connection drops.
pub async fn subscribe(
    client: redis::Client,
    channel: String,
    what: &'static str,
    deliver: impl Fn(String) + Send + 'static,
) -> anyhow::Result<()> {
    let first = open(&client, &channel).await.with_context(|| format!("subscribing to {what}"))?;
    tokio::spawn(async move {
        let mut pubsub = first;
        loop {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                if let Ok(payload) = msg.get_payload::<String>() {
                    deliver(payload);
                }
            }
            drop(messages);
            tracing::warn!(what, "Redis subscription lost; polling covers the gap until it is back");
            let mut wait = Duration::from_millis(250);
            pubsub = loop {
                tokio::time::sleep(wait).await;
                match open(&client, &channel).await {
                    Ok(pubsub) => {
                        tracing::info!(what, "Redis subscription restored");
                        break pubsub;
                    }
                    Err(e) => {
                        tracing::debug!(what, error = %e, "re-subscribing failed");
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            };
        }
    });
    Ok(())
}

async fn open(client: &redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
