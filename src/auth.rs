//! Authentication: is this request carrying a valid Entra access token for this API?
//!
//! [`bearer`] finds the credential, [`token`] decodes it, [`validate`] checks it against the
//! key store and the configured tenant, audiences and clients, and [`challenge`] holds the
//! `WWW-Authenticate` answers, [`policy`] the route rules. [`Reason`] names every way a
//! request can be refused. The order in which these run, and what a refusal looks like, is
//! the gateway's decision ([`crate::gateway`]).

pub mod bearer;
pub mod cache;
pub mod challenge;
pub mod diagnose;
mod facts;
pub mod policy;
pub mod token;
pub mod validate;

pub use crate::reason::Reason;
pub use bearer::Bearer;
pub use challenge::Challenges;
pub use facts::Facts;
pub use policy::{Forbidden, Policy};
pub use token::Claims;
pub use validate::{Principal, Rejected, Validator};
