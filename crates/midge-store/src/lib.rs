//! Midge's durable state: sessions, subscriptions, offline queues, in-flight messages in
//! both directions, retained messages and pending wills, written incrementally to an
//! embedded store (fjall) and recovered at start-up.
//!
//! The broker talks to a [`SessionStore`]: it [`load`](SessionStore::load)s once at
//! start-up, then describes every state change as [`Op`]s and
//! [`commit`](SessionStore::commit)s them; the returned [`CommitTicket`] resolves when
//! they are durable under the configured [`Durability`], which is when a PUBACK or
//! PUBREC may go out. A dedicated writer thread gathers concurrent commits into one
//! batch and one fsync (group commit).
//!
//! A message queued for many offline sessions is stored once (`Op::Enqueue` writes one
//! body and one small entry per session); the body is deleted with its last reference.
//! Queued messages stay on disk: the broker reads a session's queue in order with
//! [`SessionStore::read_queue`] and keeps only a window in memory.
//!
//! See `docs/design/storage.md` for the choices and the engine measurements.

mod check;
pub mod engine;
mod error;
mod key;
mod load;
mod lock;
mod op;
mod record;
mod session_store;
mod store;
mod writer;

pub use check::{check, repair, Problem, RepairReport, Report};
pub use error::StoreError;
pub use key::Table;
pub use op::{Delivery, Op};
pub use record::{
    encode_subscription_options, system_time, unix_millis, ConnectedWill, InflightRecord,
    MessageId, MessageProperties, MessageRecord, QueueEntry, SessionRecord, Stage,
    SubscriptionRecord, UnixMillis, WillRecord,
};
pub use session_store::{
    CommitTicket, Dropped, Durability, InflightMessage, QueuedMessage, Recovered, RecoveredSession,
    SessionStore, StoreHealth,
};
#[cfg(feature = "redb")]
pub use store::RedbStore;
pub use store::{DiskStore, MemoryStore, Store, StoreOptions};
