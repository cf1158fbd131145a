//! Where commands go: one Redis node ([`super::single`]) or the slots of a Redis Cluster
//! ([`super::cluster`]). The backend's reads, transactions and scans ask [`Net`]; only the cluster
//! side ever sees a redirect.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Cmd, ErrorKind as RedisErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

use super::cluster::Cluster;
use super::keys::Keys;
use super::single::Single;

/// How often one call follows a redirect (`MOVED`) or waits out a slot being moved (`ASK`,
/// `TRYAGAIN`) before it gives up as unavailable.
pub(super) const REDIRECT_ATTEMPTS: u32 = 24;

/// One node, or a cluster.
pub(super) enum Net {
    Single(Single),
    Cluster(Cluster),
}

/// A connection for one transaction: `WATCH` state belongs to a connection, so a transaction
/// never shares one. `node` is the cluster node it goes to (None: the single node).
pub(super) struct TxConn {
    pub(super) conn: MultiplexedConnection,
    pub(super) node: Option<std::sync::Arc<str>>,
    /// Taken from the idle pool (it may have died since it was last used).
    pub(super) reused: bool,
}

/// What a redirect asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Redirect {
    /// `MOVED slot host:port`: the slot is served elsewhere now. Try again there at once.
    Moved { slot: u16, node: String },
    /// `ASK` or `TRYAGAIN`: the slot is being moved. Try again after a pause; once it has moved,
    /// the old owner answers `MOVED`.
    Migrating,
}

impl Net {
    /// The connection single commands (and single-slot pipelines that need no atomicity) use:
    /// the reconnecting manager, or the crate's cluster connection, which follows redirects itself.
    pub(super) fn shared(&self) -> Shared {
        match self {
            Net::Single(single) => Shared::Single(single.manager.clone()),
            Net::Cluster(cluster) => Shared::Cluster(cluster.shared.clone()),
        }
    }

    /// Runs `pipe`, whose keys are all `keys`' (one slot), where that slot is served, following
    /// redirects. Error replies inside the pipeline's result stay values (for `ignore_errors`
    /// pipelines), except redirects.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        keys: &Keys,
        pipe: &Pipeline,
    ) -> RedisResult<T> {
        match self {
            Net::Single(single) => pipe.query_async(&mut single.manager.clone()).await,
            Net::Cluster(cluster) => {
                let values = cluster.query(keys.slot, pipe).await?;
                T::from_redis_value(Value::Array(values)).map_err(RedisError::from)
            }
        }
    }

    /// A connection for one transaction on the node serving `slot`.
    pub(super) async fn take(&self, slot: u16, response_timeout: Duration) -> RedisResult<TxConn> {
        match self {
            Net::Single(single) => single.take(response_timeout).await,
            Net::Cluster(cluster) => cluster.take(slot, response_timeout).await,
        }
    }

    /// Keeps a transaction's connection for the next one.
    pub(super) fn give_back(&self, tx: TxConn) {
        match self {
            Net::Single(single) => single.give_back(tx),
            Net::Cluster(cluster) => cluster.give_back(tx),
        }
    }

    /// Takes note of an error: a redirect updates the cluster's slot map, a lost node has it
    /// read again. Nothing for a single node.
    pub(super) fn learn(&self, error: &RedisError) {
        if let Net::Cluster(cluster) = self {
            cluster.learn(error);
        }
    }

    /// Every key matching `pattern`, found with `SCAN` (never `KEYS`) on the node, or on every
    /// primary of the cluster. May hold a key twice.
    pub(super) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        match self {
            Net::Single(single) => scan_node(&mut single.manager.clone(), pattern).await,
            Net::Cluster(cluster) => cluster.scan(pattern).await,
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Net::Cluster(_))
    }
}

/// The shared connection: either kind, as one [`ConnectionLike`].
#[derive(Clone)]
pub(super) enum Shared {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Shared::Single(conn) => conn.req_packed_command(cmd),
            Shared::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Shared::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Shared::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Shared::Single(conn) => conn.get_db(),
            Shared::Cluster(conn) => conn.get_db(),
        }
    }
}

/// `SCAN` through a whole node.
pub(super) async fn scan_node(
    conn: &mut impl ConnectionLike,
    pattern: &str,
) -> RedisResult<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(super::SCAN_COUNT)
            .query_async(conn)
            .await?;
        found.extend(keys);
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

/// The redirect an error stands for: the error itself, or one of the replies a transaction was
/// aborted for (`EXECABORT` after a command was refused at `MULTI` time).
pub(super) fn redirect_of(error: &RedisError) -> Option<Redirect> {
    match error.kind() {
        RedisErrorKind::Server(ServerErrorKind::Moved) => {
            let (node, slot) = error.redirect_node()?;
            Some(Redirect::Moved {
                slot,
                node: node.to_string(),
            })
        }
        RedisErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::TryAgain) => {
            Some(Redirect::Migrating)
        }
        RedisErrorKind::Server(ServerErrorKind::ExecAbort) => error
            .clone()
            .into_server_errors()?
            .iter()
            .find_map(|(_, e)| redirect_in(&Value::ServerError(e.clone()))),
        _ => None,
    }
}

/// The redirect an error reply among a pipeline's values stands for.
pub(super) fn redirect_in(value: &Value) -> Option<Redirect> {
    let Value::ServerError(e) = value else {
        return None;
    };
    match e.kind()? {
        ServerErrorKind::Moved => {
            let mut words = e.details()?.split_ascii_whitespace();
            let slot = words.next()?.parse().ok()?;
            let node = words.next()?.to_string();
            Some(Redirect::Moved { slot, node })
        }
        ServerErrorKind::Ask | ServerErrorKind::TryAgain => Some(Redirect::Migrating),
        _ => None,
    }
}

/// The first redirect among a pipeline's values, as an error.
pub(super) fn redirect_among(values: &[Value]) -> Option<RedisError> {
    values.iter().find_map(|value| match value {
        Value::ServerError(e) if redirect_in(value).is_some() => Some(RedisError::from(e.clone())),
        _ => None,
    })
}

/// The pause before attempt `attempt` (from 1) at a slot that is being moved: grows from 5 ms
/// to 200 ms; about 3 s over [`REDIRECT_ATTEMPTS`].
pub(super) fn migrating_pause(attempt: u32) -> Duration {
    Duration::from_millis((5u64 << attempt.min(6)).min(200))
}
