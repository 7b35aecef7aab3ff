//! Switchyard's Odoo clients: the XML-RPC wire format ([`xmlrpc`]), Odoo's exceptions and
//! what they mean for a delivery ([`error`]).
//!
//! It owns the wire: encoding, decoding and classifying what Odoo answers. It must never
//! decide retries or keep delivery state (that is `switchyard-deliver`'s), and never guess a
//! success: the only failures read as success are the recorded after-commit ones.

pub mod error;
pub mod xmlrpc;

pub use error::OdooError;
