//! End-to-end tests: the platform in-process, driven through the gateway like a client.

mod admin;
mod backup_drill;
mod bad_input;
mod edge;
mod scoring;
mod tenancy;
mod traces;
