//! The shared runtime of every AigroNova service: configuration, telemetry, internal
//! authentication, W3C trace context, errors and their gRPC mapping, storage, inference and
//! the gRPC server scaffolding.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod config;
pub mod cpf;
pub mod crypto;
pub mod error;
pub mod grpc;
pub mod inference;
pub mod metrics_http;
pub mod monitoring;
pub mod objects;
pub mod open_inference;
pub mod pdf;
pub mod shutdown;
pub mod storage;
pub mod subject;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod trace_context;

pub use error::Error;
pub use shutdown::Shutdown;
