//! The QapMap API as Rust types and tonic clients/servers, generated from the
//! `.proto` files in this crate. Modules mirror the proto packages
//! (`qapmap.equity.v1` is [`equity::v1`]). Conversions to domain types live in
//! the services, never here: this crate is the partner-facing SDK.

// Generated code: its lints are not ours to fix.
#![allow(
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]

pub use prost;
pub use tonic;

/// The encoded `FileDescriptorSet` of every QapMap proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qapmap_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("qapmap.common.v1");
    }
}

pub mod equity {
    pub mod v1 {
        tonic::include_proto!("qapmap.equity.v1");
    }
}

pub mod shareholder {
    pub mod v1 {
        tonic::include_proto!("qapmap.shareholder.v1");
    }
}

pub mod ledger {
    pub mod v1 {
        tonic::include_proto!("qapmap.ledger.v1");
    }
}

pub mod saga {
    pub mod v1 {
        tonic::include_proto!("qapmap.saga.v1");
    }
}

pub mod messaging {
    pub mod v1 {
        tonic::include_proto!("qapmap.messaging.v1");
    }
}

pub mod ops {
    pub mod v1 {
        tonic::include_proto!("qapmap.ops.v1");
    }
}
