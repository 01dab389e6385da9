//! Invalidation messages over Redis pub/sub, for the near cache.
//!
//! The subscriber runs on a dedicated connection of its own (`Client::get_async_pubsub`), not
//! as RESP3 push messages on the shared multiplexed connection: the near cache must know the
//! exact moment the subscription is lost, and a connection that reconnects and resubscribes
//! by itself hides the gap in which messages were missed. Here the message stream ending is
//! that moment; the listener is told, empties its tier, and is told again once a new
//! subscription is confirmed. Publishing goes over the backend's ordinary connection, under
//! its operation timeout.
//!
//! On a Cluster the subscriber connects to one seed node at a time. Classic pub/sub (not the
//! sharded kind) is forwarded by a Cluster to every node, so one node hears the messages
//! published at any other; when that node fails, its connection ends, the tier is emptied, and
//! the next seed is tried. Sharded pub/sub would keep messages on the shard that owns the
//! channel's slot, which a single invalidation channel would turn into one hot shard anyway.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;

use super::RedisBackend;
use crate::error::BackendError;

/// What the subscriber reports to.
pub(crate) trait Listener: Send + Sync + 'static {
    /// The subscription is confirmed: messages from now on arrive.
    fn subscribed(&self);
    /// The subscription is gone: messages from now on may be missed.
    fn lost(&self);
    /// One message's payload.
    fn message(&self, payload: &[u8]);
}

/// First pause between failed attempts to subscribe; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl RedisBackend {
    /// The channel of this backend's invalidations: pub/sub ignores database numbers, so the
    /// database is part of the name, with the prefix that makes the key space.
    pub(crate) fn invalidation_channel(&self) -> String {
        format!(
            "lexigram-cache:invalidate:{}:{}",
            self.inner.db, self.inner.prefix
        )
    }

    /// Publishes `payload` on `channel`.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner
            .query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
            .map(drop)
    }

    /// Subscribes to `channel` in a task of its own, resubscribing after every loss, until
    /// `stop` resolves (its sender is dropped) or `listener` is gone. `Err` says why it cannot.
    pub(crate) fn listen(
        &self,
        channel: String,
        listener: Weak<dyn Listener>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), &'static str> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err("the cache was built outside a tokio runtime, where no subscriber can run");
        };
        let clients = self.inner.listeners.clone();
        if clients.is_empty() {
            return Err("the backend names no server to subscribe at");
        }
        let connect_timeout = self.inner.connect_timeout;
        let shown = self.inner.shown.clone();
        runtime.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            // A Cluster node that cannot be reached (or that dropped the subscription) makes
            // way for the next seed.
            let mut next = 0usize;
            loop {
                let client = &clients[next % clients.len()];
                next = next.wrapping_add(1);
                let attempt = tokio::time::timeout(connect_timeout, async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                });
                let attempt = tokio::select! {
                    a = attempt => a,
                    _ = &mut stop => return,
                };
                match attempt {
                    Ok(Ok(mut pubsub)) => {
                        backoff = FIRST_BACKOFF;
                        let Some(l) = listener.upgrade() else { return };
                        l.subscribed();
                        drop(l);
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                m = messages.next() => match m {
                                    Some(m) => {
                                        let Some(l) = listener.upgrade() else { return };
                                        l.message(m.get_payload_bytes());
                                    }
                                    None => break,
                                },
                                _ = &mut stop => return,
                            }
                        }
                        let Some(l) = listener.upgrade() else { return };
                        l.lost();
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(servers = %shown, error = %e, "near cache: cannot subscribe to invalidations yet");
                    }
                    Err(_) => {
                        tracing::debug!(servers = %shown, "near cache: subscribing to invalidations timed out");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        Ok(())
    }
}
