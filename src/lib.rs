//! An edge rate limiter for Cloudflare Workers.
//!
//! `core` is pure and native-testable; everything that touches the Workers runtime is
//! compiled for wasm32 only.

pub mod core;
