//! What a person's name may contain: the rule the user-service applies at registration and the
//! email-service applies again before printing a name in a mail (a forged event must not put
//! someone else's message in our mail).

/// Letters of any script (with their combining marks), spaces, hyphens, apostrophes and a
/// period after an initial (`J. R.`, `St.`). No digits, URLs, `@`, control or bidirectional
/// override characters.
pub fn is_plain_name(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    chars.iter().enumerate().all(|(i, &c)| match c {
        ' ' | '-' | '\'' | '\u{2019}' => true,
        // An initial's period: after a letter, before a space or the end.
        '.' => {
            i > 0
                && chars[i - 1].is_alphabetic()
                && chars.get(i + 1).is_none_or(|next| *next == ' ')
        }
        c => c.is_alphabetic() || unicode_normalization::char::is_combining_mark(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_any_script_pass_and_messages_do_not() {
        for good in [
            "Ann",
            "Jean-Luc",
            "O'Brien",
            "D\u{2019}Angelo",
            "J. R. R.",
            "Zoe\u{308}",
            "山田",
        ] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in [
            "http://x.example",
            "x.example",
            "Call 555",
            "a@b",
            "Ann\u{202e}",
            "Ann\n",
            "<b>",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
