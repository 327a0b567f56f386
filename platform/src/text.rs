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

/// Whether an id a client chose (a request id, an inference's id) can be kept and logged as it is: at most 128 letters, digits and `-_.:/+=`, the
/// characters of UUIDs, trace ids and the usual id formats, and nothing markup or a log reader
/// could take for something else. The id goes to the access log, so one that is an e-mail address
/// (`@`), holds a credential (an API key, `agk_…` in any case, or its secret alone, a run of more
/// hexadecimal digits than a trace id's 32; or a JWT, `eyJ…`), a CPF or a phone number is not
/// reused.
pub fn is_reusable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        && !id.as_bytes().windows(4).any(|four| four.eq_ignore_ascii_case(b"agk_"))
        && longest_hex_run(id) <= 32
        && !id.contains("eyJ")
        && !crate::cpf::holds_cpf(id)
        // A UUID's digits are its own, whatever runs of them it happens to hold.
        && (uuid::Uuid::try_parse(id).is_ok_and(|_| id.len() == 36) || !holds_phone(id))
}

/// Whether `id` holds a phone number: a Brazilian mobile number (area code, 9 and 8 digits) or
/// landline (area code and 8 digits, the first 2 to 5), with the country code 55 or the trunk
/// prefix 0 before them, or not, or a number written after a `+`, as
/// international numbers are (E.164: 10 to 15 digits), in one run of digits or in groups that
/// punctuation parts as phone numbers are written (`+55-11-91234-5678`: each group after the first
/// of 2 to 5 digits). Digits within a word of a hexadecimal id (hexadecimal digits, a letter `a` to
/// `f` among them: a UUID's part, a trace id) are the id's, not a number.
fn holds_phone(id: &str) -> bool {
    let bytes = id.as_bytes();
    // Each run of digits: where it starts and ends.
    let mut groups = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let digits = bytes[at..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits > 0 {
            groups.push((at, at + digits));
        }
        at += digits.max(1);
    }
    let hex_word = |at: usize| {
        let start = bytes[..at].iter().rposition(|byte| !byte.is_ascii_alphanumeric()).map_or(0, |before| before + 1);
        let end =
            bytes[at..].iter().position(|byte| !byte.is_ascii_alphanumeric()).map_or(bytes.len(), |after| at + after);
        let word = &bytes[start..end];
        word.iter().all(u8::is_ascii_hexdigit) && word.iter().any(u8::is_ascii_alphabetic)
    };
    (0..groups.len()).any(|first| {
        let start = groups[first].0;
        let international = start > 0 && bytes[start - 1] == b'+';
        let mut digits = Vec::new();
        // Groups of one number are parted by punctuation only, and written as phone numbers are:
        // after a `+`, in any groups; each after the first of 2 to 5 digits, the first of at most 5
        // (`55-11-91234-5678`); or none of more than 9 digits, the last the subscriber's 4
        // (`1191234-5678`, `11.9.1234.5678`) or a mobile's 9 (`11-912345678`).
        let (mut spaced, mut loose) = (true, true);
        for (index, &(from, to)) in groups[first..].iter().enumerate() {
            if index > 0 {
                let between = &bytes[groups[first + index - 1].1..from];
                if between.iter().any(u8::is_ascii_alphabetic) || digits.len() > 15 {
                    return false;
                }
                spaced &= (2..=5).contains(&(to - from)) && groups[first].1 - start <= 5;
                loose &= to - from <= 9 && groups[first].1 - start <= 9;
            }
            let subscriber = to - from == 4 || to - from == 9 && bytes[from] == b'9';
            let grouped = index == 0 || international || spaced || loose && subscriber;
            if !spaced && !loose && !international {
                return false;
            }
            digits.extend_from_slice(&bytes[from..to]);
            // The number as dialled within Brazil: the digits as they are, or after the country
            // code 55 or the trunk prefix 0.
            let nationals = [Some(&digits[..]), digits.strip_prefix(b"55"), digits.strip_prefix(b"0")];
            let brazilian = nationals.into_iter().flatten().any(|national| {
                let area = national.len() >= 3 && national[0] != b'0' && national[1] != b'0';
                // A mobile's 9 and 8 digits, or a landline's 8 digits from 2 to 5.
                let mobile = national.len() == 11 && national.get(2) == Some(&b'9');
                let landline =
                    national.len() == 10 && national.get(2).is_some_and(|digit| (b'2'..=b'5').contains(digit));
                area && (mobile || landline)
            });
            let phone = brazilian || international && (10..=15).contains(&digits.len());
            if phone && grouped && !hex_word(start) && !hex_word(to - 1) {
                return true;
            }
        }
        false
    })
}

/// The most hexadecimal digits `id` holds in a row.
fn longest_hex_run(id: &str) -> usize {
    id.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_is_reused_whatever_runs_of_digits_its_groups_hold() {
        // Its first groups read as a mobile number with its trunk prefix, written in groups.
        let uuid = "01191234-5678-426a-8abc-0123456789ab";
        assert!(holds_phone(uuid) && is_reusable_id(uuid));
        assert!(!is_reusable_id("01191234-5678"), "the number alone is not reused");
    }

    #[test]
    fn phone_numbers_are_found_in_ids_and_hexadecimal_ids_are_not_taken_for_them() {
        for phone in [
            "tel+5511912345678",
            "11912345678",
            "req-55-11-91234-5678",
            "+551132345678",
            "+14155552671",
            "+1-415-555-2671",
            "20260101-11912345678",
            "order-7-11912345678",
            "1:+5511912345678",
            "phone-11912345678",
            "cliente11912345678",
            "fone_11912345678",
            "11912345678-a",
            "wa.me/5511912345678",
            "a+5511912345678",
            "+5511912345678-e",
            "011912345678",
            "1191234-5678",
            "01191234-5678",
            "11.9.1234.5678",
            "(11)91234-5678",
            "11-912345678",
            "+55-11-912345678",
            "+1-4155550100",
            // Landlines: an area code and 8 digits, the first 2 to 5.
            "1133334444",
            "11-3333-4444",
            "551133334444",
            "01133334444",
            "(21)2555-1234",
            "fixo-4732221100",
        ] {
            assert!(holds_phone(phone), "{phone}");
        }
        for id in [
            "ab449005-8655-4de9-bbe3-1b517389f98f",
            "660fbb5b3983af97922468000cec8ce6",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "req-1790000000-1",
            "1790000000.5",
            "req-1764576000",
            "1764576000123",
            "12345678-1234-1234-1234-123456789012",
            "req-1790000000-1234",
            "2026-11-30-1234",
            "1790000000.5678",
            "order-2026120312",
            "1799999999",
        ] {
            assert!(!holds_phone(id), "{id}");
        }
    }

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
