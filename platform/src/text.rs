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

/// The zero of each run of ten decimal digits in Unicode (general category `Nd`, Unicode 14):
/// ASCII's, full-width (`４`), Arabic-Indic (`٤`), Devanagari (`४`), mathematical (`𝟒`)…, each
/// run holding 0 to 9 in order.
const DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66, 0xde6, 0xe50, 0xed0,
    0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620,
    0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10, 0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0,
    0x112f0, 0x11450, 0x114d0, 0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60,
    0x16ac0, 0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// The value of `c` when it is a decimal digit of any script: ASCII, full-width, mathematical, or
/// another script's (a card number hidden from a check for ASCII digits could use them).
pub fn decimal_digit(c: char) -> Option<u32> {
    let code = u32::from(c);
    if c.is_ascii_digit() {
        return Some(code - 0x30);
    }
    let run = DIGIT_ZEROS.partition_point(|&zero| zero <= code).checked_sub(1)?;
    let value = code - DIGIT_ZEROS[run];
    (value < 10).then_some(value)
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
