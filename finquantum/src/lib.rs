//! FinQuantum: financial data from Open Finance Brasil under the customer's consent, credit-risk
//! scoring and statements. This crate holds, so far, the client for the institutions' accounts
//! API ([`openfinance`]); the gRPC service is not built yet.

#![forbid(unsafe_code)]

pub mod openfinance;
