//! Switchyard's Odoo clients: the wire formats ([`xmlrpc`], [`jsonrpc`], [`json2`]), Odoo's
//! exceptions and what they mean for a delivery ([`error`]), field values both ways
//! ([`values`]), and [`OdooClient`] over HTTP ([`client`]).
//!
//! It owns the wire: encoding, decoding and classifying what Odoo answers. It must never
//! decide retries or keep delivery state (that is `switchyard-deliver`'s), and never guess a
//! success: the only failure read as success is the recorded None-after-commit fault.
//! The simulator (`switchyard-odoo-sim`) uses [`xmlrpc`] and [`error`] for its server side.

pub mod client;
pub mod error;
pub mod json2;
pub mod jsonrpc;
pub mod probe;
pub mod values;
pub mod xmlrpc;

pub use client::{CallOptions, OdooClient, OdooConfig, Protocol, SearchRead};
pub use error::OdooError;
