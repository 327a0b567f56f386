//! Generated protobuf and gRPC code of the AigroNova platform, and the encoded descriptor set.
//!
//! This crate holds no logic: services convert these messages to their domain types at their edge.

#![allow(unreachable_pub, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every `.proto` file in `proto/`, well-known types and
/// `google.api` annotations included. The gateway builds its routes from it and every gRPC
/// server serves it through reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod aigronova {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("aigronova.common.v1");
        }
    }
    pub mod fin {
        pub mod v1 {
            tonic::include_proto!("aigronova.fin.v1");
        }
    }
    pub mod governance {
        pub mod v1 {
            tonic::include_proto!("aigronova.governance.v1");
        }
    }
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("aigronova.health.v1");
        }
    }
}

/// The Open Inference Protocol (version 2) every service speaks for its models.
pub mod inference {
    tonic::include_proto!("inference");
}
