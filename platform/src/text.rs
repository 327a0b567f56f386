//! Checks on text that people write into the platform and other people read back.

/// Whether `c` is a bidirectional embedding, override or isolate (U+202A to U+202E, U+2066 to
/// U+2069): characters that make text display otherwise than it is stored.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

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
