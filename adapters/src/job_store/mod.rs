//! `JobStorePort` on SQL: one adapter, two databases (SQLite, the embedded
//! default, and PostgreSQL for a shared store) through sqlx's `Any` driver
//! and portable SQL. Migrations run at startup.

pub mod codec;
mod sql;

pub use sql::{EVENTS_CHANNEL, SqlJobStore};
