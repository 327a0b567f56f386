//! Patients: the validated values a patient record is made of, and the record itself.
//!
//! Every constructor parses and checks its input, so a value of these types is valid by
//! construction. Errors name the request field they are about.

use std::fmt;

use aigronova_platform::Error;
pub use aigronova_platform::cpf::Cpf;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
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
        // Any spelling of the UUID, but nothing around it.
        let id = Uuid::parse_str(value).map_err(|_| Error::invalid(field, "must be a UUID"))?;
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

/// A patient's full name: trimmed, 1 to 200 characters with at least one letter, no control or
/// bidirectional override characters, and no invisible ones (zero-width space, byte order mark…)
/// but the joiners some scripts write names with. Names are found, and printed, as they show.
#[derive(Clone, PartialEq, Eq)]
pub struct PatientName(String);

impl PatientName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(value: &str) -> Result<Self, Error> {
        let name = Self::stored(value)?;
        // Line and paragraph separators break a line as control characters do.
        if name.0.chars().any(|c| matches!(c, '\u{2028}' | '\u{2029}')) {
            return Err(Error::invalid("name", "must not contain control characters"));
        }
        // A mark with no letter before it to sit on shows on nothing, or on what comes before the name.
        let joiner = |c: char| matches!(c, '\u{200c}' | '\u{200d}');
        if name.0.chars().find(|c| !joiner(*c)).is_some_and(is_combining_mark) {
            return Err(Error::invalid("name", "must not start with a combining mark"));
        }
        let invisible = name.0.chars().find(|c| aigronova_platform::text::is_invisible(*c) && !joiner(*c));
        if let Some(invisible) = invisible {
            return Err(Error::invalid(
                "name",
                format!("must not contain invisible characters (U+{:04X})", u32::from(invisible)),
            ));
        }
        Ok(name)
    }

    /// A name as stored: the rules of [`Self::parse`] but the one on invisible characters, which
    /// names stored before it may hold.
    pub fn stored(value: &str) -> Result<Self, Error> {
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
        if name.chars().any(aigronova_platform::text::is_bidi_control) {
            return Err(Error::invalid("name", "must not contain bidirectional overrides"));
        }
        if !name.chars().any(char::is_alphabetic) {
            return Err(Error::invalid("name", "must contain a letter"));
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
            return Err(Error::invalid("birthDate", "is required"));
        }
        let shaped = value.len() == 10
            && value.bytes().enumerate().all(|(position, byte)| match position {
                4 | 7 => byte == b'-',
                _ => byte.is_ascii_digit(),
            });
        if !shaped {
            return Err(Error::invalid("birthDate", "must be an ISO 8601 date, YYYY-MM-DD"));
        }
        let date = NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map_err(|_| Error::invalid("birthDate", "is not a calendar date"))?;
        if date > today {
            return Err(Error::invalid("birthDate", "must not be in the future"));
        }
        if date < Self::EARLIEST {
            return Err(Error::invalid("birthDate", "must not be before 1900-01-01"));
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

/// An e-mail address: trimmed, at most 254 characters, one `@` with text on both sides and a dot
/// in the domain, no spaces, control, bidirectional or invisible characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// `None` for an empty value (no e-mail).
    pub fn parse(value: &str) -> Result<Option<Self>, Error> {
        let hidden = value
            .chars()
            .find(|c| aigronova_platform::text::is_bidi_control(*c) || aigronova_platform::text::is_invisible(*c));
        if let Some(hidden) = hidden {
            return Err(Error::invalid(
                "email",
                format!("must not contain invisible or bidirectional characters (U+{:04X})", u32::from(hidden)),
            ));
        }
        let Some(email) = Self::stored(value)? else { return Ok(None) };
        let (local, domain) = email.0.split_once('@').expect("a stored address has one @");
        // The local part as unquoted addresses write it (RFC 5322 dot-atom: no brackets, quotes,
        // commas, no empty part between dots), at most 64 bytes; the domain's labels of letters,
        // digits and inner hyphens, none empty.
        let local_valid = local.len() <= 64
            && local.split('.').all(|part| !part.is_empty())
            && !local.chars().any(|c| "()<>[]\\,;:\"".contains(c));
        let domain_valid = domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !local_valid || !domain_valid {
            return Err(Error::invalid("email", "must be an address like nome@exemplo.com.br"));
        }
        Ok(Some(email))
    }

    /// An address as stored: the rules of [`Self::parse`] but the one on invisible and
    /// bidirectional characters, which addresses stored before it may hold.
    pub fn stored(value: &str) -> Result<Option<Self>, Error> {
        let email = value.trim();
        if email.is_empty() {
            return Ok(None);
        }
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            });
        if !valid {
            return Err(Error::invalid("email", "must be an address like nome@exemplo.com.br"));
        }
        Ok(Some(Self(email.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email([redacted])")
    }
}

/// A phone number: digits with optional `+`, spaces, dots, dashes and parentheses; 8 to 15 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub const MAX_CHARS: usize = 32;

    /// `None` for an empty value (no phone). 8 to 15 digits laid out as a phone number: an
    /// optional `+` first, groups of digits parted by a space, a dash or a dot (`-` and `.` may
    /// have a space on each side), one group at most in parentheses (an area code).
    pub fn parse(value: &str) -> Result<Option<Self>, Error> {
        let Some(phone) = Self::stored(value)? else { return Ok(None) };
        if !laid_out_as_phone(&phone.0) {
            return Err(Error::invalid(
                "phone",
                "must be laid out as a phone number: an optional + first, groups of digits parted by a space, a \
                 dash or a dot, an area code in parentheses at most, like +55 (11) 91234-5678",
            ));
        }
        Ok(Some(phone))
    }

    /// A phone as stored: the rules of [`Self::parse`] but the one on its layout, which phones
    /// stored before it may not follow.
    pub fn stored(value: &str) -> Result<Option<Self>, Error> {
        let phone = value.trim();
        if phone.is_empty() {
            return Ok(None);
        }
        let digits = phone.chars().filter(char::is_ascii_digit).count();
        let allowed = phone.chars().all(|c| c.is_ascii_digit() || " +-.()".contains(c));
        if !allowed || !(8..=15).contains(&digits) {
            return Err(Error::invalid("phone", "must be a phone number of 8 to 15 digits, like +55 11 91234-5678"));
        }
        if phone.len() > Self::MAX_CHARS {
            return Err(Error::invalid("phone", format!("must be at most {} characters", Self::MAX_CHARS)));
        }
        Ok(Some(Self(phone.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `phone` (digits, spaces, `+-.()` only) is laid out as [`Phone::parse`] takes it.
fn laid_out_as_phone(phone: &str) -> bool {
    const PARTINGS: [&str; 5] = [" ", "-", ".", " - ", " . "];
    let body = phone.strip_prefix('+').unwrap_or(phone);
    // The separators since the last digit or parenthesis, spaces in a row read as one.
    let mut run = String::new();
    let (mut parentheses, mut previous) = (0u8, None::<char>);
    for c in body.chars() {
        match c {
            '0'..='9' => {
                let parted = match previous {
                    None | Some('(') => run.is_empty(),
                    Some(_) => run.is_empty() || PARTINGS.contains(&run.as_str()),
                };
                if !parted {
                    return false;
                }
                run.clear();
            }
            '(' => {
                let placed = match previous {
                    None => run.is_empty(),
                    Some(previous) => previous.is_ascii_digit() && (run.is_empty() || run == " "),
                };
                if parentheses != 0 || !placed {
                    return false;
                }
                parentheses = 1;
                run.clear();
            }
            ')' => {
                if parentheses != 1 || !run.is_empty() || !previous.is_some_and(|c| c.is_ascii_digit()) {
                    return false;
                }
                parentheses = 2;
            }
            ' ' | '-' | '.' => {
                if previous.is_none() {
                    return false;
                }
                if !(c == ' ' && run.ends_with(' ')) {
                    run.push(c);
                }
                continue;
            }
            _ => return false,
        }
        previous = Some(c);
    }
    parentheses != 1 && run.is_empty() && previous.is_some_and(|c| c.is_ascii_digit())
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone([redacted])")
    }
}

/// What a client sends to register a patient, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPatient {
    pub name: PatientName,
    pub cpf: Cpf,
    pub birth_date: BirthDate,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
}

impl NewPatient {
    /// Parses every field, reporting the first one that is wrong.
    pub fn parse(name: &str, cpf: &str, birth_date: &str, email: &str, phone: &str) -> Result<Self, Error> {
        Ok(Self {
            name: PatientName::parse(name)?,
            cpf: Cpf::parse(cpf)?,
            birth_date: BirthDate::parse(birth_date)?,
            email: Email::parse(email)?,
            phone: Phone::parse(phone)?,
        })
    }
}

/// A registered patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patient {
    pub id: PatientId,
    pub name: PatientName,
    pub cpf: Cpf,
    pub birth_date: BirthDate,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    /// When the patient was registered, to the microsecond (what storage keeps).
    pub created_at: DateTime<Utc>,
    /// When the patient was last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Patient {
    /// The JSON names of the personal fields whose values differ between `self` and `other`.
    pub fn differing_fields(&self, other: &Self) -> Vec<&'static str> {
        [
            ("name", self.name != other.name),
            ("cpf", self.cpf != other.cpf),
            ("birthDate", self.birth_date != other.birth_date),
            ("email", self.email != other.email),
            ("phone", self.phone != other.phone),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }

    /// The JSON names of the personal fields held, for audit events (never their values).
    pub fn held_fields(&self) -> Vec<&'static str> {
        let mut fields = vec!["name", "cpf", "birthDate"];
        fields.extend(self.email.is_some().then_some("email"));
        fields.extend(self.phone.is_some().then_some("phone"));
        fields
    }

    /// Registers `new` now, under a fresh identifier.
    pub fn register(new: NewPatient) -> Self {
        Self {
            id: PatientId::generate(),
            name: new.name,
            cpf: new.cpf,
            birth_date: new.birth_date,
            email: new.email,
            phone: new.phone,
            created_at: Utc::now().trunc_subsecs(6),
            updated_at: None,
        }
    }
}

/// The changes of an update, validated; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientChanges {
    pub name: Option<PatientName>,
    pub cpf: Option<Cpf>,
    pub birth_date: Option<BirthDate>,
    pub email: Option<Option<Email>>,
    pub phone: Option<Option<Phone>>,
}

impl PatientChanges {
    pub fn parse(
        name: Option<&str>,
        cpf: Option<&str>,
        birth_date: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<Self, Error> {
        // A field present is a new value: empty is not "absent" here, as it is on creation.
        let not_blank = |field: &str, value: Option<&str>| match value {
            Some(value) if value.trim().is_empty() => Err(Error::invalid(field, "must not be empty when given")),
            _ => Ok(()),
        };
        not_blank("name", name)?;
        not_blank("cpf", cpf)?;
        not_blank("birthDate", birth_date)?;
        Ok(Self {
            name: name.map(PatientName::parse).transpose()?,
            cpf: cpf.map(Cpf::parse).transpose()?,
            birth_date: birth_date.map(BirthDate::parse).transpose()?,
            email: email.map(Email::parse).transpose()?,
            phone: phone.map(Phone::parse).transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The names of the fields changed, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("cpf", self.cpf.is_some()),
            ("birthDate", self.birth_date.is_some()),
            ("email", self.email.is_some()),
            ("phone", self.phone.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }

    pub fn apply(self, patient: &mut Patient) {
        if let Some(name) = self.name {
            patient.name = name;
        }
        if let Some(cpf) = self.cpf {
            patient.cpf = cpf;
        }
        if let Some(birth_date) = self.birth_date {
            patient.birth_date = birth_date;
        }
        if let Some(email) = self.email {
            patient.email = email;
        }
        if let Some(phone) = self.phone {
            patient.phone = phone;
        }
        patient.updated_at = Some(Utc::now().trunc_subsecs(6));
    }
}

/// The lower-case, accent-free form of a name, for prefix searches: its apostrophes and hyphens
/// each written one way (`’` and `ʼ` as `'`, `‑` and `–` as `-`), lower-cased, decomposed with
/// its compatibility forms (NFKD: `ﬁ` is `fi`, a full-width `Ｆ` an `f`), stripped of combining marks, with the Latin letters that have no decomposition read as
/// their base letters (`ł` as `l`, `ø` as `o`, `æ` as `ae`, `ß` as `ss`; Catalan's middle dot dropped) and with each run of white space made one space, so that a name matches whether it was sent
/// composed or decomposed, with or without its accents, and however many spaces were typed
/// between its words.
pub fn searchable(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    // Lower-cased again after the decomposition, which gives capitals for some letters (`𝐌`).
    let letters = name
        .chars()
        .filter(|c| !aigronova_platform::text::is_invisible(*c))
        // An apostrophe or a hyphen is found however it was typed (`D’Ávila` by `d'av`), read
        // before the decomposition turns an acute accent typed for one into a space and a mark.
        .map(|c| match c {
            c if is_apostrophe(c) => '\'',
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2212}' => '-',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .nfkd()
        .filter(|c| !is_combining_mark(*c) && !aigronova_platform::text::is_invisible(*c));
    for c in letters.flat_map(char::to_lowercase) {
        match base_letters(c) {
            Some(letters) => folded.push_str(letters),
            None => folded.push(c),
        }
    }
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `c` is written for an apostrophe: the typographic ones, the modifier letter, the acute
/// and grave accents typed in its place, the full-width one.
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\u{2018}' | '\u{2019}' | '\u{201b}' | '\u{2032}' | '\u{02bc}' | '\u{00b4}' | '`' | '\u{ff07}')
}

/// The base letters a lower-case Latin letter without a decomposition is read as.
fn base_letters(c: char) -> Option<&'static str> {
    Some(match c {
        'ı' => "i",
        'ł' => "l",
        'ø' => "o",
        'đ' | 'ð' => "d",
        'ħ' => "h",
        'æ' => "ae",
        'œ' => "oe",
        'ß' => "ss",
        'þ' => "th",
        // Catalan's middle dot, which `ŀ` decomposes to `l` and: `Ŀlorenç` and `Col·lell` are found
        // as `llorenc` and `collell`.
        '·' => "",
        _ => return None,
    })
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
            ("Zélia\u{2028}Lima", "must not contain control characters"),
            ("\u{202e}\u{200b}", "must not contain bidirectional overrides"),
            ("Maria \u{2066}Silva", "must not contain bidirectional overrides"),
            ("\u{200b}\u{200b}", "must contain a letter"),
            ("Zero\u{200b}Width", "must not contain invisible characters (U+200B)"),
            ("\u{feff}Maria", "must not contain invisible characters (U+FEFF)"),
            ("123 - 456", "must contain a letter"),
        ];
        for (input, expected) in cases {
            let (field, reason) = field_and_reason(PatientName::parse(input).unwrap_err());
            assert_eq!((field.as_str(), reason.as_str()), ("name", expected), "input {input:?}");
        }
        // The joiners some scripts write names with are letters' business, not hidden text.
        assert!(PatientName::parse("Mohammad\u{200c}Reza").is_ok());
        // A name stored before invisible characters were refused still reads, and is found by what it shows.
        let stored = PatientName::stored("Zero\u{200b}Width").unwrap();
        assert_eq!(searchable(stored.as_str()), "zerowidth");
        assert_eq!(searchable("\u{feff}Ana  Paula"), "ana paula");
    }

    #[test]
    fn contact_fields_are_optional_and_checked() {
        assert_eq!(Email::parse("  ").unwrap(), None);
        assert_eq!(Email::parse("maria@exemplo.com.br").unwrap().unwrap().as_str(), "maria@exemplo.com.br");
        for bad in [
            "maria",
            "maria@",
            "@exemplo.com",
            "maria@exemplo",
            "ma ria@exemplo.com",
            "a@b@c.com",
            "a@b..com",
            "a@-.com",
            "a@exemplo-.com",
            "<script>alert(1)</script>@x.com",
            "maria..silva@exemplo.com",
            ".maria@exemplo.com",
            "maria@exemplo_x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["maria.silva+clinica@exemplo.com.br", "joão@exemplo.com.br", "a@xn--exmplo-bva.com", "o'neil@a.io"]
        {
            assert!(Email::parse(good).is_ok(), "{good:?}");
        }
        assert!(Email::stored("a@b..com").is_ok(), "as stored before the stricter rules");
        for hidden in ["maria\u{202e}@exemplo.com", "ma\u{200b}ria@exemplo.com", "maria@exemplo.com\u{feff}"] {
            match Email::parse(hidden) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "email");
                    assert!(reason.contains("invisible or bidirectional"), "{reason}");
                }
                other => panic!("{hidden:?} was taken: {other:?}"),
            }
            assert!(Email::stored(hidden).is_ok(), "{hidden:?} as stored");
        }
        assert_eq!(Phone::parse("+55 (11) 91234-5678").unwrap().unwrap().as_str(), "+55 (11) 91234-5678");
        for bad in ["1234", "+55 11 9abc-5678", "1234567890123456"] {
            assert!(Phone::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "(11) 91234-5678",
            "11912345678",
            "+55-11-91234-5678",
            "+55.11.91234.5678",
            "+55 (11)91234-5678",
            "+55 - 11 - 91234 - 5678",
            "+55  11 91234-5678",
            "+(55) 11 91234 5678",
        ] {
            assert!(Phone::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "++55 11 91234-5678",
            "55)11(9123-45678",
            "()()()()12345678",
            "--------12345678",
            "11 91234-5678-",
            "(11 91234-5678",
            "(11) (9) 1234-5678",
            "11--91234-5678",
            "+55 ( 11) 91234-5678",
            "+55 11 9+1234-5678",
        ] {
            match Phone::parse(bad) {
                Err(Error::InvalidArgument { reason, .. }) => assert!(reason.contains("laid out"), "{bad:?}: {reason}"),
                other => panic!("{bad:?} was taken: {other:?}"),
            }
            assert!(Phone::stored(bad).is_ok(), "{bad:?} as stored before the layout rule");
        }
        match Phone::parse("+55 - (11) - 9 - 1234 - 5678 - 00") {
            Err(Error::InvalidArgument { reason, .. }) => assert_eq!(reason, "must be at most 32 characters"),
            other => panic!("a phone of 33 characters was taken: {other:?}"),
        }
        assert_eq!(searchable(" João Çarvalho "), "joao carvalho");
        assert_eq!(searchable("Ana  Maria\tde\u{a0}Souza"), "ana maria de souza");
        assert!(searchable("Ana  Maria").starts_with(&searchable("ana m")));
    }

    #[test]
    fn composed_and_decomposed_names_fold_to_the_same_search_key() {
        // Names in NFC and in NFD, and the key both fold to.
        let names = [
            ("Érica", "E\u{301}rica", "erica"),
            ("João", "Joa\u{303}o", "joao"),
            ("Çarvalho", "C\u{327}arvalho", "carvalho"),
            ("Müller", "Mu\u{308}ller", "muller"),
            ("Ångström", "A\u{30a}ngstro\u{308}m", "angstrom"),
            ("Dvořák", "Dvor\u{30c}a\u{301}k", "dvorak"),
            ("Łódź", "Ło\u{301}dz\u{301}", "lodz"),
        ];
        for (composed, decomposed, key) in names {
            assert_eq!((searchable(composed).as_str(), searchable(decomposed).as_str()), (key, key), "{composed}");
        }
        assert_eq!(searchable("E\u{301}rica Souza"), "erica souza");
        for typed in ["D’Ávila", "D'Avila", "D\u{2bc}avila", "D´Ávila", "D`avila"] {
            assert_eq!(searchable(typed), "d'avila", "{typed}");
        }
        assert_eq!(searchable("Ana\u{2011}Maria Souza\u{2013}Lima"), "ana-maria souza-lima");
        // Also behind a joiner, which shows nothing for the mark to sit on.
        for name in ["\u{301}Erica", "\u{200c}\u{301}Erica", "\u{200d}\u{200c}\u{301}Erica"] {
            assert!(matches!(
                PatientName::parse(name),
                Err(Error::InvalidArgument { field, reason }) if field == "name" && reason.contains("combining mark")
            ));
        }
        assert!(PatientName::parse("E\u{301}rica").is_ok());
        assert!(searchable("E\u{301}rica").starts_with(&searchable("eri")));
        assert!(searchable("Érica").starts_with(&searchable("E\u{301}ri")));
        // `İ` lower-cases to `i` and a combining dot above.
        assert_eq!(searchable("İsmail"), "ismail");
        assert!(searchable("İsmail").starts_with(&searchable("ism")));
        // Marks of the other blocks go too; letters that do not decompose are read as their base
        // letters, so that a name is found however it is typed.
        assert_eq!(searchable("a\u{1AB0}b\u{1DC0}c\u{20D0}d\u{FE20}e"), "abcde");
        assert_eq!(searchable("Øster Łukasz"), "oster lukasz");
        assert_eq!(searchable("Strauß Æbeltoft Œuvre Þór Đorđe"), "strauss aebeltoft oeuvre thor dorde");
        assert!(searchable("Łukasz Nowak").starts_with(&searchable("Lukasz")));
        assert!(searchable("Łukasz Nowak").starts_with(&searchable("łuk")));
        assert_eq!(searchable("ĳsbrand ﬁnn ＦＵＬＬ 𝐌𝐚𝐫𝐢𝐚"), "ijsbrand finn full maria");
        assert_eq!(searchable("Ŀlorenç Col·lell"), "llorenc collell");
        assert!(searchable("Ŀlorenç").starts_with(&searchable("l·l")));
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
            assert_eq!((field.as_str(), reason.as_str()), ("birthDate", expected), "input {input:?}");
        }
    }

    #[test]
    fn a_patient_id_is_normalised_to_its_hyphenated_form() {
        let id = PatientId::parse("id", "0190A3B4C5D67E8F9A0B1C2D3E4F5A6B").unwrap();
        assert_eq!(id.as_str(), "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b");
    }

    #[test]
    fn invalid_patient_ids_name_the_field_they_came_from() {
        let cases = [
            ("id", "", "is required"),
            ("patientId", " ", "is required"),
            ("id", "42", "must be a UUID"),
            ("id", " 0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b", "must be a UUID"),
        ];
        for (field, input, expected) in cases {
            let (named, reason) = field_and_reason(PatientId::parse(field, input).unwrap_err());
            assert_eq!((named.as_str(), reason.as_str()), (field, expected), "input {input:?}");
        }
    }

    #[test]
    fn registering_a_patient_gives_it_an_id_and_a_time() {
        let new = NewPatient::parse("Maria", "123.456.789-09", "1980-02-29", "", "").unwrap();
        let patient = Patient::register(new.clone());
        assert!(PatientId::parse("id", patient.id.as_str()).is_ok());
        assert_eq!(patient.name, new.name);
        assert!(patient.created_at <= Utc::now());
    }
}
