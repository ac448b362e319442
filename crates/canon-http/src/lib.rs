//! Canon's HTTP protocol core.
//!
//! Everything here is pure: no sockets, no files, no database. The crate
//! holds what Canon means by each status ([`catalogue`]), how problems are
//! written ([`problem`]), how media types are negotiated ([`media`]), how
//! validators and preconditions work ([`validators`]), who may do what
//! ([`access`]), which routes exist ([`route`]) and the ordered decision
//! flow that turns all of it into one response ([`flow`]).
//!
//! It is usable on its own: a server that is not Canon can drive [`flow::run`]
//! with its own [`flow::Service`] and [`flow::Resource`] implementations.

pub mod access;
pub mod body;
pub mod catalogue;
pub mod coding;
pub mod date;
pub mod flow;
pub mod media;
pub mod operation;
pub mod problem;
pub mod ratelimit;
pub mod route;
pub mod validators;

#[cfg(test)]
mod flow_tests;

pub use catalogue::ProblemKind;
pub use problem::{FieldError, Problem};
