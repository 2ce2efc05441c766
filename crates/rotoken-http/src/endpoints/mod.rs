//! One file per endpoint, plus client authentication and the DPoP glue of
//! the token endpoint; the shared state lives in [`crate::server`].

pub(crate) mod client_auth;
pub(crate) mod dpop_request;
pub(crate) mod introspection;
pub(crate) mod issue;
pub(crate) mod metadata;
pub(crate) mod revocation;
pub(crate) mod token;
