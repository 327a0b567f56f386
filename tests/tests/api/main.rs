//! End-to-end tests: the platform in-process, driven through the gateway like a client.

mod admin;
mod bad_input;
mod edge;
mod openapi;
mod scoring;
mod tenancy;
mod traces;
