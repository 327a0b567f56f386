//! End-to-end tests: the platform in-process, driven through the gateway like a client.

mod bad_input;
mod openapi;
mod scoring;
mod tenancy;
