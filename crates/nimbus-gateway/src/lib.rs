//! Nimbus's HTTP API gateway in the manner of Amazon API Gateway HTTP APIs: route keys and the
//! routing table, the payload format 1.0/2.0 events and response mapping, CORS, and the
//! integrations (function, HTTP backend, mock).

pub mod cors;
pub mod event;
pub mod proxy;
pub mod response;
pub mod routing;
