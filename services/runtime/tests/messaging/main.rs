//! The outbox relay, consumers with their inbox, and dead letters, against
//! the real Postgres and NATS JetStream. Each test makes its own database and
//! namespace (or its own NATS server when it must stop it).

mod confinement;
mod dead_letters;
mod enqueue_with;
mod graceful_stop;
mod housekeeping;
mod inbox;
mod key_order;
mod load;
mod marks;
mod outbox_tenancy;
mod reconnect;
mod relay;
mod support;
mod whole_batches;
