//! The Brazilian taxpayer number (CPF): parsed and checked once, kept as its 11 digits, and
//! never written whole to a log.

use std::fmt;

use crate::Error;

/// A Brazilian taxpayer number (CPF), kept as its 11 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Cpf(String);

impl Cpf {
    /// Accepts `123.456.789-09` or `12345678909`; both check digits must hold, and numbers made
    /// of one repeated digit (which pass the check digits) are refused.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::invalid("cpf", "is required"));
        }
        let digits = Self::digits_of(value)
            .ok_or_else(|| Error::invalid("cpf", "must be 11 digits, or formatted as 123.456.789-09"))?;
        if digits.iter().all(|digit| *digit == digits[0]) {
            return Err(Error::invalid("cpf", "must not repeat one digit"));
        }
        if check_digit(&digits[..9]) != digits[9] || check_digit(&digits[..10]) != digits[10] {
            return Err(Error::invalid("cpf", "check digits do not match"));
        }
        Ok(Self(digits.iter().map(|digit| char::from(b'0' + digit)).collect()))
    }

    /// The 11 digits, if `value` is written in one of the two accepted layouts.
    fn digits_of(value: &str) -> Option<[u8; 11]> {
        let bytes = value.as_bytes();
        let digits: Vec<u8> = match bytes.len() {
            11 => bytes.to_vec(),
            14 if bytes[3] == b'.' && bytes[7] == b'.' && bytes[11] == b'-' => bytes
                .iter()
                .enumerate()
                .filter(|(position, _)| ![3, 7, 11].contains(position))
                .map(|(_, byte)| *byte)
                .collect(),
            _ => return None,
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let values: Vec<u8> = digits.iter().map(|byte| byte - b'0').collect();
        values.try_into().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `text` holds a CPF: 11 digits in a row whose check digits hold, the digits in one run
/// or in runs split by punctuation or spaces only (`52998224725`, `529.982.247-25`,
/// `529-982-247/25`), alone or within a longer such number (`00052998224725`, a CPF padded to a
/// CNPJ's 14 digits). Text that may reach a log is screened with it: a number that holds a CPF by
/// chance is screened out too.
pub fn holds_cpf(text: &str) -> bool {
    let bytes = text.as_bytes();
    // The digits of each number: runs of digits that only punctuation or spaces part.
    let mut number = Vec::with_capacity(bytes.len());
    // A letter ends a number; so does the end of the text.
    for &byte in bytes.iter().chain(std::iter::once(&b'a')) {
        if byte.is_ascii_digit() {
            number.push(byte);
        } else if byte.is_ascii_alphanumeric() {
            if number.windows(11).any(|digits| std::str::from_utf8(digits).is_ok_and(|cpf| Cpf::parse(cpf).is_ok())) {
                return true;
            }
            number.clear();
        }
    }
    false
}

/// `text` with every CPF in it masked as Pix shows a payee's, its middle six digits kept
/// (`***.456.789-**`): a number written `123.456.789-09` or as its 11 digits alone whose check
/// digits hold, not part of a longer number (a CNPJ, a boleto's line) nor glued to letters (an id).
pub fn mask_cpfs(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut masked = String::with_capacity(text.len());
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if !bytes[at].is_ascii_digit() {
            at += 1;
            continue;
        }
        // One number: digits, and dots, dashes or slashes between two digits.
        let start = at;
        while at < bytes.len()
            && (bytes[at].is_ascii_digit()
                || (matches!(bytes[at], b'.' | b'-' | b'/') && bytes.get(at + 1).is_some_and(u8::is_ascii_digit)))
        {
            at += 1;
        }
        let glued = text[..start].chars().next_back().is_some_and(char::is_alphanumeric)
            || text[at..].chars().next().is_some_and(char::is_alphanumeric);
        if let Some(cpf) = Cpf::parse(&text[start..at]).ok().filter(|_| !glued) {
            masked.push_str(&text[copied..start]);
            masked.push_str(&format!("***.{}.{}-**", &cpf.0[3..6], &cpf.0[6..9]));
            copied = at;
        }
    }
    masked.push_str(&text[copied..]);
    masked
}

/// The CPF check digit of `digits` (the first 9, or the first 10 for the second check digit).
fn check_digit(digits: &[u8]) -> u8 {
    let weight_of_first = digits.len() + 1;
    let sum: usize =
        digits.iter().enumerate().map(|(position, digit)| usize::from(*digit) * (weight_of_first - position)).sum();
    match (sum * 10) % 11 {
        10 => 0,
        remainder => remainder as u8,
    }
}

/// CPFs are personal data: only the last two digits reach a log.
impl fmt::Debug for Cpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cpf(***.***.***-{})", &self.0[9..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_and_reason(error: Error) -> (String, String) {
        match error {
            Error::InvalidArgument { field, reason } => (field, reason),
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn a_cpf_is_accepted_with_or_without_punctuation_and_kept_as_digits() {
        assert_eq!(Cpf::parse("123.456.789-09").unwrap().as_str(), "12345678909");
        assert_eq!(Cpf::parse("12345678909").unwrap().as_str(), "12345678909");
        assert_eq!(Cpf::parse(" 529.982.247-25 ").unwrap().as_str(), "52998224725");
    }

    #[test]
    fn cpfs_in_text_are_masked_as_pix_shows_them() {
        assert_eq!(mask_cpfs("PIX ENVIADO MARIA 529.982.247-25"), "PIX ENVIADO MARIA ***.982.247-**");
        assert_eq!(mask_cpfs("PIX 52998224725 JOAO"), "PIX ***.982.247-** JOAO");
        assert_eq!(mask_cpfs("52998224725/12345678909"), "52998224725/12345678909", "one longer number");
        assert_eq!(mask_cpfs("de 529.982.247-25, 123.456.789-09."), "de ***.982.247-**, ***.456.789-**.");
        // Not a CPF: check digits that fail, a CNPJ, a boleto's groups, an id's digits, a phone.
        for kept in [
            "PIX 529.982.247-26",
            "TED 12.345.678/0001-95",
            "BOLETO 23793.38128 60082.677139",
            "E52998224725X",
            "PIX e52998224725",
            "TEL (11) 91234-5678",
            "00052998224725",
            "111.111.111-11",
        ] {
            assert_eq!(mask_cpfs(kept), kept);
        }
        assert_eq!(mask_cpfs("Cpf: 529.982.247-25 é"), "Cpf: ***.982.247-** é");
        assert_eq!(mask_cpfs(&mask_cpfs("PIX 52998224725")), "PIX ***.982.247-**", "masking twice is masking once");
    }

    #[test]
    fn a_cpf_whose_check_digit_computes_to_ten_uses_zero() {
        assert_eq!(check_digit(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), 0);
    }

    #[test]
    fn invalid_cpfs_are_refused_with_a_reason() {
        let layout = "must be 11 digits, or formatted as 123.456.789-09";
        let cases = [
            ("", "is required"),
            ("1234567890", layout),
            ("123456789099", layout),
            ("123.456.789.09", layout),
            ("123-456-789.09", layout),
            ("1234567890a", layout),
            ("123.456.78a-09", layout),
            ("١٢٣٤٥٦٧٨٩٠٩", layout),
            ("11111111111", "must not repeat one digit"),
            ("000.000.000-00", "must not repeat one digit"),
            ("12345678908", "check digits do not match"),
            ("12345678919", "check digits do not match"),
            ("123.456.789-00", "check digits do not match"),
        ];
        for (input, expected) in cases {
            let (field, reason) = field_and_reason(Cpf::parse(input).unwrap_err());
            assert_eq!((field.as_str(), reason.as_str()), ("cpf", expected), "input {input:?}");
        }
    }

    #[test]
    fn a_cpf_is_found_inside_other_text_in_any_grouping() {
        for text in [
            "52998224725",
            "req-529.982.247-25",
            "x52998224725y",
            "a/12345678909:b",
            "529-982-247-25",
            "529.982.247.25",
            "529/982/247/25",
            "529_982_247_25",
            "529:982:247:25",
            "5299822472-5",
            "529982247.25",
            "2024-529.982.247-25",
            "529 982 247 25",
        ] {
            assert!(holds_cpf(text), "{text}");
        }
        // Within longer numbers too: padded to 14 digits, or with digits either side.
        for text in ["00052998224725", "1529.982.247-25", "5299822472501", "id-00052998224725"] {
            assert!(holds_cpf(text), "{text}");
        }
        // Digits parted by letters, and failing check digits, are not CPFs.
        for text in ["52998224726", "529-982-247.26", "529a982b247c25", "4bf92f3577b34da6a3ce929d0e0e4736", ""] {
            assert!(!holds_cpf(text), "{text}");
        }
    }

    #[test]
    fn a_cpf_does_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Cpf::parse("12345678909").unwrap()), "Cpf(***.***.***-09)");
    }
}
