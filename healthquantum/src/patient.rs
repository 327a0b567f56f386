//! Patients: the validated values a patient record is made of, and the record itself.
//!
//! Every constructor parses and checks its input, so a value of these types is valid by
//! construction. Errors name the request field they are about.

use std::fmt;

use aigronova_platform::Error;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use uuid::Uuid;

/// The identifier of a patient: a UUID, kept in its hyphenated lowercase form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PatientId(String);

impl PatientId {
    /// A fresh, time-ordered identifier.
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    /// Parses the identifier found in request field `field` (`id` or `patient_id`).
    pub fn parse(field: &str, value: &str) -> Result<Self, Error> {
        if value.trim().is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let id = Uuid::parse_str(value.trim()).map_err(|_| Error::invalid(field, "must be a UUID"))?;
        Ok(Self(id.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A patient's full name: trimmed, 1 to 200 characters, no control characters.
#[derive(Clone, PartialEq, Eq)]
pub struct PatientName(String);

impl PatientName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(value: &str) -> Result<Self, Error> {
        let name = value.trim();
        if name.is_empty() {
            return Err(Error::invalid("name", "is required"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(Error::invalid("name", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid("name", "must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names are personal data: they stay out of logs.
impl fmt::Debug for PatientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PatientName([redacted])")
    }
}

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

/// A birth date: an ISO 8601 calendar date (`YYYY-MM-DD`), from 1900-01-01 up to today (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BirthDate(NaiveDate);

impl BirthDate {
    pub const EARLIEST: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("1900-01-01 is a date");

    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::parse_on(value, Utc::now().date_naive())
    }

    /// Parses `value` as seen on `today`.
    pub fn parse_on(value: &str, today: NaiveDate) -> Result<Self, Error> {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::invalid("birth_date", "is required"));
        }
        let shaped = value.len() == 10
            && value.bytes().enumerate().all(|(position, byte)| match position {
                4 | 7 => byte == b'-',
                _ => byte.is_ascii_digit(),
            });
        if !shaped {
            return Err(Error::invalid("birth_date", "must be an ISO 8601 date, YYYY-MM-DD"));
        }
        let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map_err(|_| Error::invalid("birth_date", "is not a calendar date"))?;
        if date > today {
            return Err(Error::invalid("birth_date", "must not be in the future"));
        }
        if date < Self::EARLIEST {
            return Err(Error::invalid("birth_date", "must not be before 1900-01-01"));
        }
        Ok(Self(date))
    }

    pub fn date(&self) -> NaiveDate {
        self.0
    }
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// What a client sends to register a patient, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPatient {
    pub name: PatientName,
    pub cpf: Cpf,
    pub birth_date: BirthDate,
}

impl NewPatient {
    /// Parses every field, reporting the first one that is wrong.
    pub fn parse(name: &str, cpf: &str, birth_date: &str) -> Result<Self, Error> {
        Ok(Self { name: PatientName::parse(name)?, cpf: Cpf::parse(cpf)?, birth_date: BirthDate::parse(birth_date)? })
    }
}

/// A registered patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patient {
    pub id: PatientId,
    pub name: PatientName,
    pub cpf: Cpf,
    pub birth_date: BirthDate,
    /// When the patient was registered, to the microsecond (what storage keeps).
    pub created_at: DateTime<Utc>,
}

impl Patient {
    /// Registers `new` now, under a fresh identifier.
    pub fn register(new: NewPatient) -> Self {
        Self {
            id: PatientId::generate(),
            name: new.name,
            cpf: new.cpf,
            birth_date: new.birth_date,
            created_at: Utc::now().trunc_subsecs(6),
        }
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

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_name_is_trimmed() {
        assert_eq!(PatientName::parse("  Maria da Silva \n").unwrap().as_str(), "Maria da Silva");
    }

    #[test]
    fn a_name_of_200_characters_is_accepted_even_when_they_are_not_ascii() {
        assert!(PatientName::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn invalid_names_are_refused_with_a_reason() {
        let cases = [
            ("", "is required"),
            ("   \t ", "is required"),
            (&*"a".repeat(201), "must be at most 200 characters"),
            ("Maria\u{0}Silva", "must not contain control characters"),
            ("Maria\nSilva", "must not contain control characters"),
            ("Maria\u{7f}", "must not contain control characters"),
        ];
        for (input, expected) in cases {
            let (field, reason) = field_and_reason(PatientName::parse(input).unwrap_err());
            assert_eq!((field.as_str(), reason.as_str()), ("name", expected), "input {input:?}");
        }
    }

    #[test]
    fn a_cpf_is_accepted_with_or_without_punctuation_and_kept_as_digits() {
        assert_eq!(Cpf::parse("123.456.789-09").unwrap().as_str(), "12345678909");
        assert_eq!(Cpf::parse("12345678909").unwrap().as_str(), "12345678909");
        assert_eq!(Cpf::parse(" 529.982.247-25 ").unwrap().as_str(), "52998224725");
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
    fn a_cpf_does_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Cpf::parse("12345678909").unwrap()), "Cpf(***.***.***-09)");
    }

    #[test]
    fn a_leap_day_is_a_birth_date_in_a_leap_year() {
        let birth = BirthDate::parse_on("1980-02-29", date("2025-01-01")).unwrap();
        assert_eq!(birth.to_string(), "1980-02-29");
    }

    #[test]
    fn the_first_and_last_accepted_birth_dates_are_1900_01_01_and_today() {
        assert!(BirthDate::parse_on("1900-01-01", date("2025-06-30")).is_ok());
        assert!(BirthDate::parse_on("2025-06-30", date("2025-06-30")).is_ok());
    }

    #[test]
    fn invalid_birth_dates_are_refused_with_a_reason() {
        let today = date("2025-06-30");
        let shape = "must be an ISO 8601 date, YYYY-MM-DD";
        let cases = [
            ("", "is required"),
            ("1981-02-29", "is not a calendar date"),
            ("1980-13-01", "is not a calendar date"),
            ("1980-04-31", "is not a calendar date"),
            ("1980-00-10", "is not a calendar date"),
            ("1980-2-29", shape),
            ("29/02/1980", shape),
            ("19800229", shape),
            ("+1980-02-29", shape),
            ("1980-02-29T00:00:00Z", shape),
            ("2025-07-01", "must not be in the future"),
            ("1899-12-31", "must not be before 1900-01-01"),
        ];
        for (input, expected) in cases {
            let (field, reason) = field_and_reason(BirthDate::parse_on(input, today).unwrap_err());
            assert_eq!((field.as_str(), reason.as_str()), ("birth_date", expected), "input {input:?}");
        }
    }

    #[test]
    fn a_patient_id_is_normalised_to_its_hyphenated_form() {
        let id = PatientId::parse("id", "0190A3B4C5D67E8F9A0B1C2D3E4F5A6B").unwrap();
        assert_eq!(id.as_str(), "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b");
    }

    #[test]
    fn invalid_patient_ids_name_the_field_they_came_from() {
        let cases = [("id", "", "is required"), ("patient_id", " ", "is required"), ("id", "42", "must be a UUID")];
        for (field, input, expected) in cases {
            let (named, reason) = field_and_reason(PatientId::parse(field, input).unwrap_err());
            assert_eq!((named.as_str(), reason.as_str()), (field, expected), "input {input:?}");
        }
    }

    #[test]
    fn registering_a_patient_gives_it_an_id_and_a_time() {
        let new = NewPatient::parse("Maria", "123.456.789-09", "1980-02-29").unwrap();
        let patient = Patient::register(new.clone());
        assert!(PatientId::parse("id", patient.id.as_str()).is_ok());
        assert_eq!(patient.name, new.name);
        assert!(patient.created_at <= Utc::now());
    }
}
