//! Switchyard's domain: the types every other crate speaks. No I/O lives here: no network,
//! no database, no reading of the clock except through [`clock::Clock`].

pub mod alerts;
pub mod batch;
pub mod clock;
pub mod cloudevent;
pub mod config;
pub mod delivery;
pub mod flows;
pub mod instance;
pub mod jq;
pub mod odoo;
pub mod odoo_capture;
pub mod odoo_ops;
pub mod reconcile;
pub mod secret;
pub mod sources;
pub mod token;
pub mod workflows;

pub use clock::{Clock, ManualClock, ScaledClock, ScaledOrigin, SharedClock, SystemClock};
pub use cloudevent::{CloudEvent, Data};
pub use config::Config;
pub use secret::Secret;
