//! Telling other instances of a write: every write that changed something is published on the
//! session's channel `<prefix>{S}:events`, and each instance listens.
//!
//! - One node, or a cluster without sharded pub/sub (Redis 6): `PUBLISH`, and one `PSUBSCRIBE`
//!   on every session's channel, on a RESP3 connection of its own ([`Subscriber`]). A cluster
//!   forwards a `PUBLISH` to every node, so one subscription on any node hears all of them.
//! - A cluster with sharded pub/sub (Redis 7): `SPUBLISH`, which stays on the shard that serves
//!   the session's slot, and an `SSUBSCRIBE` per session this instance holds ([`Sharded`]), made
//!   before the session is read, through the crate's cluster connection. Sharded channels have no
//!   patterns, and no node hears every channel. When a shard's subscription is lost (a failover,
//!   a lost connection) or the server drops it (its slot moved to another node), each of its
//!   sessions is subscribed again where its slot now is, then re-read: messages sent meanwhile are
//!   lost.

use std::collections::HashSet;
use std::sync::Mutex;

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use ::redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisError, RedisResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::keys::key_name;
use super::{RedisEvent, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::lock;
use crate::paths::is_file_stem;

/// Events buffered for a slow subscriber before the pub/sub connection waits for it.
pub(super) const EVENT_BUFFER: usize = 1024;
/// How often an idle subscription checks that its connections are alive.
const SUBSCRIPTION_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Delays between attempts to restore a lost subscription.
const RESUBSCRIBE_MIN_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// What a message on a session's channel says.
#[derive(Serialize, Deserialize)]
pub(super) struct EventPayload {
    pub(super) instance: String,
    pub(super) version: u64,
}

/// Reads messages on the channels `<prefix>{S}:events`.
#[derive(Clone)]
pub(super) struct Decoder {
    pub(super) prefix: String,
    pub(super) instance_id: String,
}

impl Decoder {
    /// The stem of a session's channel name.
    fn stem(&self, channel: &str) -> Option<String> {
        let stem = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix(":events")?
            .strip_suffix('}')?;
        is_file_stem(stem).then(|| stem.to_string())
    }

    /// The event a pushed message stands for: None for confirmations, foreign channels, bad
    /// payloads and this instance's own messages.
    fn event(&self, push: PushInfo) -> Option<RedisEvent> {
        let message = ::redis::Msg::from_push_info(push)?;
        let stem = self.stem(message.get_channel_name())?;
        let payload: EventPayload = serde_json::from_slice(message.get_payload_bytes()).ok()?;
        if payload.instance == self.instance_id {
            return None;
        }
        Some(RedisEvent::Changed {
            stem,
            instance_id: payload.instance,
            version: payload.version,
        })
    }

    /// The channel a subscription push (a confirmation, or the server dropping it) names.
    fn channel_stem(&self, push: &PushInfo) -> Option<String> {
        match push.data.first()? {
            ::redis::Value::BulkString(name) => self.stem(std::str::from_utf8(name).ok()?),
            _ => None,
        }
    }
}

/// `PSUBSCRIBE` on one node: a RESP3 connection of its own with the pushed messages sent to a
/// channel. `clients` are the nodes to try, in order (one, or every node of a cluster).
pub(super) struct Subscriber {
    pub(super) clients: Vec<Client>,
    pub(super) pattern: String,
    pub(super) decoder: Decoder,
}

/// A live subscription: the connection and its pushed messages.
pub(super) struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscriber {
    /// Subscribes on the first node that answers.
    pub(super) async fn open(&self) -> Result<Subscription, RedisError> {
        let mut last_error = None;
        for client in &self.clients {
            match self.open_on(client).await {
                Ok(live) => return Ok(live),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((::redis::ErrorKind::Io, "no Redis node to subscribe on"))
        }))
    }

    async fn open_on(&self, client: &Client) -> Result<Subscription, RedisError> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(sender);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.psubscribe(&self.pattern).await?;
        Ok(Subscription { conn, pushes })
    }

    /// Forwards messages until the receiver goes; restores the subscription whenever it is lost.
    pub(super) async fn run(self, mut live: Subscription, events: mpsc::Sender<RedisEvent>) {
        loop {
            if !self.forward(&mut live, &events).await {
                return;
            }
            let Some(restored) = self.reopen(&events).await else {
                return;
            };
            live = restored;
            if events.send(RedisEvent::Resync).await.is_err() {
                return;
            }
        }
    }

    /// Forwards messages while the connection lives. False when the receiver is gone.
    async fn forward(&self, live: &mut Subscription, events: &mpsc::Sender<RedisEvent>) -> bool {
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING_INTERVAL);
        ping.reset();
        loop {
            tokio::select! {
                push = live.pushes.recv() => {
                    let Some(push) = push else { return true };
                    if push.kind == PushKind::Disconnection {
                        return true;
                    }
                    if let Some(event) = self.decoder.event(push) {
                        if events.send(event).await.is_err() {
                            return false;
                        }
                    }
                }
                _ = ping.tick() => {
                    // A connection that died without closing (a lost network) shows here.
                    if ::redis::cmd("PING").query_async::<()>(&mut live.conn).await.is_err() {
                        return true;
                    }
                }
                _ = events.closed() => return false,
            }
        }
    }

    /// Reconnects and subscribes again, backing off. None when the receiver is gone.
    async fn reopen(&self, events: &mpsc::Sender<RedisEvent>) -> Option<Subscription> {
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = events.closed() => return None,
            }
            if let Ok(live) = self.open().await {
                return Some(live);
            }
            delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
        }
    }
}

/// Sharded pub/sub on a cluster: one `SSUBSCRIBE` per session followed, on the crate's cluster
/// connection (RESP3), which routes each to the shard serving the channel's slot.
pub(super) struct Sharded {
    conn: ClusterConnection,
    /// The pushes, until [`Sharded::run`] takes them.
    pushes: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
    /// The stems whose channels this instance listens to.
    followed: Mutex<HashSet<String>>,
    decoder: Decoder,
}

impl Sharded {
    /// Connects the subscriber's own cluster connection.
    pub(super) async fn connect(
        builder: ::redis::cluster::ClusterClientBuilder,
        decoder: Decoder,
    ) -> RedisResult<Sharded> {
        let (sender, pushes) = mpsc::unbounded_channel();
        let conn = builder
            .use_protocol(::redis::ProtocolVersion::RESP3)
            .push_sender(sender)
            .build()?
            .get_async_connection()
            .await?;
        Ok(Sharded {
            conn,
            pushes: Mutex::new(Some(pushes)),
            followed: Mutex::new(HashSet::new()),
            decoder,
        })
    }

    fn channel(&self, stem: &str) -> String {
        key_name(&self.decoder.prefix, stem, "events")
    }

    /// Listens to `stem`'s channel, if it does not yet. Returns once the shard confirmed it.
    pub(super) async fn follow(&self, stem: &str) -> RedisResult<()> {
        if !lock(&self.followed).insert(stem.to_string()) {
            return Ok(());
        }
        let subscribed = self.conn.clone().ssubscribe(self.channel(stem)).await;
        if subscribed.is_err() {
            lock(&self.followed).remove(stem);
        }
        subscribed
    }

    /// Stops listening to every channel but those of `keep`.
    pub(super) async fn unfollow_except(&self, keep: &HashSet<String>) {
        let dropped: Vec<String> = {
            let mut followed = lock(&self.followed);
            let dropped = followed
                .iter()
                .filter(|s| !keep.contains(*s))
                .cloned()
                .collect();
            followed.retain(|s| keep.contains(s));
            dropped
        };
        for stem in dropped {
            // Best effort: a subscription that stays only brings messages that are dropped.
            let _ = self.conn.clone().sunsubscribe(self.channel(&stem)).await;
        }
    }

    pub(super) fn followed(&self) -> Vec<String> {
        lock(&self.followed).iter().cloned().collect()
    }

    /// Forwards messages until the receiver goes. A lost shard connection, or a subscription the
    /// server dropped, has the sessions concerned subscribed again (one `SSUBSCRIBE` each: a
    /// channel per slot) and then reported [`RedisEvent::Stale`], to be re-read.
    pub(super) async fn run(self: std::sync::Arc<Self>, events: mpsc::Sender<RedisEvent>) {
        let Some(mut pushes) = lock(&self.pushes).take() else {
            return;
        };
        let mut repair: HashSet<String> = HashSet::new();
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING_INTERVAL);
        ping.reset();
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    match push.kind {
                        PushKind::SMessage => {
                            if let Some(event) = self.decoder.event(push) {
                                if events.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        PushKind::SUnsubscribe => {
                            // Not ours (we forget a stem before unsubscribing): the slot moved.
                            if let Some(stem) = self.decoder.channel_stem(&push) {
                                if lock(&self.followed).contains(&stem) {
                                    repair.insert(stem);
                                }
                            }
                        }
                        PushKind::Disconnection => repair.extend(self.followed()),
                        _ => {}
                    }
                }
                _ = tokio::time::sleep(delay), if !repair.is_empty() => {
                    for stem in repair.clone() {
                        if !lock(&self.followed).contains(&stem) {
                            repair.remove(&stem);
                            continue;
                        }
                        if self.conn.clone().ssubscribe(self.channel(&stem)).await.is_ok() {
                            repair.remove(&stem);
                            if events.send(RedisEvent::Stale(stem)).await.is_err() {
                                return;
                            }
                        }
                    }
                    delay = if repair.is_empty() {
                        RESUBSCRIBE_MIN_DELAY
                    } else {
                        (delay * 2).min(RESUBSCRIBE_MAX_DELAY)
                    };
                }
                _ = ping.tick() => {
                    // A shard that died without closing its connection (a lost network) shows here.
                    let ping = ::redis::cmd("PING");
                    let every_primary = RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    ));
                    if self.conn.clone().route_command(ping, every_primary).await.is_err() {
                        repair.extend(self.followed());
                    }
                }
                _ = events.closed() => return,
            }
        }
    }
}
