//! What the store's fault tests share: a file system that fails on purpose ([`fault_disk`]), one
//! that loses power ([`power_loss`]), and a scripted workload with a model of what was
//! acknowledged ([`workload`]). Each test file uses part of them.
#![allow(dead_code)]

pub mod fault_disk;
pub mod power_loss;
pub mod workload;
