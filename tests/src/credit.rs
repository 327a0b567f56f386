//! Customers for the FinQuantum tests and benchmark: valid CPFs, and the declared fields and
//! institution data that give a credit-risk reference row's features.

use serde_json::{Value, json};

use crate::institution::{FakeAccount, FakeTransaction, Profile};

/// A valid CPF from nine digits (the two check digits computed).
pub fn cpf(base: u64) -> String {
    let mut digits: Vec<u32> = format!("{base:09}").chars().filter_map(|c| c.to_digit(10)).collect();
    for length in [9u32, 10] {
        let sum: u32 = digits.iter().zip((2..=length + 1).rev()).map(|(digit, weight)| digit * weight).sum();
        let check = (sum * 10) % 11;
        digits.push(if check == 10 { 0 } else { check });
    }
    digits.iter().map(u32::to_string).collect()
}

/// RFC 3339, `days` from now.
pub fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The institution data that gives a reference row's `checking_status` and `savings_status`,
/// with `transactions` checking transactions over the last 90 days that cancel out (credit and
/// debit pairs of one amount at one instant), so that they move no feature.
pub fn profile_for(features: &Value, transactions: usize) -> Profile {
    let code = |name: &str| features[name].as_f64().unwrap_or(0.0) as i64;
    let mut accounts = Vec::new();
    let checking = match code("checking_status") {
        0 => None,
        1 => Some("-100.00"),
        2 => Some("100.00"),
        _ => Some("500.00"),
    };
    if let Some(balance) = checking {
        let now = chrono::Utc::now();
        let history = (0..transactions / 2)
            .flat_map(|pair| {
                let at = (now
                    - chrono::Duration::minutes(1 + (pair as i64 * 90 * 24 * 60) / (transactions as i64 / 2).max(1)))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let amount = format!("{}.00", 10 + pair % 90);
                [
                    FakeTransaction::new(&format!("in-{pair}"), true, "PIX", &amount, &at),
                    FakeTransaction::new(&format!("out-{pair}"), false, "PIX", &amount, &at),
                ]
            })
            .collect();
        accounts.push(FakeAccount {
            id: "checking".into(),
            kind: "CONTA_DEPOSITO_A_VISTA".into(),
            brand_name: "Banco Teste".into(),
            number: "94088392".into(),
            balance: balance.into(),
            balance_at: None,
            transactions: history,
        });
    }
    let savings = match code("savings_status") {
        0 => None,
        1 => Some("50.00"),
        2 => Some("300.00"),
        3 => Some("700.00"),
        _ => Some("2000.00"),
    };
    if let Some(balance) = savings {
        accounts.push(FakeAccount {
            id: "savings".into(),
            kind: "CONTA_POUPANCA".into(),
            brand_name: "Banco Teste".into(),
            number: "94088392".into(),
            balance: balance.into(),
            balance_at: None,
            transactions: Vec::new(),
        });
    }
    Profile { accounts, page_size: 50, ..Profile::default() }
}

/// The declared fields that give a reference row's other features.
pub fn applicant_for(features: &Value) -> Value {
    let f = |name: &str| features[name].as_f64().unwrap_or(0.0);
    let instalment = f("credit_amount") / f("duration_months");
    // The middle of the instalment-share band of the row's code.
    let share = [0.05, 0.15, 0.25, 0.5][(f("installment_rate") as usize).clamp(1, 4) - 1];
    let history = ["no_credits_or_all_paid", "all_paid_here", "paid_duly", "past_delays", "critical"];
    let mut applicant = json!({
        "durationMonths": f("duration_months") as i64,
        "creditAmount": f("credit_amount"),
        "age": f("age") as i64,
        "existingCredits": f("existing_credits") as i64,
        "dependents": f("dependents") as i64,
        "creditHistory": history[(f("credit_history") as usize).min(4)],
        "housing": if f("housing_own") == 1.0 { "own" } else { "rent" },
        "purpose": if f("purpose_car") == 1.0 { "car_used" } else { "furniture" },
        // In whole centavos, as a declared income is.
        "monthlyIncome": (instalment / share * 100.0).round() / 100.0,
    });
    let years = [None, Some(0.5), Some(2.0), Some(5.0), Some(10.0)][(f("employment_years") as usize).min(4)];
    if let Some(years) = years {
        applicant["employmentYears"] = json!(years);
    }
    applicant
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpfs_have_their_check_digits() {
        assert_eq!(cpf(529_982_247), "52998224725");
        assert_eq!(cpf(111_444_777), "11144477735");
    }
}
