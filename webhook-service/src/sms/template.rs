//! The tiny template language of `SMS_TEMPLATE` and `SMS_HTTP_BODY`: `{name}` is replaced by the
//! value of `name` (lower-case ASCII letters and `_`); every other character, a `{` that does
//! not open such a name included (JSON braces), is copied as is.
//!
//! One pass over the template: a substituted value is never scanned again, so an app name or a
//! text holding `{code}` cannot pull another value in.

/// The placeholder names in `template`, in order (repeats included).
pub(crate) fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    scan(template, |piece| {
        if let Piece::Name(name) = piece {
            names.push(name);
        }
    });
    names
}

/// `template` with each `{name}` listed in `values` replaced by `encode(value)`; a placeholder
/// not listed stays as written (start-up validation refuses those).
pub(crate) fn render(
    template: &str,
    values: &[(&str, &str)],
    encode: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    scan(template, |piece| match piece {
        Piece::Text(text) => out.push_str(text),
        Piece::Name(name) => match values.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(&encode(value)),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        },
    });
    out
}

/// A placeholder name refused by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// A `{name}` that is not one of the known ones.
    #[error("unknown placeholder {{{0}}} (known: {1})")]
    Unknown(String, String),
    /// A required placeholder is missing.
    #[error("{{{0}}} is missing")]
    Missing(&'static str),
}

/// Checks that `template` uses only `known` placeholders and every one of `required`.
///
/// # Errors
/// The first unknown or missing placeholder.
pub(crate) fn check(
    template: &str,
    known: &[&str],
    required: &[&'static str],
) -> Result<(), TemplateError> {
    let used = placeholders(template);
    if let Some(unknown) = used.iter().find(|name| !known.contains(name)) {
        let known: Vec<String> = known.iter().map(|name| format!("{{{name}}}")).collect();
        return Err(TemplateError::Unknown(
            (*unknown).to_owned(),
            known.join(", "),
        ));
    }
    match required.iter().find(|name| !used.contains(name)) {
        Some(missing) => Err(TemplateError::Missing(missing)),
        None => Ok(()),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

fn scan<'a>(template: &'a str, mut emit: impl FnMut(Piece<'a>)) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'}') {
            emit(Piece::Text(&rest[..open]));
            emit(Piece::Name(&after[..name_len]));
            rest = &after[name_len + 1..];
        } else {
            // A literal `{`: copy it and go on after it.
            emit(Piece::Text(&rest[..=open]));
            rest = after;
        }
    }
    emit(Piece::Text(rest));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_once_and_json_braces_stay() {
        let text = render(
            "{app}: your code is {code}. {unknown} {Code} { code} {",
            &[("app", "My {code} app"), ("code", "123456")],
            str::to_owned,
        );
        assert_eq!(
            text,
            "My {code} app: your code is 123456. {unknown} {Code} { code} {"
        );
        let body = render(
            r#"{"to":"{to}","text":"{text}"}"#,
            &[("to", "+44"), ("text", "a \"quoted\" text")],
            |v| {
                let json = serde_json::to_string(v).expect("a string");
                json[1..json.len() - 1].to_owned()
            },
        );
        assert_eq!(body, r#"{"to":"+44","text":"a \"quoted\" text"}"#);
        serde_json::from_str::<serde_json::Value>(&body).expect("valid JSON");
    }

    #[test]
    fn unknown_and_missing_placeholders_are_named() {
        assert_eq!(placeholders("{a}{b_c}{}{D}"), vec!["a", "b_c"]);
        assert_eq!(check("{app} {code}", &["app", "code"], &["code"]), Ok(()));
        let error = check("{app} {cod}", &["app", "code"], &["code"]).expect_err("typo");
        assert_eq!(
            error.to_string(),
            "unknown placeholder {cod} (known: {app}, {code})"
        );
        let error = check("{app}", &["app", "code"], &["code"]).expect_err("no code");
        assert_eq!(error.to_string(), "{code} is missing");
    }
}
