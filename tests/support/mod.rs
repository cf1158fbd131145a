//! What the store's fault tests share: a file system that fails on purpose ([`fault_disk`]), one
//! that loses power ([`power_loss`]), a scripted workload with a model of what was
//! acknowledged ([`workload`]), a `redis-server` with a proxy that holds a write transaction
//! before its `EXEC` ([`redis_proxy`]), and sessions and journal records made by hand
//! ([`records`]). Each test file uses part of them.
#![allow(dead_code)]

pub mod fault_disk;
pub mod power_loss;
pub mod records;
pub mod redis_proxy;
pub mod workload;
