//! Nimbus's HTTP API gateway in the manner of Amazon API Gateway HTTP APIs: route keys and the
//! routing table, the payload format 1.0/2.0 events and response mapping, CORS, the
//! integrations (function, HTTP backend, mock), the data plane that serves deployed stages,
//! and the management API (API Gateway v2's REST shape) that changes them.

pub mod accesslog;
pub mod admin;
pub mod cors;
pub mod event;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod response;
pub mod routing;
pub mod server;

pub use server::{Gateway, PublicEndpoint};
