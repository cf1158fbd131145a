//! One Redis node: the reconnecting [`ConnectionManager`] for reads and single commands, and a
//! small pool of connections for transactions, each used by one transaction at a time.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, ConnectionInfo, RedisResult};

use super::net::TxConn;
use super::{CONNECT_TIMEOUT, MAX_IDLE_TX_CONNECTIONS, RESPONSE_TIMEOUT};
use crate::lock;

/// Connection attempts the manager makes per reconnect, after the first: few, so that a call
/// while Redis is down fails fast (the store keeps its data and tries again later).
const RECONNECT_RETRIES: usize = 1;

pub(super) struct Single {
    pub(super) client: Client,
    pub(super) manager: ConnectionManager,
    /// Connections for `WATCH`/`MULTI`/`EXEC`, each used by one transaction at a time.
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Single {
    /// Connects the manager and checks the node answers.
    pub(super) async fn connect(info: ConnectionInfo) -> RedisResult<Single> {
        let client = Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let mut manager = ConnectionManager::new_with_config(client.clone(), config).await?;
        ::redis::cmd("PING").query_async::<()>(&mut manager).await?;
        Ok(Single {
            client,
            manager,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection, or a new one.
    pub(super) async fn take(&self, response_timeout: Duration) -> RedisResult<TxConn> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(TxConn {
                conn,
                node: None,
                reused: true,
            });
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(TxConn {
            conn,
            node: None,
            reused: false,
        })
    }

    pub(super) fn give_back(&self, tx: TxConn) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_TX_CONNECTIONS {
            idle.push(tx.conn);
        }
    }
}
