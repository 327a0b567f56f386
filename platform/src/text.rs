//! Checks on text that people write into the platform and other people read back.

/// Whether `c` is a bidirectional embedding, override or isolate (U+202A to U+202E, U+2066 to
/// U+2069): characters that make text display otherwise than it is stored.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` shows nothing where it stands: a zero-width space, joiner or non-joiner, a
/// direction mark, a word joiner or invisible operator, a soft hyphen, a grapheme joiner, a
/// variation selector, a Hangul filler, the byte order mark, an interlinear annotation mark, the
/// blank Braille pattern, a musical formatting mark, a tag character.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'
            | '\u{1160}'
            | '\u{17b4}'
            | '\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206a}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{2800}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// Whether `text` shows nothing: empty, or only white space and invisible characters.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || is_invisible(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_white_space_and_invisible_characters_is_blank() {
        for blank in [
            "",
            " \t\n",
            "\u{200b}",
            " \u{200d}\u{2060}\u{feff} ",
            "\u{ad}\u{3164}",
            "\u{e0020}\u{e0001}",
            "\u{1d173}\u{fff9}\u{2800}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for shown in ["a", " \u{200b}x", "ã", "-", "\u{1F600}", "\u{200b}1"] {
            assert!(!is_blank(shown), "{shown:?}");
        }
    }

    #[test]
    fn only_embeddings_overrides_and_isolates_are_bidi_controls() {
        for c in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            assert!(is_bidi_control(c), "{c:?}");
        }
        for c in ['a', 'ã', '\u{200b}', '\u{200d}', '\u{2070}', '\u{2029}'] {
            assert!(!is_bidi_control(c), "{c:?}");
        }
    }
}
