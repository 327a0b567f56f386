//! `X-Request-Id`: taken from the client when it is sane, generated otherwise, returned on
//! every response, written in problem documents and passed to the services. The request being
//! served is also where authentication notes the credential's id for the access log.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
};

use crate::store::Principal;

pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request being served: its id and path for the code that builds problem documents, and
/// the credential it authenticated with for the access log.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub id: String,
    pub path: String,
    /// Who authenticated the request, once someone did.
    pub principal: Arc<OnceLock<Arc<Principal>>>,
}

tokio::task_local! {
    pub(crate) static CURRENT: RequestInfo;
}

/// Whether a client's request id can be reused: at most 128 letters, digits and `-_.:/+=`, the
/// characters of UUIDs, trace ids and the usual id formats, and nothing markup or a log reader
/// could take for something else. The id goes to the access log, so one that is an e-mail address
/// (`@`), holds a credential (an API key, `agk_…` in any case, or its secret alone, a run of more
/// hexadecimal digits than a trace id's 32; or a JWT, `eyJ…`), a CPF or a phone number is not
/// reused.
pub(crate) fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        && !id.as_bytes().windows(4).any(|four| four.eq_ignore_ascii_case(b"agk_"))
        && longest_hex_run(id) <= 32
        && !id.contains("eyJ")
        && !aigronova_platform::cpf::holds_cpf(id)
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

/// The request's id, the client's when it sent one acceptable id (two are none: which one is meant
/// is not for the gateway to guess), set on `request` for the services; returns it and its header
/// value, which the response carries back.
pub(crate) fn adopt(request: &mut Request) -> (String, HeaderValue) {
    let mut given = request.headers().get_all(&HEADER).iter();
    let id = match (given.next(), given.next()) {
        (Some(only), None) => only.to_str().ok().filter(|id| acceptable(id)).map(str::to_owned),
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).expect("request ids are printable ASCII");
    request.headers_mut().insert(HEADER, value.clone());
    (id, value)
}

/// The id of the request being served.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(|info| info.id.clone()).ok()
}

/// Notes that the request being served authenticated as `principal`.
pub(crate) fn authenticated_as(principal: &Arc<Principal>) {
    let _ = CURRENT.try_with(|info| info.principal.set(Arc::clone(principal)));
}

/// Who the request being served authenticated as, if it did.
pub(crate) fn principal() -> Option<Arc<Principal>> {
    CURRENT.try_with(|info| info.principal.get().cloned()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_is_reused_whatever_runs_of_digits_its_groups_hold() {
        // Its first groups read as a mobile number with its trunk prefix, written in groups.
        let uuid = "01191234-5678-426a-8abc-0123456789ab";
        assert!(holds_phone(uuid) && acceptable(uuid));
        assert!(!acceptable("01191234-5678"), "the number alone is not reused");
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
}
