//! Canon's HTTP server: the route table, authentication, the resource
//! handlers, and the wiring that feeds every request to the decision
//! flow of `canon-http`.

pub mod app;
pub mod assets;
pub mod body;
pub mod cache;
pub mod config;
pub mod connections;
pub mod csv_export;
pub mod cursor;
pub mod devices;
pub mod error;
pub mod export;
pub mod http_client;
pub mod idempotency;
pub mod import;
pub mod input;
pub mod json;
pub mod limits;
pub mod listing;
pub mod maintenance;
pub mod metrics;
pub mod openapi;
pub mod quotas;
pub mod render;
pub mod resources;
pub mod routes;
pub mod schema_rules;
pub mod shed;
pub mod state;
pub mod token;
pub mod wire;
pub mod worker;

pub use app::{Enveloped, Flow, enveloped, serve, serve_connections, serve_router};
pub use config::Config;
pub use connections::Limits;
pub use state::App;
