//! The pure core: policy, bucket arithmetic, decisions and identity. Nothing here touches
//! the `worker` crate, the network or a clock, so all of it is tested natively.

pub mod admin;
pub mod algorithm;
pub mod controls;
pub mod cors;
pub mod decision;
pub mod describe;
pub mod fleet;
pub mod forwarding;
pub mod identity;
pub mod lists;
pub mod order;
pub mod path;
pub mod policy;
pub mod rate;
pub mod service;
pub mod subject;

#[cfg(test)]
mod properties;
