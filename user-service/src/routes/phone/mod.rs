//! Phone verification by SMS code: `POST /user/phone/verify` ([`check`]) checks a code, `POST
//! /user/phone/verification/resend` ([`resend`]) sends the code again or starts a new
//! verification. The first code goes out at registration (`routes::register`). The logic is
//! `crate::phone`'s; these handlers parse, answer and count.

pub(crate) mod check;
pub(crate) mod resend;

use serde::{Deserialize, Deserializer};

/// A request's phone number as typed (parsed by `crate::phone::Phone::parse`).
fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.trim().to_owned())
}
