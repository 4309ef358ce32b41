//! Values that passed validation: built once from a request, then trusted by the code below the
//! handlers.

use crate::password::Password;

/// A registration that passed validation; built from the request in `routes::register`.
#[derive(Debug)]
pub(crate) struct NewUser {
    /// Normalised (trimmed, lower-cased).
    pub(crate) email: String,
    pub(crate) password: Password,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
}
