//! Open Finance Brasil consents: which customer's data may be fetched from which institution,
//! for what, until when. Data is fetched and used only under a consent that is authorised, not
//! expired and grants the permission the use needs.

use std::{collections::BTreeSet, fmt};

use aigronova_platform::Error;
use chrono::{DateTime, Utc};

/// The Open Finance Brasil permissions a consent may grant (phase 2 data sharing).
pub const KNOWN_PERMISSIONS: &[&str] = &[
    "ACCOUNTS_READ",
    "ACCOUNTS_BALANCES_READ",
    "ACCOUNTS_TRANSACTIONS_READ",
    "ACCOUNTS_OVERDRAFT_LIMITS_READ",
    "CREDIT_CARDS_ACCOUNTS_READ",
    "CREDIT_CARDS_ACCOUNTS_BILLS_READ",
    "CREDIT_CARDS_ACCOUNTS_BILLS_TRANSACTIONS_READ",
    "CREDIT_CARDS_ACCOUNTS_LIMITS_READ",
    "CREDIT_CARDS_ACCOUNTS_TRANSACTIONS_READ",
    "CUSTOMERS_PERSONAL_IDENTIFICATIONS_READ",
    "CUSTOMERS_PERSONAL_ADITTIONALINFO_READ",
    "RESOURCES_READ",
];

pub const ACCOUNTS_READ: &str = "ACCOUNTS_READ";
pub const ACCOUNTS_BALANCES_READ: &str = "ACCOUNTS_BALANCES_READ";
pub const ACCOUNTS_TRANSACTIONS_READ: &str = "ACCOUNTS_TRANSACTIONS_READ";

/// A consent's state as callers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsentStatus {
    Authorised,
    Revoked,
    Expired,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorised => "AUTHORISED",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
        }
    }
}

impl fmt::Display for ConsentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The permissions of a consent: known, without repeats, at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions(BTreeSet<String>);

impl Permissions {
    pub fn parse(permissions: &[String]) -> Result<Self, Error> {
        if permissions.is_empty() {
            return Err(Error::invalid("permissions", "at least one permission is required"));
        }
        let mut set = BTreeSet::new();
        for permission in permissions {
            if !KNOWN_PERMISSIONS.contains(&permission.as_str()) {
                let spelled = permission.trim().to_ascii_uppercase();
                let reason = match KNOWN_PERMISSIONS.contains(&spelled.as_str()) {
                    true => format!("{permission:?} is written {spelled}, as Open Finance Brasil names it"),
                    false => format!("unknown permission {permission:?}; known: {}", KNOWN_PERMISSIONS.join(", ")),
                };
                return Err(Error::invalid("permissions", reason));
            }
            set.insert(permission.clone());
        }
        Ok(Self(set))
    }

    /// As stored: space-separated.
    pub fn from_stored(text: &str) -> Self {
        Self(text.split_whitespace().map(str::to_owned).collect())
    }

    pub fn to_stored(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }

    pub fn grants(&self, permission: &str) -> bool {
        self.0.contains(permission)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A stored consent.
#[derive(Clone, Debug, PartialEq)]
pub struct Consent {
    pub id: String,
    pub customer_id: String,
    pub institution: String,
    pub permissions: Permissions,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_ingested_at: Option<DateTime<Utc>>,
}

impl Consent {
    pub fn status_at(&self, now: DateTime<Utc>) -> ConsentStatus {
        if self.revoked_at.is_some() {
            ConsentStatus::Revoked
        } else if self.expires_at <= now {
            ConsentStatus::Expired
        } else {
            ConsentStatus::Authorised
        }
    }

    /// `Ok` when the consent may be used now for what needs every one of `needed`; otherwise
    /// the `permission_denied` naming the first permission it lacks.
    pub fn allows(&self, needed: &[&str], now: DateTime<Utc>) -> Result<(), tonic::Status> {
        let status = self.status_at(now);
        for permission in needed {
            if status != ConsentStatus::Authorised {
                return Err(aigronova_platform::error::missing_permission(
                    permission,
                    &format!("consent {} is {status}: it no longer grants {permission}", self.id),
                ));
            }
            if !self.permissions.grants(permission) {
                return Err(aigronova_platform::error::missing_permission(
                    permission,
                    &format!("consent {} does not grant {permission}", self.id),
                ));
            }
        }
        Ok(())
    }
}

/// The first of `needed` that none of `consents` grants while valid, as a `permission_denied`.
pub fn require_any(consents: &[Consent], needed: &[&str], now: DateTime<Utc>, what: &str) -> Result<(), tonic::Status> {
    for permission in needed {
        let granted = consents.iter().any(|consent| consent.allows(&[permission], now).is_ok());
        if !granted {
            return Err(aigronova_platform::error::missing_permission(
                permission,
                &format!("{what} needs a valid consent of the customer granting {permission}, and there is none"),
            ));
        }
    }
    Ok(())
}

/// Checks that one of `consents`, valid now, grants every one of `needed` together; otherwise a
/// `permission_denied` naming a permission none grants, or, when each is granted by some consent
/// but none grants them all, one the consent that grants the most of them lacks.
pub fn require_one(consents: &[Consent], needed: &[&str], now: DateTime<Utc>, what: &str) -> Result<(), tonic::Status> {
    require_any(consents, needed, now, what)?;
    if consents.iter().any(|consent| consent.allows(needed, now).is_ok()) {
        return Ok(());
    }
    let granted = |consent: &Consent, permission: &str| consent.allows(&[permission], now).is_ok();
    let closest =
        consents.iter().max_by_key(|consent| needed.iter().filter(|permission| granted(consent, permission)).count());
    let Some(missing) =
        closest.and_then(|consent| needed.iter().find(|permission| !granted(consent, permission))).or(needed.first())
    else {
        return Ok(());
    };
    Err(aigronova_platform::error::missing_permission(
        missing,
        &format!(
            "{what} needs one valid consent of the customer granting {} together, and none grants them all",
            needed.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent(permissions: &[&str]) -> Consent {
        let now = Utc::now();
        Consent {
            id: "c".into(),
            customer_id: "u".into(),
            institution: "bank".into(),
            permissions: Permissions::parse(&permissions.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()).unwrap(),
            expires_at: now + chrono::Duration::days(30),
            created_at: now,
            revoked_at: None,
            last_ingested_at: None,
        }
    }

    #[test]
    fn permissions_are_known_and_kept_once() {
        let parsed = Permissions::parse(&["ACCOUNTS_READ".into(), "ACCOUNTS_READ".into()]).unwrap();
        assert_eq!(parsed.to_stored(), "ACCOUNTS_READ");
        // Spelled as Open Finance names it, as the API document's enum says.
        for other in ["accounts_read", " ACCOUNTS_READ"] {
            match Permissions::parse(&[other.into()]) {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "permissions");
                    assert!(reason.contains("is written ACCOUNTS_READ"), "{reason}");
                }
                refused => panic!("{other:?}: {refused:?}"),
            }
        }
        assert!(Permissions::parse(&[]).is_err());
        assert!(Permissions::parse(&["PAYMENTS_WRITE".into()]).is_err());
        assert_eq!(Permissions::from_stored(&parsed.to_stored()), parsed);
    }

    #[test]
    fn a_use_is_refused_naming_the_permission_missing() {
        let now = Utc::now();
        let mut granted = consent(&[ACCOUNTS_READ]);
        let refused = granted.allows(&[ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ], now).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.metadata().get("aigronova-permission").unwrap(), ACCOUNTS_TRANSACTIONS_READ);
        assert!(granted.allows(&[ACCOUNTS_READ], now).is_ok());
        granted.revoked_at = Some(now);
        assert_eq!(granted.status_at(now), ConsentStatus::Revoked);
        assert!(granted.allows(&[ACCOUNTS_READ], now).is_err());
        let expired = consent(&[ACCOUNTS_READ]);
        assert_eq!(expired.status_at(expired.expires_at), ConsentStatus::Expired);
        assert!(require_any(&[consent(&[ACCOUNTS_READ])], &[ACCOUNTS_TRANSACTIONS_READ], now, "x").is_err());
        assert!(
            require_any(&[consent(&[ACCOUNTS_TRANSACTIONS_READ])], &[ACCOUNTS_TRANSACTIONS_READ], now, "x").is_ok()
        );
    }

    #[test]
    fn permissions_spread_over_consents_are_not_one_consent_granting_them_all() {
        let now = Utc::now();
        let all = [ACCOUNTS_READ, ACCOUNTS_BALANCES_READ, ACCOUNTS_TRANSACTIONS_READ];
        let spread = [consent(&[ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ]), consent(&[ACCOUNTS_BALANCES_READ])];
        assert!(require_any(&spread, &all, now, "a score").is_ok(), "each is granted by some consent");
        let refused = require_one(&spread, &all, now, "a score").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.metadata().get("aigronova-permission").unwrap(), ACCOUNTS_BALANCES_READ, "{refused:?}");
        assert!(refused.message().contains("none grants them all"), "{refused:?}");
        let refused = require_one(&[consent(&[ACCOUNTS_READ])], &all, now, "a score").unwrap_err();
        assert_eq!(refused.metadata().get("aigronova-permission").unwrap(), ACCOUNTS_BALANCES_READ);
        assert!(require_one(&[consent(&[ACCOUNTS_READ]), consent(&all)], &all, now, "a score").is_ok());
    }
}
