//! SASLprep (RFC 4013), the subset Midge implements: the mappings and the prohibited
//! characters, without NFKC normalisation, the unassigned code point check or the bidi rules.
//!
//! Why a subset is enough: ASCII strings are unaffected by the missing steps, and so is any
//! text already in NFKC (what keyboards produce for nearly every script). A client that sends
//! a string NFKC would change (full-width letters, ligatures, compatibility characters)
//! prepares it differently from us, so its login fails: the gap fails closed, it never lets
//! in a name or password that should have been refused.

use std::borrow::Cow;

/// A character SASLprep forbids (RFC 4013 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("character U+{:04X} is not allowed (SASLprep)", *.0 as u32)]
pub struct ProhibitedCharacter(pub char);

/// Prepares `s` for comparison as a SCRAM username or password.
///
/// Non-ASCII spaces become U+0020, characters "commonly mapped to nothing" are removed, and
/// control, private use, non-character, display-changing and tagging characters are refused.
pub fn saslprep(s: &str) -> Result<Cow<'_, str>, ProhibitedCharacter> {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // Space first: U+200B is in both tables and the mapping to space wins, as in the
        // `stringprep` crate and libgsasl.
        if is_non_ascii_space(c) {
            out.push(' ');
        } else if is_mapped_to_nothing(c) {
            continue;
        } else if is_prohibited(c) {
            return Err(ProhibitedCharacter(c));
        } else {
            out.push(c);
        }
    }
    Ok(Cow::Owned(out))
}

/// RFC 3454 table C.1.2.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1.
fn is_mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 3454 tables C.2.1 to C.9 as RFC 4013 section 2.3 lists them (C.5, surrogates, cannot
/// occur in a Rust `str`).
fn is_prohibited(c: char) -> bool {
    let cp = c as u32;
    // C.4: the last two code points of every plane.
    if cp & 0xFFFE == 0xFFFE {
        return true;
    }
    matches!(
        c,
        // C.2.1 ASCII control characters
        '\u{0000}'..='\u{001F}' | '\u{007F}'
        // C.2.2 non-ASCII control characters
        | '\u{0080}'..='\u{009F}'
        | '\u{06DD}' | '\u{070F}' | '\u{180E}' | '\u{200C}' | '\u{200D}'
        | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2063}' | '\u{206A}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}' | '\u{1D173}'..='\u{1D17A}'
        // C.3 private use
        | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}'
        // C.4 non-character code points (the rest of the table is above)
        | '\u{FDD0}'..='\u{FDEF}'
        // C.6 inappropriate for plain text
        | '\u{FFFD}'
        // C.7 inappropriate for canonical representation
        | '\u{2FF0}'..='\u{2FFB}'
        // C.8 change display properties or deprecated
        | '\u{0340}' | '\u{0341}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
        // C.9 tagging characters
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_unchanged_and_not_copied() {
        assert!(matches!(saslprep("user pencil~!"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 section 3, the examples this subset can do (IX, soft hyphen, controls).
        assert_eq!(saslprep("I\u{00AD}X").as_deref(), Ok("IX"));
        assert_eq!(saslprep("user").as_deref(), Ok("user"));
        assert_eq!(saslprep("\u{0007}"), Err(ProhibitedCharacter('\u{0007}')));
        // Example 5 ("\u{0627}1", bidi) and 3/4 (NFKC) need the parts we leave out.
    }

    #[test]
    fn non_ascii_spaces_become_space_and_zero_width_ones_vanish() {
        assert_eq!(saslprep("a\u{00A0}b\u{3000}c").as_deref(), Ok("a b c"));
        assert_eq!(saslprep("a\u{FEFF}b\u{2060}").as_deref(), Ok("ab"));
    }

    #[test]
    fn control_and_private_use_characters_are_refused() {
        for c in [
            '\0', '\n', '\u{7f}', '\u{85}', '\u{E000}', '\u{FFFF}', '\u{202E}',
        ] {
            assert_eq!(saslprep(&format!("a{c}b")), Err(ProhibitedCharacter(c)));
        }
    }

    #[test]
    fn other_non_ascii_text_passes_unchanged() {
        assert_eq!(
            saslprep("Jürgen-Ωμέγα-日本").as_deref(),
            Ok("Jürgen-Ωμέγα-日本")
        );
    }
}
