//! End-to-end tests: the platform in-process, driven through the gateway like a client.

mod admin;
mod audit;
mod backup_drill;
mod bad_input;
mod edge;
mod fin;
mod jwt;
mod monitoring;
mod open_inference;
mod openapi;
mod patients;
mod ratelimit;
mod reports;
mod resilience;
mod scoring;
mod storage;
mod subjects;
mod tenancy;
mod traces;
