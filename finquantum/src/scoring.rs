//! Credit-risk scoring: the model's twelve features from what the applicant declares and what
//! their ingested bank data shows, a score from 0 to 1000, and reasons a customer can read.
//!
//! Features taken from the bank data (see [`BankSummary`]):
//! - `checking_status`: 0 without a checking account (scored at its least favourable code: see
//!   [`withheld`]); 1 when the checking balance averaged
//!   below zero over the window or was negative on more than [`OVERDRAFT_DAYS_LIMIT`] days;
//!   3 when it averaged at least R$ 200 or a salary came in each of the last three months
//!   (income regularity); 2 otherwise.
//! - `savings_status`: 0 without a savings account (as the checking status); then by the savings balance: 1 below
//!   R$ 100, 2 below R$ 500, 3 below R$ 1,000, 4 from R$ 1,000.
//! - `installment_rate`: the instalment (amount ÷ months) as a share of the monthly income, the
//!   salary seen in the transactions when there is one, the declared income otherwise: 1 below
//!   10%, 2 below 20%, 3 below 30%, 4 from 30%.
//!
//! The thresholds are the Statlog data set's, read in reais; see the model card for what that
//! means for calibration.

use std::collections::{BTreeMap, HashMap};

use aigronova_platform::{Error, inference::Manifest};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{StoredAccount, StoredTransaction};

/// The model this service scores credit with.
pub const MODEL: &str = "credit-risk";
/// Days of bank data a score looks at, ending at the latest ingestion.
pub const WINDOW_DAYS: i64 = 90;

/// Days a salary may come before its 30-day period of the window and still be that period's, when
/// the period has none of its own: a payday moved forward by a weekend or a holiday, or drifting
/// against 30-day periods over months of 31 days (a salary paid on the 3rd lands 31 days after the
/// last one, at times).
pub const PAYDAY_SLACK_DAYS: i64 = 5;

/// Days of transactions before an account's balance that its summary reads: the window and the
/// slack of its oldest period's salary.
pub const SUMMARY_DAYS: i64 = WINDOW_DAYS + PAYDAY_SLACK_DAYS;
/// Negative days in the window beyond which the checking account counts as overdrawn.
pub const OVERDRAFT_DAYS_LIMIT: i32 = 15;
/// Reasons a score gives at most.
pub const MAX_REASONS: usize = 4;

/// Open Finance account types.
const CHECKING: &[&str] = &["CONTA_DEPOSITO_A_VISTA", "CONTA_PAGAMENTO_PRE_PAGA"];
const SAVINGS: &str = "CONTA_POUPANCA";
/// Open Finance transaction types of a salary.
pub const SALARY_TYPES: &[&str] = &["FOLHA_PAGAMENTO", "PORTABILIDADE_SALARIO"];

/// What the applicant declares, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Applicant {
    pub duration_months: i32,
    pub credit_amount: f64,
    pub age: i32,
    pub existing_credits: i32,
    pub dependents: i32,
    pub employment_years: Option<f64>,
    pub credit_history: CreditHistory,
    pub housing_own: bool,
    pub purpose_car: bool,
    pub monthly_income: Option<f64>,
}

/// The credit history, in the data set's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditHistory {
    NoCreditsOrAllPaid,
    AllPaidHere,
    PaidDuly,
    PastDelays,
    Critical,
}

impl CreditHistory {
    const NAMES: [(&'static str, Self); 5] = [
        ("no_credits_or_all_paid", Self::NoCreditsOrAllPaid),
        ("all_paid_here", Self::AllPaidHere),
        ("paid_duly", Self::PaidDuly),
        ("past_delays", Self::PastDelays),
        ("critical", Self::Critical),
    ];

    /// The names an applicant's credit history is given by.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::NAMES.iter().map(|(name, _)| *name)
    }

    fn parse(text: &str) -> Result<Self, Error> {
        Self::NAMES.iter().find(|(name, _)| *name == text.trim()).map(|(_, history)| *history).ok_or_else(|| {
            let names: Vec<&str> = Self::names().collect();
            Error::invalid("applicant.creditHistory", one_of(text, &names))
        })
    }

    fn code(self) -> f64 {
        f64::from(self as u8)
    }
}

/// The housings an applicant declares.
pub const HOUSING: &[&str] = &["own", "rent", "free"];
/// The purposes a credit is asked for.
pub const PURPOSES: &[&str] =
    &["car_new", "car_used", "furniture", "appliances", "education", "business", "repairs", "other"];

/// The declared fields as the request carries them.
#[derive(Clone, Debug, Default)]
pub struct DeclaredFields<'a> {
    pub duration_months: i32,
    pub credit_amount: f64,
    pub age: i32,
    pub existing_credits: Option<i32>,
    pub dependents: Option<i32>,
    pub employment_years: Option<f64>,
    pub credit_history: &'a str,
    pub housing: &'a str,
    pub purpose: &'a str,
    pub monthly_income: Option<f64>,
}

/// Whether `reais` is a whole number of centavos, as written in JSON (`1234.56` is, `0.001` and
/// `5000.0000001` are not): the shortest decimal that reads back as the same number, which is what
/// was written whenever a double can tell it from its neighbours, has at most two decimal places.
fn whole_cents(reais: f64) -> bool {
    let written = format!("{reais}");
    written.split_once('.').is_none_or(|(_, fraction)| fraction.len() <= 2)
}

impl Applicant {
    /// Checks every field; errors name it as `applicant.<field>`.
    pub fn parse(fields: &DeclaredFields<'_>) -> Result<Self, Error> {
        let range = |field: &str, value: i32, min: i32, max: i32| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else if value == 0 {
                // Zero is also what an absent field reads as: neither is taken.
                Err(Error::invalid(
                    format!("applicant.{field}"),
                    format!("is required, a whole number from {min} to {max} (0 reads as not given)"),
                ))
            } else {
                Err(Error::invalid(format!("applicant.{field}"), format!("must be between {min} and {max}")))
            }
        };
        let duration_months = range("durationMonths", fields.duration_months, 1, 120)?;
        let age = range("age", fields.age, 18, 120)?;
        // Zero is a count these take, so they are sent or missing, not zero when absent.
        let count = |field: &str, value: Option<i32>, max: i32| match value {
            Some(value) if (0..=max).contains(&value) => Ok(value),
            Some(_) => Err(Error::invalid(format!("applicant.{field}"), format!("must be between 0 and {max}"))),
            None => Err(Error::invalid(format!("applicant.{field}"), format!("is required, between 0 and {max}"))),
        };
        let existing_credits = count("existingCredits", fields.existing_credits, 10)?;
        let dependents = count("dependents", fields.dependents, 10)?;
        let amounts = [
            ("creditAmount", Some(fields.credit_amount)),
            ("employmentYears", fields.employment_years),
            ("monthlyIncome", fields.monthly_income),
        ];
        if let Some((field, _)) = amounts.iter().find(|(_, value)| value.is_some_and(|value| !value.is_finite())) {
            return Err(Error::invalid(format!("applicant.{field}"), "must be a finite number, not NaN or infinity"));
        }
        if fields.credit_amount == 0.0 {
            return Err(Error::invalid("applicant.creditAmount", "is required, above 0 and at most 10,000,000 reais"));
        }
        if !fields.credit_amount.is_finite() || fields.credit_amount < 0.0 || fields.credit_amount > 10_000_000.0 {
            return Err(Error::invalid("applicant.creditAmount", "must be above 0 and at most 10,000,000 reais"));
        }
        if !whole_cents(fields.credit_amount) {
            return Err(Error::invalid("applicant.creditAmount", "must be in reais with at most two decimal places"));
        }
        if let Some(years) = fields.employment_years
            && (!years.is_finite() || years < 0.0)
        {
            return Err(Error::invalid(
                "applicant.employmentYears",
                "must be a number of years from 0, or absent when unemployed",
            ));
        }
        // Work in Brazil begins at 14 at the earliest, as an apprentice.
        if let Some(years) = fields.employment_years
            && years > f64::from(age) - MIN_WORKING_AGE
        {
            return Err(Error::invalid(
                "applicant.employmentYears",
                format!("cannot exceed the applicant's age less {MIN_WORKING_AGE} (age {age})"),
            ));
        }
        if let Some(income) = fields.monthly_income
            && (!income.is_finite() || income <= 0.0 || income > 10_000_000.0)
        {
            return Err(Error::invalid("applicant.monthlyIncome", "must be above 0 and at most 10,000,000 reais"));
        }
        if let Some(income) = fields.monthly_income
            && !whole_cents(income)
        {
            return Err(Error::invalid("applicant.monthlyIncome", "must be in reais with at most two decimal places"));
        }
        let housing = fields.housing.trim();
        if !HOUSING.contains(&housing) {
            return Err(Error::invalid("applicant.housing", one_of(housing, HOUSING)));
        }
        let purpose = fields.purpose.trim();
        if !PURPOSES.contains(&purpose) {
            return Err(Error::invalid("applicant.purpose", one_of(purpose, PURPOSES)));
        }
        Ok(Self {
            duration_months,
            credit_amount: fields.credit_amount,
            age,
            existing_credits,
            dependents,
            employment_years: fields.employment_years,
            credit_history: CreditHistory::parse(fields.credit_history)?,
            housing_own: housing == "own",
            purpose_car: purpose.starts_with("car_"),
            monthly_income: fields.monthly_income,
        })
    }

    fn employment_code(&self) -> f64 {
        match self.employment_years {
            None => 0.0,
            Some(years) if years < 1.0 => 1.0,
            Some(years) if years < 4.0 => 2.0,
            Some(years) if years < 7.0 => 3.0,
            Some(_) => 4.0,
        }
    }
}

/// What the customer's ingested data shows over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct BankSummary {
    pub has_checking_account: bool,
    /// Average end-of-day checking balance, in cents.
    pub average_balance_cents: i64,
    pub overdraft_days: i32,
    /// Of the window's three 30-day months, those with a salary credit (see [`AccountSummary::salaries`]).
    pub income_months: i32,
    /// Salary credits of the window ÷ 3, in cents.
    pub average_monthly_income_cents: i64,
    pub has_savings_account: bool,
    pub savings_balance_cents: i64,
    pub window_days: i32,
}

/// What one account's data shows over the window ending at its balance, kept with the account
/// at each ingestion so that a score reads no transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    /// End-of-day balances walking back from the balance: `[0]` at the balance's time, `[d]` `d`
    /// days before, in cents.
    pub daily_balances: Vec<i64>,
    /// Salary credits of the three 30-day periods before the balance, newest first, in cents (a
    /// salary up to [`PAYDAY_SLACK_DAYS`] before a period that has none is that period's).
    pub salaries: [i64; 3],
}

impl AccountSummary {
    /// The summary of `account` from `transactions` (any accounts'); `None` without a balance.
    pub fn of(account: &StoredAccount, transactions: &[StoredTransaction]) -> Option<Self> {
        let (balance, at) = (account.balance_cents?, account.balance_at?);
        let own: Vec<&StoredTransaction> = transactions
            .iter()
            .filter(|t| t.belongs_to(account) && t.booked_at <= at && t.booked_at > at - Duration::days(WINDOW_DAYS))
            .collect();
        let daily_balances = (0..WINDOW_DAYS)
            .map(|day| {
                let day_end = at - Duration::days(day);
                clamped_sum(
                    std::iter::once(balance)
                        .chain(own.iter().filter(|t| t.booked_at > day_end).map(|t| -t.signed_cents())),
                )
            })
            .collect();
        let salaries = transactions.iter().filter(|t| {
            t.belongs_to(account)
                && t.is_salary()
                && t.booked_at <= at
                && t.booked_at > at - Duration::days(SUMMARY_DAYS)
        });
        Some(Self { daily_balances, salaries: salary_periods(at, salaries.map(|t| (t.booked_at, t.amount_cents))) })
    }
}

/// The salary credits of the three 30-day periods before `at`, newest first. Each period, newest
/// first, takes the newest salary not taken yet from its own days, or, with none there, from the
/// [`PAYDAY_SLACK_DAYS`] before them, so that a payday that moved counts for its month and no salary
/// counts for two; salaries no period took count for the period they fall in, those of the slack
/// before the window for none.
fn salary_periods(at: DateTime<Utc>, salaries: impl Iterator<Item = (DateTime<Utc>, i64)>) -> [i64; 3] {
    let mut salaries: Vec<(DateTime<Utc>, i64, bool)> = salaries.map(|(when, cents)| (when, cents, false)).collect();
    salaries.sort_by_key(|(when, _, _)| std::cmp::Reverse(*when));
    let mut periods = [0i64; 3];
    for (period, total) in periods.iter_mut().enumerate() {
        let end = at - Duration::days(30 * period as i64);
        let start = end - Duration::days(30);
        let early = start - Duration::days(PAYDAY_SLACK_DAYS);
        let untaken_within = |salaries: &[(DateTime<Utc>, i64, bool)], from: DateTime<Utc>, to: DateTime<Utc>| {
            salaries.iter().position(|(when, _, taken)| !taken && *when > from && *when <= to)
        };
        let found = untaken_within(&salaries, start, end).or_else(|| untaken_within(&salaries, early, start));
        if let Some(index) = found {
            salaries[index].2 = true;
            *total = total.saturating_add(salaries[index].1);
        }
    }
    for (when, cents, _) in salaries.iter().filter(|(_, _, taken)| !taken) {
        let period = (at - *when).num_seconds().div_euclid(30 * 86_400);
        if let Some(total) = usize::try_from(period).ok().and_then(|period| periods.get_mut(period)) {
            *total = total.saturating_add(*cents);
        }
    }
    periods
}

impl BankSummary {
    /// The summary of `accounts` and their `transactions` (see [`AccountSummary::of`]).
    pub fn of(accounts: &[StoredAccount], transactions: &[StoredTransaction]) -> Self {
        let summaries: Vec<(&StoredAccount, AccountSummary)> = accounts
            .iter()
            .filter_map(|account| AccountSummary::of(account, transactions).map(|summary| (account, summary)))
            .collect();
        Self::combine(summaries.iter().map(|(account, summary)| (*account, summary)))
    }

    /// The summary of accounts whose own summaries were kept at ingestion; an account without
    /// one (no balance fetched) does not count.
    pub fn of_stored(accounts: &[StoredAccount]) -> Self {
        Self::combine(accounts.iter().filter_map(|account| account.summary.as_ref().map(|summary| (account, summary))))
    }

    /// The accounts' summaries over one window, ending at the latest balance. An account whose
    /// balance is older than that is shifted by whole days (its oldest day repeats, its newest
    /// fills the days after its balance); its salaries keep their 30-day periods.
    fn combine<'a>(accounts: impl Iterator<Item = (&'a StoredAccount, &'a AccountSummary)> + Clone) -> Self {
        let end = accounts.clone().filter_map(|(account, _)| account.balance_at).max().unwrap_or_else(Utc::now);
        let checking: Vec<_> =
            accounts.clone().filter(|(account, _)| CHECKING.contains(&account.kind.as_str())).collect();
        let savings: Vec<_> = accounts.clone().filter(|(account, _)| account.kind == SAVINGS).collect();
        let mut total_by_day = vec![0i64; WINDOW_DAYS as usize];
        for (account, summary) in &checking {
            let offset = account.balance_at.map_or(0, |at| (end - at).num_days().max(0));
            let last = summary.daily_balances.len().saturating_sub(1);
            for (day, total) in total_by_day.iter_mut().enumerate() {
                let index = usize::try_from((day as i64 - offset).max(0)).unwrap_or(0).min(last);
                *total = total.saturating_add(summary.daily_balances.get(index).copied().unwrap_or(0));
            }
        }
        let overdraft_days = if checking.is_empty() {
            0
        } else {
            i32::try_from(total_by_day.iter().filter(|balance| **balance < 0).count()).unwrap_or(i32::MAX)
        };
        let average_balance_cents =
            if checking.is_empty() { 0 } else { rounded_div(clamped_sum(total_by_day.iter().copied()), WINDOW_DAYS) };
        let mut salaries = [0i64; 3];
        for (_, summary) in checking.iter().chain(savings.iter()) {
            for (total, salary) in salaries.iter_mut().zip(summary.salaries) {
                *total = total.saturating_add(salary);
            }
        }
        Self {
            has_checking_account: !checking.is_empty(),
            average_balance_cents,
            overdraft_days,
            income_months: i32::try_from(salaries.iter().filter(|salary| **salary > 0).count()).unwrap_or(0),
            average_monthly_income_cents: rounded_div(clamped_sum(salaries.iter().copied()), 3),
            has_savings_account: !savings.is_empty(),
            savings_balance_cents: clamped_sum(savings.iter().filter_map(|(account, _)| account.balance_cents)),
            window_days: WINDOW_DAYS as i32,
        }
    }

    fn checking_code(&self) -> f64 {
        if !self.has_checking_account {
            0.0
        } else if self.average_balance_cents < 0 || self.overdraft_days > OVERDRAFT_DAYS_LIMIT {
            1.0
        } else if self.average_balance_cents >= 200_00 || self.income_months == 3 {
            3.0
        } else {
            2.0
        }
    }

    fn savings_code(&self) -> f64 {
        let balance = self.savings_balance_cents;
        if !self.has_savings_account {
            0.0
        } else if balance < 100_00 {
            1.0
        } else if balance < 500_00 {
            2.0
        } else if balance < 1_000_00 {
            3.0
        } else {
            4.0
        }
    }
}

/// `sum / count` to the nearest whole cent, halves away from zero (an average of amounts in cents).
fn rounded_div(sum: i64, count: i64) -> i64 {
    let half = if sum < 0 { -(count / 2) } else { count / 2 };
    sum.saturating_add(half) / count
}

/// The model's input, by feature name: the declared data and the bank summary combined.
pub fn features(applicant: &Applicant, bank: &BankSummary) -> Result<HashMap<String, f64>, Error> {
    let income_cents = if bank.income_months > 0 && bank.average_monthly_income_cents > 0 {
        i128::from(bank.average_monthly_income_cents)
    } else {
        let declared = applicant.monthly_income.ok_or_else(|| {
            Error::invalid("applicant.monthlyIncome", "is required when the bank data shows no salary")
        })?;
        (declared * 100.0).round() as i128
    };
    // In whole cents, without a division: an instalment of exactly 20% of the income is not below
    // 20%, which a quotient of floating-point reais can miss by its last bit.
    let amount_cents = (applicant.credit_amount * 100.0).round() as i128;
    let months = i128::from(applicant.duration_months);
    let below = |tenths: i128| amount_cents * 10 < tenths * months * income_cents;
    let installment_rate = if below(1) {
        1.0
    } else if below(2) {
        2.0
    } else if below(3) {
        3.0
    } else {
        4.0
    };
    Ok(HashMap::from([
        ("duration_months".to_owned(), f64::from(applicant.duration_months)),
        ("credit_amount".to_owned(), applicant.credit_amount),
        ("installment_rate".to_owned(), installment_rate),
        ("age".to_owned(), f64::from(applicant.age)),
        ("existing_credits".to_owned(), f64::from(applicant.existing_credits)),
        ("dependents".to_owned(), f64::from(applicant.dependents)),
        ("checking_status".to_owned(), bank.checking_code()),
        ("savings_status".to_owned(), bank.savings_code()),
        ("employment_years".to_owned(), applicant.employment_code()),
        ("credit_history".to_owned(), applicant.credit_history.code()),
        ("housing_own".to_owned(), f64::from(u8::from(applicant.housing_own))),
        ("purpose_car".to_owned(), f64::from(u8::from(applicant.purpose_car))),
    ]))
}

/// The applicant's field (by its JSON name) a model feature is read from, for refusals that name
/// what the caller sent; `None` for the features read from the bank data.
pub fn applicant_field(feature: &str) -> Option<&'static str> {
    Some(match feature {
        "duration_months" => "applicant.durationMonths",
        // The instalment's share of the income follows from the amount asked for.
        "credit_amount" | "installment_rate" => "applicant.creditAmount",
        "age" => "applicant.age",
        "existing_credits" => "applicant.existingCredits",
        "dependents" => "applicant.dependents",
        "employment_years" => "applicant.employmentYears",
        "credit_history" => "applicant.creditHistory",
        "housing_own" => "applicant.housing",
        "purpose_car" => "applicant.purpose",
        _ => return None,
    })
}

/// 0 (certain default) to 1000 (no risk).
pub fn score_of(probability_of_default: f64) -> i32 {
    ((1.0 - probability_of_default.clamp(0.0, 1.0)) * 1000.0).round() as i32
}

/// The model's features, in its input order.
pub const FEATURES: &[&str] = &[
    "duration_months",
    "credit_amount",
    "installment_rate",
    "age",
    "existing_credits",
    "dependents",
    "checking_status",
    "savings_status",
    "employment_years",
    "credit_history",
    "housing_own",
    "purpose_car",
];

/// The youngest age at which anyone may work in Brazil (as an apprentice).
const MIN_WORKING_AGE: f64 = 14.0;

/// A reason code and its words for a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub description: &'static str,
}

/// Where a feature's value makes its adverse words true: above or below the training mean, or
/// below or from a code of an ordinal feature.
#[derive(Clone, Copy)]
enum Adverse {
    AboveMean,
    BelowCode(f64),
    FromCode(f64),
    /// Words that hold whatever the value.
    Always,
}

/// A reason's code, its adverse words, where they hold, and neutral words for a value that raised
/// the risk from the other side (the model learns relations that are not monotone).
const WORDS: [(&str, &str, &str, Adverse, &str); 12] = [
    (
        "duration_months",
        "LOAN_DURATION",
        "The loan would be repaid over a long period.",
        Adverse::AboveMean,
        "The loan's repayment period.",
    ),
    ("credit_amount", "CREDIT_AMOUNT", "The amount asked for is high.", Adverse::AboveMean, "The amount asked for."),
    (
        "installment_rate",
        "INSTALMENT_SHARE",
        "The instalment would take a large share of your monthly income.",
        Adverse::AboveMean,
        "The share of your monthly income the instalment would take.",
    ),
    (
        "age",
        "APPLICANT_AGE",
        "Applicants of your age repaid less often in the data the model learned from.",
        Adverse::Always,
        "",
    ),
    (
        "existing_credits",
        "EXISTING_CREDITS",
        "You already hold several credits.",
        Adverse::AboveMean,
        "The number of credits you already hold.",
    ),
    ("dependents", "DEPENDENTS", "The number of people you provide for.", Adverse::Always, ""),
    (
        "checking_status",
        "CHECKING_BALANCE",
        "Your checking account balance has been low or negative.",
        Adverse::BelowCode(3.0),
        "Your checking account balance.",
    ),
    ("savings_status", "SAVINGS", "You hold little or nothing in savings.", Adverse::BelowCode(3.0), "Your savings."),
    (
        "employment_years",
        "EMPLOYMENT_TIME",
        "You have been in your present employment for a short time, or have none.",
        Adverse::BelowCode(2.0),
        "The time you have been in your present employment.",
    ),
    (
        "credit_history",
        "CREDIT_HISTORY",
        "Your credit history shows delays or credits at other institutions.",
        Adverse::FromCode(3.0),
        "Your credit history.",
    ),
    ("housing_own", "HOUSING", "You do not own your home.", Adverse::BelowCode(1.0), "Your housing."),
    ("purpose_car", "CREDIT_PURPOSE", "The purpose of the credit.", Adverse::Always, ""),
];

/// The reason code of `feature`.
pub fn code_of(feature: &str) -> Option<&'static str> {
    WORDS.iter().find(|words| words.0 == feature).map(|words| words.1)
}

/// The words of a reason, true for the customer's value: a decision's reasons are the features
/// whose values stand furthest from their most favourable ones, on whichever side; the adverse
/// words are used only where they hold.
#[derive(Clone, Debug)]
pub struct ReasonWords {
    means: HashMap<String, f64>,
}

impl ReasonWords {
    /// The words for the model with `manifest`.
    pub fn new(manifest: &Manifest) -> Self {
        Self { means: manifest.features.iter().map(|feature| (feature.name.clone(), feature.training_mean)).collect() }
    }

    /// The reason for `feature`, which raised the risk, at `value` (unknown for an erased
    /// decision: neutral words then, unless the adverse ones always hold); for a feature of an
    /// account the shared data does not hold (`withheld`), that it does not.
    pub fn reason(&self, feature: &str, value: Option<f64>, withheld: bool) -> Option<Reason> {
        let &(_, code, adverse, side, neutral) = WORDS.iter().find(|words| words.0 == feature)?;
        let holds = match (side, value, self.means.get(feature)) {
            (Adverse::Always, ..) => true,
            (Adverse::AboveMean, Some(value), Some(mean)) => value > *mean,
            (Adverse::BelowCode(code), Some(value), _) => value < code,
            (Adverse::FromCode(code), Some(value), _) => value >= code,
            _ => false,
        };
        let description = match feature {
            "checking_status" if withheld => "No checking account is among the data you shared.",
            "savings_status" if withheld => "No savings account is among the data you shared.",
            _ if holds => adverse,
            _ => neutral,
        };
        Some(Reason { code, description })
    }

    /// The reasons of a decision: the `features` it stored, with the values it scored and the
    /// features of the accounts its shared data did not hold (`withheld`).
    pub fn reasons(
        &self,
        features: &[String],
        values: &std::collections::BTreeMap<String, f64>,
        withheld: &[&str],
    ) -> Vec<Reason> {
        features
            .iter()
            .filter_map(|feature| {
                self.reason(feature, values.get(feature).copied(), withheld.contains(&feature.as_str()))
            })
            .collect()
    }
}

/// The codes of the features the data set codes.
const CODES: [(&str, &[f32]); 9] = [
    ("installment_rate", &[1.0, 2.0, 3.0, 4.0]),
    ("existing_credits", &[1.0, 2.0, 3.0, 4.0]),
    ("dependents", &[1.0, 2.0]),
    ("checking_status", &[0.0, 1.0, 2.0, 3.0]),
    ("savings_status", &[0.0, 1.0, 2.0, 3.0, 4.0]),
    ("employment_years", &[0.0, 1.0, 2.0, 3.0, 4.0]),
    ("credit_history", &[0.0, 1.0, 2.0, 3.0, 4.0]),
    ("housing_own", &[0.0, 1.0]),
    ("purpose_car", &[0.0, 1.0]),
];

/// The features whose code 0 is having no such account.
const ACCOUNTS: [&str; 2] = ["checking_status", "savings_status"];

/// The codes of `feature`, a coded feature; none for another.
pub fn codes_of(feature: &str) -> &'static [f32] {
    CODES.iter().find(|(name, _)| *name == feature).map_or(&[], |(_, codes)| codes)
}

/// The features of the accounts the customer's shared data does not hold: the checking status
/// without a checking account among them, the savings status without a savings account. The
/// data's applicants without such an account repaid best, but what a customer does not share is
/// not evidence that they have none: such a feature is scored at the code least favourable to
/// the applicant (see `least_favourable` in the service), so that an account left out of the
/// consents is never scored as the best there is.
pub fn withheld(bank: &BankSummary) -> Vec<&'static str> {
    withheld_of(bank.has_checking_account, bank.has_savings_account)
}

/// [`withheld`] for a decision's stored bank summary (`hasCheckingAccount`, `hasSavingsAccount`);
/// none for one without it (an erased decision's).
pub fn withheld_in(bank: &serde_json::Value) -> Vec<&'static str> {
    let held = |field: &str| bank.get(field).and_then(serde_json::Value::as_bool);
    match (held("hasCheckingAccount"), held("hasSavingsAccount")) {
        (Some(checking), Some(savings)) => withheld_of(checking, savings),
        _ => Vec::new(),
    }
}

fn withheld_of(has_checking_account: bool, has_savings_account: bool) -> Vec<&'static str> {
    [("checking_status", has_checking_account), ("savings_status", has_savings_account)]
        .into_iter()
        .filter(|(_, held)| !held)
        .map(|(feature, _)| feature)
        .collect()
}

/// The highest credit history code without delays or credits at other institutions.
const CLEAN_HISTORY: f32 = 2.0;

/// The values each feature of `row` is tried at to find its most favourable one, in the model's
/// order: a coded feature's codes, any other feature's training quantiles (the manifest's
/// `bin_edges`). A customer who holds a checking or savings account is compared with holders of
/// a balance at least as good (codes from their own): the data's applicants without one repaid
/// best, which says nothing of the balance a customer keeps, and the model, whose relations are not
/// monotone, scores some higher balances below lower ones, which no balance's reason should rest on
/// either. A credit history is compared with the histories without delays
/// or credits elsewhere (codes to [`CLEAN_HISTORY`]): the data's applicants with a critical account
/// repaid more often, a trait of the data that no history's reason should rest on.
pub fn alternatives(manifest: &Manifest, row: &[f32], withheld: &[&str]) -> Vec<Vec<f32>> {
    manifest
        .features
        .iter()
        .zip(row)
        .map(|(feature, value)| match CODES.iter().find(|(name, _)| *name == feature.name) {
            // An account the shared data does not hold, scored at its least favourable code, is
            // compared with every code: sharing it is what would move the score.
            Some((name, codes)) if withheld.contains(name) => codes.to_vec(),
            Some((name, codes)) if ACCOUNTS.contains(name) && *value > 0.0 => {
                codes.iter().copied().filter(|code| code >= value).collect()
            }
            Some((name, codes)) if *name == "credit_history" => {
                codes.iter().copied().filter(|code| *code <= CLEAN_HISTORY).collect()
            }
            Some((_, codes)) => codes.to_vec(),
            None => feature.bin_edges.iter().map(|edge| *edge as f32).collect(),
        })
        .collect()
}

/// How far each feature's value stands from its most favourable one: the probability of default
/// minus the lowest one with that feature alone at any of its `alternatives` (whose outputs are
/// `outputs`, flattened in order); zero where the value is the most favourable. The method of
/// points below the best: unlike a comparison with the training mean, it names a value that sits
/// at the mean (an overdrawn account, whose code is the data's mean).
pub fn shortfalls(
    manifest: &Manifest,
    probability: f64,
    alternatives: &[Vec<f32>],
    outputs: &[f64],
) -> Vec<(String, f64)> {
    let mut rest = outputs;
    manifest
        .features
        .iter()
        .zip(alternatives)
        .map(|(feature, values)| {
            let (own, after) = rest.split_at(values.len().min(rest.len()));
            rest = after;
            (feature.name.clone(), probability - own.iter().copied().fold(probability, f64::min))
        })
        .collect()
}

/// The features behind a decision's reasons, largest effect first, from how far each stands from
/// its most favourable value ([`shortfalls`]): only features that raised the probability of
/// default (pushed the score down). An account the shared data lacks (`withheld`) that raised it
/// is always among them, in its place by effect: sharing it is something the customer can do.
pub fn reasons(contributions: &[(String, f64)], withheld: &[&str]) -> Vec<String> {
    let mut raising: Vec<&(String, f64)> =
        contributions.iter().filter(|(feature, effect)| *effect > 0.0 && code_of(feature).is_some()).collect();
    raising.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let is_withheld = |feature: &str| withheld.contains(&feature);
    let mut room = MAX_REASONS.saturating_sub(raising.iter().filter(|(feature, _)| is_withheld(feature)).count());
    raising
        .into_iter()
        .filter(|(feature, _)| {
            let named = is_withheld(feature) || room > 0;
            if !is_withheld(feature) && room > 0 {
                room -= 1;
            }
            named
        })
        .map(|(feature, _)| feature.clone())
        .collect()
}

/// Money in cents as reais with two decimals: `-1250` → `"-12.50"`; sums of many amounts are
/// 128-bit, so that no total an institution's amounts add up to wraps.
pub fn reais(cents: impl Into<i128>) -> String {
    let cents: i128 = cents.into();
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

/// The sum of `cents`, held to the range of `i64` rather than wrapping.
pub fn clamped_sum(cents: impl Iterator<Item = i64>) -> i64 {
    let total: i128 = cents.map(i128::from).sum();
    i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX })
}

/// The first day of `month` (`yyyy-mm`) and of the month after.
pub fn month_bounds(month: &str) -> Result<(NaiveDate, NaiveDate), Error> {
    let invalid = || Error::invalid("month", "must be a month as yyyy-mm, e.g. 2026-10");
    let (year, number) = month.split_once('-').ok_or_else(invalid)?;
    if year.len() != 4 || number.len() != 2 || !year.bytes().chain(number.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let year: i32 = year.parse().map_err(|_| invalid())?;
    if !(1900..=9998).contains(&year) {
        return Err(Error::invalid("month", "must be a month between 1900-01 and 9998-12"));
    }
    let number: u32 = number.parse().map_err(|_| invalid())?;
    let first = NaiveDate::from_ymd_opt(year, number, 1).ok_or_else(invalid)?;
    let next = if number == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, number + 1, 1)
    };
    Ok((first, next.ok_or_else(invalid)?))
}

/// The features as stored and shown, sorted by name.
pub fn sorted(features: &HashMap<String, f64>) -> BTreeMap<String, f64> {
    features.iter().map(|(name, value)| (name.clone(), *value)).collect()
}

/// When `at` falls, as a date in UTC.
pub fn day_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// Why `given` is not one of `names`: left out, or another word.
fn one_of(given: &str, names: &[&str]) -> String {
    if given.trim().is_empty() {
        format!("is required: one of {}", names.join(", "))
    } else {
        format!("must be one of {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rounded_to_the_nearest_cent() {
        let cases =
            [(0, 90, 0), (44, 90, 0), (45, 90, 1), (-44, 90, 0), (-45, 90, -1), (1, 3, 0), (2, 3, 1), (-2, 3, -1)];
        for (sum, count, expected) in cases {
            assert_eq!(rounded_div(sum, count), expected, "{sum} / {count}");
        }
        assert_eq!(rounded_div(31_853_686, 90), 353_930, "R$ 3,539.2984… is R$ 3,539.30");
    }

    fn applicant() -> Applicant {
        Applicant::parse(&DeclaredFields {
            duration_months: 12,
            credit_amount: 1200.0,
            age: 30,
            existing_credits: Some(1),
            dependents: Some(1),
            employment_years: Some(2.0),
            credit_history: "paid_duly",
            housing: "own",
            purpose: "car_used",
            monthly_income: Some(1000.0),
        })
        .unwrap()
    }

    fn account(kind: &str, balance: i64, at: DateTime<Utc>) -> StoredAccount {
        StoredAccount {
            institution: "bank".into(),
            account_id: kind.into(),
            consent_id: "c".into(),
            kind: kind.into(),
            brand_name: "Banco".into(),
            number: "1".into(),
            balance_cents: Some(balance),
            balance_at: Some(at),
            summary: None,
            fetched_by: vec!["c".into()],
            booked: (crate::openfinance::booking_window(at).0, crate::openfinance::brasilia_date(at)),
        }
    }

    fn transaction(
        account: &str,
        id: &str,
        credit: bool,
        kind: &str,
        cents: i64,
        at: DateTime<Utc>,
    ) -> StoredTransaction {
        StoredTransaction {
            institution: "bank".into(),
            account_id: account.into(),
            transaction_id: id.into(),
            credit,
            kind: kind.into(),
            name: "x".into(),
            amount_cents: cents,
            booked_at: at,
        }
    }

    #[test]
    fn declared_fields_are_checked_and_named() {
        let good = DeclaredFields {
            duration_months: 12,
            credit_amount: 1000.0,
            age: 30,
            credit_history: "paid_duly",
            housing: "rent",
            purpose: "other",
            existing_credits: Some(1),
            dependents: Some(2),
            ..DeclaredFields::default()
        };
        assert!(Applicant::parse(&good).is_ok());
        assert!(Applicant::parse(&DeclaredFields { age: 30, employment_years: Some(16.0), ..good.clone() }).is_ok());
        // Up to the age less 14, past 80 years for the oldest; no credits and no dependents are counts.
        assert!(Applicant::parse(&DeclaredFields { age: 100, employment_years: Some(86.0), ..good.clone() }).is_ok());
        let none = DeclaredFields { existing_credits: Some(0), dependents: Some(0), ..good.clone() };
        assert!(Applicant::parse(&none).is_ok());
        for reais in [0.01, 0.1, 1234.56, 5000.07, 73_695.99, 9_999_999.99, 10_000_000.0, 100.3] {
            assert!(Applicant::parse(&DeclaredFields { credit_amount: reais, ..good.clone() }).is_ok(), "{reais}");
            assert!(
                Applicant::parse(&DeclaredFields { monthly_income: Some(reais), ..good.clone() }).is_ok(),
                "{reais}"
            );
        }
        for reais in [
            0.001,
            1e-7,
            1e-320,
            1000.005,
            5000.005,
            15_000.999,
            73_695.999,
            9_999_999.991,
            5000.0000001,
            5000.00000001,
            0.0100000001,
        ] {
            let amount = Applicant::parse(&DeclaredFields { credit_amount: reais, ..good.clone() });
            assert!(matches!(&amount, Err(Error::InvalidArgument { field, .. }) if field == "applicant.creditAmount"));
            let income = Applicant::parse(&DeclaredFields { monthly_income: Some(reais), ..good.clone() });
            assert!(matches!(&income, Err(Error::InvalidArgument { field, .. }) if field == "applicant.monthlyIncome"));
        }
        let cases: [(DeclaredFields<'_>, &str); 12] = [
            (DeclaredFields { age: 18, employment_years: Some(80.0), ..good.clone() }, "applicant.employmentYears"),
            (DeclaredFields { age: 100, employment_years: Some(86.5), ..good.clone() }, "applicant.employmentYears"),
            (DeclaredFields { employment_years: Some(-1.0), ..good.clone() }, "applicant.employmentYears"),
            (DeclaredFields { dependents: Some(11), ..good.clone() }, "applicant.dependents"),
            (DeclaredFields { age: 30, employment_years: Some(16.5), ..good.clone() }, "applicant.employmentYears"),
            (DeclaredFields { duration_months: 0, ..good.clone() }, "applicant.durationMonths"),
            (DeclaredFields { age: 17, ..good.clone() }, "applicant.age"),
            (DeclaredFields { credit_amount: f64::NAN, ..good.clone() }, "applicant.creditAmount"),
            (DeclaredFields { credit_history: "great", ..good.clone() }, "applicant.creditHistory"),
            (DeclaredFields { housing: "boat", ..good.clone() }, "applicant.housing"),
            (DeclaredFields { monthly_income: Some(-1.0), ..good.clone() }, "applicant.monthlyIncome"),
            (DeclaredFields { monthly_income: Some(1e20), ..good.clone() }, "applicant.monthlyIncome"),
        ];
        for (fields, expected) in cases {
            match Applicant::parse(&fields) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, expected),
                other => panic!("expected {expected} refused, got {other:?}"),
            }
        }
        // Absent fields read as zero (or none), and are told to be required.
        for fields in [
            DeclaredFields { age: 0, ..good.clone() },
            DeclaredFields { credit_amount: 0.0, ..good.clone() },
            DeclaredFields { duration_months: 0, ..good.clone() },
            DeclaredFields { existing_credits: None, ..good.clone() },
            DeclaredFields { dependents: None, ..good.clone() },
            DeclaredFields { housing: "", ..good.clone() },
            DeclaredFields { purpose: " ", ..good.clone() },
            DeclaredFields { credit_history: "", ..good.clone() },
        ] {
            let error = Applicant::parse(&fields).unwrap_err().to_string();
            assert!(error.contains("is required"), "{error}");
        }
        // A value that is no finite number is told so, not given the range it is outside of.
        for fields in [
            DeclaredFields { credit_amount: f64::NAN, ..good.clone() },
            DeclaredFields { monthly_income: Some(f64::INFINITY), ..good.clone() },
            DeclaredFields { employment_years: Some(f64::NEG_INFINITY), ..good.clone() },
        ] {
            let error = Applicant::parse(&fields).unwrap_err().to_string();
            assert!(error.contains("must be a finite number, not NaN or infinity"), "{error}");
        }
        let error = Applicant::parse(&DeclaredFields { age: 17, ..good.clone() }).unwrap_err().to_string();
        assert!(!error.contains("is required") && error.contains("between 18 and 120"), "{error}");
        let error = Applicant::parse(&DeclaredFields { housing: "castle", ..good.clone() }).unwrap_err();
        assert!(error.to_string().contains("must be one of own, rent, free"), "{error}");
    }

    #[test]
    fn an_instalment_at_a_bound_is_not_below_it_whatever_its_cents() {
        let none = BankSummary::of(&[], &[]);
        // 552.61 / 2763.05 is 0.19999999999999998 in floating point: exactly 20% all the same.
        for (amount, months, rate) in [(552.61, 1, 3.0), (552.60, 1, 2.0), (8289.15, 10, 4.0), (2763.05, 10, 2.0)] {
            let mut declared = applicant();
            declared.credit_amount = amount;
            declared.duration_months = months;
            declared.monthly_income = Some(2763.05);
            assert_eq!(features(&declared, &none).unwrap()["installment_rate"], rate, "{amount} over {months} months");
        }
    }

    #[test]
    fn sums_of_amounts_past_the_range_of_cents_are_held_to_it() {
        assert_eq!(clamped_sum([1_250, -250, 7].into_iter()), 1_007);
        assert_eq!(clamped_sum([i64::MAX, 1, 1].into_iter()), i64::MAX);
        assert_eq!(clamped_sum([i64::MIN, -1].into_iter()), i64::MIN);
        assert_eq!(clamped_sum([i64::MAX, 1, -2].into_iter()), i64::MAX - 1, "only the total is held");
        assert_eq!(reais(i128::from(i64::MAX) * 3), "276701161105643274.21");
    }

    #[test]
    fn bank_features_follow_balances_overdrafts_and_salaries() {
        let now = Utc::now();
        let none = BankSummary::of(&[], &[]);
        let f = features(&applicant(), &none).unwrap();
        assert_eq!((f["checking_status"], f["savings_status"]), (0.0, 0.0));
        // 1200 / 12 = 100 a month against 1000 declared: 10%.
        assert_eq!(f["installment_rate"], 2.0);

        let overdrawn = BankSummary::of(&[account("CONTA_DEPOSITO_A_VISTA", -100_00, now)], &[]);
        assert_eq!(overdrawn.overdraft_days, 90);
        assert_eq!(features(&applicant(), &overdrawn).unwrap()["checking_status"], 1.0);

        // Balance 100 today, but a 150 credit yesterday: overdrawn (-50) for the 89 days before.
        let recovering = BankSummary::of(
            &[account("CONTA_DEPOSITO_A_VISTA", 100_00, now)],
            &[transaction("CONTA_DEPOSITO_A_VISTA", "t", true, "PIX", 150_00, now - Duration::hours(12))],
        );
        assert_eq!(recovering.overdraft_days, 89);
        assert!(recovering.average_balance_cents < 0);

        // A salary each month, spent within the hour: the balance stays at 150, under R$ 200.
        let salaried: Vec<StoredTransaction> = (0..3)
            .flat_map(|month| {
                let at = now - Duration::days(5 + 30 * month) - Duration::hours(2);
                let account = "CONTA_DEPOSITO_A_VISTA";
                [
                    transaction(account, &format!("s{month}"), true, "FOLHA_PAGAMENTO", 3000_00, at),
                    transaction(account, &format!("d{month}"), false, "PIX", 3000_00, at + Duration::hours(1)),
                ]
            })
            .collect();
        let steady = BankSummary::of(
            &[account("CONTA_DEPOSITO_A_VISTA", 150_00, now), account(SAVINGS, 700_00, now)],
            &salaried,
        );
        assert_eq!(steady.income_months, 3);
        assert_eq!(steady.overdraft_days, 0);
        assert!(steady.average_balance_cents < 200_00);
        assert_eq!(steady.average_monthly_income_cents, 3000_00);
        let f = features(&applicant(), &steady).unwrap();
        assert_eq!((f["checking_status"], f["savings_status"]), (3.0, 3.0));
        // 100 a month against the 3000 salary seen, not the 1000 declared: under 10%.
        assert_eq!(f["installment_rate"], 1.0);
    }

    #[test]
    fn a_salary_counts_for_its_month_when_its_payday_moved() {
        let day = |text: &str| format!("{text}T12:00:00Z").parse::<DateTime<Utc>>().unwrap();
        let periods = |at: &str, paid: &[&str]| salary_periods(day(at), paid.iter().map(|when| (day(when), 1000_00)));
        // Paid on the 3rd, the balance on the 2nd at noon: March's salary is 30 days back, at the
        // edge of the first 30-day period, February's in the second, January's in the third.
        assert_eq!(periods("2026-04-02", &["2026-03-03", "2026-02-03", "2026-01-03"]), [1000_00; 3]);
        // Paid on the last day of the month, or a day early for a weekend.
        assert_eq!(periods("2026-05-15", &["2026-04-30", "2026-03-31", "2026-02-27"]), [1000_00; 3]);
        // Every 30 days, as the periods are.
        assert_eq!(periods("2026-04-02", &["2026-03-28", "2026-02-26", "2026-01-27"]), [1000_00; 3]);
        // An advance mid-month and the rest at its end: every salary counts, each month has one.
        assert_eq!(
            periods(
                "2026-04-02",
                &["2026-03-30", "2026-03-15", "2026-02-27", "2026-02-13", "2026-01-30", "2026-01-15"]
            ),
            [2000_00; 3]
        );
        // A month without a salary stays without one: no salary counts for two months.
        assert_eq!(periods("2026-04-02", &["2026-03-20", "2026-01-20"]), [1000_00, 0, 1000_00]);
        assert_eq!(periods("2026-04-02", &["2026-03-31", "2026-03-01"]), [1000_00, 1000_00, 0]);
        // Before the window, only within the slack and only for a period that has none.
        assert_eq!(periods("2026-04-02", &["2026-03-20", "2026-02-20", "2025-12-31"]), [1000_00, 1000_00, 1000_00]);
        assert_eq!(periods("2026-04-02", &["2026-03-20", "2026-02-20", "2026-01-20", "2025-12-31"]), [1000_00; 3]);
        assert_eq!(periods("2026-04-02", &["2026-03-20", "2026-02-20", "2025-12-25"]), [1000_00, 1000_00, 0]);
        // Nothing after the balance.
        assert_eq!(periods("2026-04-02", &["2026-04-03"]), [0; 3]);
    }

    #[test]
    fn summaries_kept_at_ingestion_give_the_same_bank_summary() {
        let now = Utc::now();
        let accounts = [account("CONTA_DEPOSITO_A_VISTA", 80_00, now), account(SAVINGS, 450_00, now)];
        let transactions: Vec<StoredTransaction> = (0..40)
            .map(|n| {
                let at = now - Duration::hours(50 * n + 3);
                let kind = if n % 10 == 0 { "FOLHA_PAGAMENTO" } else { "PIX" };
                transaction("CONTA_DEPOSITO_A_VISTA", &format!("t{n}"), n % 10 == 0, kind, 10_00 + n * 7, at)
            })
            .collect();
        let stored: Vec<StoredAccount> = accounts
            .iter()
            .map(|a| StoredAccount { summary: AccountSummary::of(a, &transactions), ..a.clone() })
            .collect();
        let direct = BankSummary::of(&accounts, &transactions);
        assert_eq!(BankSummary::of_stored(&stored), direct);
        assert_eq!(direct.income_months, 3, "{direct:?}");
        // An account without a balance fetched does not count.
        let unknown = StoredAccount { balance_cents: None, balance_at: None, summary: None, ..accounts[0].clone() };
        assert!(!BankSummary::of_stored(&[unknown]).has_checking_account);
    }

    #[test]
    fn reasons_name_what_raised_the_risk_in_order() {
        let contributions = vec![
            ("age".to_owned(), -0.05),
            ("checking_status".to_owned(), 0.20),
            ("duration_months".to_owned(), 0.07),
            ("savings_status".to_owned(), 0.07),
            ("credit_amount".to_owned(), 0.01),
            ("housing_own".to_owned(), 0.001),
        ];
        let features = reasons(&contributions, &[]);
        assert_eq!(features, ["checking_status", "duration_months", "savings_status", "credit_amount"]);
        // An account the shared data lacks that raised the probability is named whatever its rank.
        let lacking: Vec<(String, f64)> = [
            ("employment_years", 0.30),
            ("checking_status", 0.20),
            ("duration_months", 0.07),
            ("credit_amount", 0.05),
            ("savings_status", 0.002),
        ]
        .into_iter()
        .map(|(feature, effect)| (feature.to_owned(), effect))
        .collect();
        assert_eq!(reasons(&lacking, &[]), ["employment_years", "checking_status", "duration_months", "credit_amount"]);
        let named = ["employment_years", "checking_status", "duration_months", "savings_status"];
        assert_eq!(reasons(&lacking, &["savings_status"]), named);
        assert_eq!(reasons(&lacking, &["checking_status", "savings_status"]), named);
        assert_eq!(score_of(0.2), 800);
        assert_eq!(reais(-1250), "-12.50");
        assert_eq!(reais(5), "0.05");
    }

    fn manifest() -> Manifest {
        serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/credit-risk/1/manifest.json"))
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn each_feature_is_tried_at_its_codes_or_quantiles() {
        let manifest = manifest();
        let position = |name: &str| manifest.features.iter().position(|feature| feature.name == name).unwrap();
        let mut row = vec![1.0_f32; manifest.features.len()];
        row[position("checking_status")] = 0.0;
        row[position("savings_status")] = 2.0;
        let tried = alternatives(&manifest, &row, &[]);
        assert_eq!(tried.len(), manifest.features.len());
        // Without a checking account: every code; a savings holder: holders of as much or more only.
        assert_eq!(tried[position("checking_status")], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(tried[position("savings_status")], [2.0, 3.0, 4.0]);
        assert_eq!(tried[position("housing_own")], [0.0, 1.0]);
        assert_eq!(tried[position("credit_history")], [0.0, 1.0, 2.0], "clean histories only");
        let amount = position("credit_amount");
        let edges: Vec<f32> = manifest.features[amount].bin_edges.iter().map(|edge| *edge as f32).collect();
        assert_eq!(tried[amount], edges);
        row[position("checking_status")] = 1.0;
        assert_eq!(alternatives(&manifest, &row, &[])[position("checking_status")], [1.0, 2.0, 3.0]);
        // The best balance is compared with nothing else: the model scores it below some lower
        // balances, and no reason should tell a customer that keeping more lowered their score.
        row[position("checking_status")] = 3.0;
        row[position("savings_status")] = 4.0;
        assert_eq!(alternatives(&manifest, &row, &[])[position("checking_status")], [3.0]);
        assert_eq!(alternatives(&manifest, &row, &[])[position("savings_status")], [4.0]);
        // An account the shared data does not hold, scored at its least favourable code: every code.
        let withheld = alternatives(&manifest, &row, &["checking_status", "savings_status"]);
        assert_eq!(withheld[position("checking_status")], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(withheld[position("savings_status")], [0.0, 1.0, 2.0, 3.0, 4.0]);
        for (feature, _) in CODES {
            assert!(manifest.features.iter().any(|known| known.name == feature), "{feature}");
        }
    }

    #[test]
    fn a_shortfall_is_the_distance_to_the_most_favourable_value() {
        let manifest = manifest();
        let alternatives: Vec<Vec<f32>> =
            manifest.features.iter().enumerate().map(|(index, _)| vec![0.0; index % 3]).collect();
        // Feature 1's one alternative lowers the probability by 0.1; feature 2's two raise it,
        // then lower it by 0.25; the others, with none or at no lower value, fall short by nothing.
        let mut outputs = Vec::new();
        for (index, values) in alternatives.iter().enumerate() {
            outputs.extend(match index {
                1 => vec![0.4],
                2 => vec![0.9, 0.25],
                _ => vec![0.7; values.len()],
            });
        }
        let shortfalls = shortfalls(&manifest, 0.5, &alternatives, &outputs);
        assert_eq!(shortfalls.len(), manifest.features.len());
        assert_eq!(shortfalls[0], (manifest.features[0].name.clone(), 0.0));
        assert!((shortfalls[1].1 - 0.1).abs() < 1e-12 && (shortfalls[2].1 - 0.25).abs() < 1e-12, "{shortfalls:?}");
        assert!(shortfalls[3..].iter().all(|(_, shortfall)| *shortfall == 0.0), "{shortfalls:?}");
    }

    #[test]
    fn a_reason_uses_its_adverse_words_only_where_they_hold() {
        let words = ReasonWords::new(&manifest());
        let description = |feature: &str, value: Option<f64>| words.reason(feature, value, false).unwrap().description;
        assert_eq!(description("housing_own", Some(0.0)), "You do not own your home.");
        assert_eq!(description("housing_own", Some(1.0)), "Your housing.");
        assert_eq!(description("credit_amount", Some(50_000.0)), "The amount asked for is high.");
        assert_eq!(description("credit_amount", Some(100.0)), "The amount asked for.");
        assert_eq!(
            description("checking_status", Some(1.0)),
            "Your checking account balance has been low or negative."
        );
        assert_eq!(description("checking_status", Some(3.0)), "Your checking account balance.");
        assert_eq!(
            description("credit_history", Some(4.0)),
            "Your credit history shows delays or credits at other institutions."
        );
        assert_eq!(description("credit_history", Some(0.0)), "Your credit history.");
        // Below R$ 500 of savings is little; from R$ 500 a reason says only what it is about.
        assert_eq!(description("savings_status", Some(2.0)), "You hold little or nothing in savings.");
        assert_eq!(description("savings_status", Some(3.0)), "Your savings.");
        // An erased decision keeps no values: neutral words, but the same codes.
        assert_eq!(description("savings_status", None), "Your savings.");
        // An account the shared data does not hold, whatever code it was scored at.
        let withheld = |feature: &str| words.reason(feature, Some(1.0), true).unwrap().description;
        assert_eq!(withheld("checking_status"), "No checking account is among the data you shared.");
        assert_eq!(withheld("savings_status"), "No savings account is among the data you shared.");
        let stored = serde_json::json!({"hasCheckingAccount": false, "hasSavingsAccount": true});
        assert_eq!(withheld_in(&stored), ["checking_status"]);
        assert!(withheld_in(&serde_json::json!({})).is_empty(), "an erased decision's");
        assert_eq!(words.reason("age", None, false).unwrap().code, "APPLICANT_AGE");
        assert!(words.reason("unknown", Some(1.0), false).is_none());
        for feature in FEATURES {
            assert!(code_of(feature).is_some(), "{feature} has no reason");
        }
    }

    #[test]
    fn months_are_yyyy_mm() {
        let (first, next) = month_bounds("2026-12").unwrap();
        assert_eq!((first.to_string(), next.to_string()), ("2026-12-01".into(), "2027-01-01".into()));
        assert!(month_bounds("1900-01").is_ok() && month_bounds("9998-12").is_ok());
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "0000-01", "1899-12", "9999-12", "-001-01", "2026-+1"]
        {
            assert!(month_bounds(bad).is_err(), "{bad}");
        }
    }
}
