//! Field checks shared by the endpoint and job requests: target URLs (the egress guard's
//! save-time check), subscribed event types, descriptions, page sizes.

use super::error::FieldErrors;
use crate::{egress::Egress, public_events::EVENT_TYPES};

/// Longest URL.
const MAX_URL_BYTES: usize = 2048;
/// Longest endpoint description.
const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Default page size of lists.
pub(crate) const DEFAULT_PAGE: u64 = 50;
/// Largest page size of lists.
pub(crate) const MAX_PAGE: u64 = 250;

/// The URL as the egress guard normalised it (http/https, a host, no IP literal in a refused
/// range); on refusal the guard's reason is recorded under `field`.
pub(crate) fn checked_url(
    url: &str,
    field: &str,
    egress: &Egress,
    errors: &mut FieldErrors,
) -> String {
    if url.len() > MAX_URL_BYTES {
        errors.add(
            field,
            "too_long",
            format!("must be at most {MAX_URL_BYTES} bytes"),
        );
        return String::new();
    }
    match egress.check_url(url) {
        Ok(url) => url.to_string(),
        Err(refused) => {
            errors.add(field, "invalid_url", refused.to_string());
            String::new()
        }
    }
}

/// `url` with its userinfo password shown as `***`: answers never echo a credential. (The query
/// is shown: it is how many receivers tell their senders apart.)
pub(crate) fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

/// Event types to subscribe to, each one of the public catalogue, without duplicates. `None`
/// (absent or null) subscribes to every type; an empty list subscribes to none and is refused.
pub(crate) fn event_types(
    types: Option<Vec<String>>,
    errors: &mut FieldErrors,
) -> Option<Vec<String>> {
    let mut types = types?;
    if types.is_empty() {
        errors.add(
            "event_types",
            "empty",
            "must name at least one type; omit it (or null) for every type",
        );
    }
    for (i, name) in types.iter().enumerate() {
        if !EVENT_TYPES.contains(&name.as_str()) {
            errors.add(
                format!("event_types.{i}"),
                "unknown_event_type",
                format!("{name:?} is not one of {}", EVENT_TYPES.join(", ")),
            );
        }
    }
    types.sort();
    types.dedup();
    Some(types)
}

/// A description: trimmed, at most 1,024 characters.
pub(crate) fn description(text: String, errors: &mut FieldErrors) -> String {
    let text = text.trim().to_owned();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.add(
            "description",
            "too_long",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    text
}

/// A page size: [`DEFAULT_PAGE`] when absent, 1 to [`MAX_PAGE`].
pub(crate) fn page_size(limit: Option<u64>, errors: &mut FieldErrors) -> u64 {
    match limit {
        None => DEFAULT_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => {
            errors.add(
                "limit",
                "out_of_range",
                format!("must be between 1 and {MAX_PAGE}"),
            );
            DEFAULT_PAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_come_from_the_catalogue() {
        let mut errors = FieldErrors::default();
        assert_eq!(event_types(None, &mut errors), None);
        let types = event_types(
            Some(vec![
                "user.verified".into(),
                "user.registered".into(),
                "user.verified".into(),
            ]),
            &mut errors,
        );
        assert_eq!(
            types,
            Some(vec!["user.registered".into(), "user.verified".into()])
        );
        assert!(errors.is_empty());
        event_types(Some(vec!["user.deleted".into()]), &mut errors);
        event_types(Some(vec![]), &mut errors);
        let details = errors.to_value();
        assert_eq!(details["event_types.0"][0]["code"], "unknown_event_type");
        assert_eq!(details["event_types"][0]["code"], "empty");
    }

    #[test]
    fn shown_urls_hide_only_the_password() {
        assert_eq!(
            shown_url("https://user:pw@example.com/in?token=a"),
            "https://user:***@example.com/in?token=a"
        );
        assert_eq!(shown_url("https://example.com/x"), "https://example.com/x");
    }

    #[test]
    fn page_sizes_are_bounded() {
        let mut errors = FieldErrors::default();
        assert_eq!(page_size(None, &mut errors), DEFAULT_PAGE);
        assert_eq!(page_size(Some(250), &mut errors), 250);
        assert!(errors.is_empty());
        page_size(Some(0), &mut errors);
        page_size(Some(251), &mut errors);
        assert_eq!(errors.to_value()["limit"].as_array().map(Vec::len), Some(2));
    }
}
