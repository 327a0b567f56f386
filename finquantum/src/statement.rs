//! Monthly statements: for each account, the month's transactions, totals by category (the
//! Open Finance transaction type), and the end-of-day balance of each day with movements,
//! walked back from the balance fetched at ingestion. Money is integer cents until it is shown.

use std::collections::BTreeMap;

use aigronova_platform::pdf::PdfDocument;
use chrono::NaiveDate;
use serde::Serialize;

use crate::{
    openfinance::brasilia_date,
    scoring::reais,
    store::{StoredAccount, StoredTransaction},
};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub customer_id: String,
    /// `yyyy-mm`.
    pub month: String,
    pub currency: &'static str,
    pub accounts: Vec<AccountStatement>,
    pub total_credits: String,
    pub total_debits: String,
    /// Whether every account's transactions were fetched for every day of the month (false with
    /// no account).
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatement {
    pub institution: String,
    pub account_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub brand_name: String,
    pub number: String,
    /// The booking days the account's transactions were fetched for (`yyyy-mm-dd`, Brasília):
    /// from the first day its earliest ingestion asked for (of those the later ones meet with no
    /// day between them) to the day of its last ingestion.
    pub fetched_from: String,
    pub fetched_through: String,
    /// Whether those days hold the whole month (its last day over before the last ingestion):
    /// when not, what moved on the other days is not in the totals.
    pub complete: bool,
    /// The balance at the start and end of the month (for a month not over at the last ingestion,
    /// `fetched_through` before its end, the balance on that day); absent when not known (no
    /// balance fetched; for the start, also a month whose first days were not fetched, or that
    /// began after the last ingestion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opening_balance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closing_balance: Option<String>,
    pub total_credits: String,
    pub total_debits: String,
    /// Credits minus debits.
    pub net: String,
    pub categories: Vec<CategoryTotal>,
    /// End-of-day balance of each day with movements, from the day before the first day fetched;
    /// empty when the closing balance is not known (no balance fetched, or a month that ended
    /// more than a day before the first day fetched).
    pub balances: Vec<DailyBalance>,
    pub transactions: Vec<StatementLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryTotal {
    pub category: String,
    pub credits: String,
    pub debits: String,
    pub count: usize,
}

/// A category's line in the PDF: its credits and debits, a side with none left out, and how many
/// transactions, in both languages (`+2885.68 (1 lançamento / 1 transaction)`).
fn category_line(category: &CategoryTotal) -> String {
    let none = |amount: &str| amount.trim_start_matches(['0', '.']).is_empty();
    let mut sides = Vec::new();
    if !none(&category.credits) {
        sides.push(format!("+{}", category.credits));
    }
    if !none(&category.debits) || sides.is_empty() {
        sides.push(format!("-{}", category.debits));
    }
    let (pt, en) = if category.count == 1 { ("lançamento", "transaction") } else { ("lançamentos", "transactions") };
    format!("{} ({} {pt} / {} {en})", sides.join(" "), category.count, category.count)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DailyBalance {
    pub date: String,
    pub balance: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementLine {
    pub id: String,
    pub date: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `CREDITO` or `DEBITO`.
    pub credit_debit_type: &'static str,
    pub name: String,
    pub amount: String,
}

/// The statement of `month` (`[first, next)`) for `accounts`, from `transactions` (any months).
///
pub fn build(
    customer_id: &str,
    month: &str,
    (first, next): (NaiveDate, NaiveDate),
    accounts: &[StoredAccount],
    transactions: &[StoredTransaction],
) -> Statement {
    let mut statements = Vec::new();
    // Totals are 128-bit: however many amounts of up to 15 whole digits an institution sends,
    // none wraps.
    let (mut credits, mut debits) = (0i128, 0i128);
    for account in accounts {
        let mut own: Vec<&StoredTransaction> = transactions.iter().filter(|t| t.belongs_to(account)).collect();
        own.sort_by(|a, b| a.booked_at.cmp(&b.booked_at).then_with(|| a.transaction_id.cmp(&b.transaction_id)));
        let in_month: Vec<&&StoredTransaction> = own
            .iter()
            .filter(|t| {
                let day = brasilia_date(t.booked_at);
                day >= first && day < next
            })
            .collect();
        // The balance at the end of the month: the fetched balance minus what moved after, known
        // when every day from the month's end to the balance was fetched, or the balance was
        // fetched before the month ended (nothing held moved between).
        let (fetched_from, fetched_through) = account.booked;
        let known = fetched_from <= next || account.balance_at.is_some_and(|at| brasilia_date(at) < next);
        // A balance taken within the month moves on with what the month held after it.
        let closing = account.balance_cents.filter(|_| known).map(|balance| {
            let balance = i128::from(balance);
            let moved = |t: &&&StoredTransaction| {
                let at = account.balance_at;
                match brasilia_date(t.booked_at) >= next {
                    true if Some(t.booked_at) <= at => -t.signed_cents(),
                    false if Some(t.booked_at) > at => t.signed_cents(),
                    _ => 0,
                }
            };
            balance + own.iter().map(|t| i128::from(moved(&t))).sum::<i128>()
        });
        let net: i128 = in_month.iter().map(|t| i128::from(t.signed_cents())).sum();
        // Walked back over the month's movements held; the balance before its first day only
        // when every day of it was fetched (a movement of a day not fetched would be missing).
        let walked_back = closing.map(|closing| closing - net);
        // From a balance taken before the month began, movements between it and the month's first
        // day were not fetched: its opening is not known.
        let opening = walked_back.filter(|_| fetched_from <= first && fetched_through >= first);
        // The end of a day is known from the closing balance when every later day was fetched.
        let day_known = |day: NaiveDate| walked_back.is_some() && day >= fetched_from - chrono::Days::new(1);
        let mut running = walked_back.unwrap_or(0);
        let mut balances: Vec<DailyBalance> = Vec::new();
        let mut categories: BTreeMap<&str, (i128, i128, usize)> = BTreeMap::new();
        let mut lines = Vec::new();
        for transaction in &in_month {
            running += i128::from(transaction.signed_cents());
            let day = brasilia_date(transaction.booked_at);
            let date = day.to_string();
            // Without a known balance, a running sum would pass for balances it is not.
            match balances.last_mut() {
                _ if !day_known(day) => {}
                Some(last) if last.date == date => last.balance = reais(running),
                _ => balances.push(DailyBalance { date: date.clone(), balance: reais(running) }),
            }
            let entry = categories.entry(transaction.kind.as_str()).or_default();
            if transaction.credit {
                entry.0 += i128::from(transaction.amount_cents);
            } else {
                entry.1 += i128::from(transaction.amount_cents);
            }
            entry.2 += 1;
            lines.push(StatementLine {
                id: transaction.transaction_id.clone(),
                date,
                kind: transaction.kind.clone(),
                credit_debit_type: if transaction.credit { "CREDITO" } else { "DEBITO" },
                name: transaction.name.clone(),
                amount: reais(transaction.amount_cents),
            });
        }
        let account_credits: i128 = categories.values().map(|(c, _, _)| c).sum();
        let account_debits: i128 = categories.values().map(|(_, d, _)| d).sum();
        credits += account_credits;
        debits += account_debits;
        statements.push(AccountStatement {
            institution: account.institution.clone(),
            account_id: account.account_id.clone(),
            kind: account.kind.clone(),
            brand_name: account.brand_name.clone(),
            number: account.number.clone(),
            fetched_from: fetched_from.to_string(),
            fetched_through: fetched_through.to_string(),
            complete: fetched_from <= first && fetched_through >= next,
            opening_balance: opening.map(reais),
            closing_balance: closing.map(reais),
            total_credits: reais(account_credits),
            total_debits: reais(account_debits),
            net: reais(net),
            categories: categories
                .into_iter()
                .map(|(category, (credits, debits, count))| CategoryTotal {
                    category: category.to_owned(),
                    credits: reais(credits),
                    debits: reais(debits),
                    count,
                })
                .collect(),
            balances,
            transactions: lines,
        });
    }
    Statement {
        customer_id: customer_id.to_owned(),
        month: month.to_owned(),
        currency: "BRL",
        complete: !statements.is_empty() && statements.iter().all(|account| account.complete),
        accounts: statements,
        total_credits: reais(credits),
        total_debits: reais(debits),
    }
}

/// What an empty section of the PDF says.
const NONE: &str = "Nenhuma / None";

/// The statement as a PDF: one section per account with its totals, categories, balances and
/// transactions.
pub fn render_pdf(statement: &Statement) -> Vec<u8> {
    let mut pdf = PdfDocument::new(&format!("Extrato mensal / Monthly statement {}", statement.month));
    pdf.field("Cliente / Customer", &statement.customer_id);
    pdf.field("Moeda / Currency", statement.currency);
    pdf.field("Entradas / Credits", &statement.total_credits);
    pdf.field("Saídas / Debits", &statement.total_debits);
    if statement.accounts.is_empty() {
        pdf.paragraph("Nenhuma conta com dados consentidos. No account with consented data.");
    }
    for account in &statement.accounts {
        pdf.heading(&format!("{} {} ({})", account.brand_name, account.number, account.kind));
        pdf.field("Instituição / Institution", &account.institution);
        pdf.field(
            "Dados buscados / Data fetched",
            &format!("{} a/to {}", account.fetched_from, account.fetched_through),
        );
        if !account.complete {
            pdf.paragraph(
                "Mês incompleto / Incomplete month: transações de dias fora desse período não foram buscadas. \
                 Transactions of days outside that period were not fetched.",
            );
        }
        if let Some(opening) = &account.opening_balance {
            pdf.field("Saldo inicial / Opening balance", opening);
        }
        // For a month not over at the last ingestion, the balance of that day, not the month's end.
        let unfinished = account.fetched_through.get(..7).is_some_and(|month| month <= statement.month.as_str());
        match &account.closing_balance {
            Some(closing) if unfinished => {
                pdf.field(&format!("Saldo em / Balance on {}", account.fetched_through), closing);
            }
            Some(closing) => pdf.field("Saldo final / Closing balance", closing),
            None => {}
        }
        pdf.field("Entradas / Credits", &account.total_credits);
        pdf.field("Saídas / Debits", &account.total_debits);
        pdf.field("Resultado / Net", &account.net);
        pdf.subheading("Por categoria / By category");
        if account.categories.is_empty() {
            pdf.paragraph(NONE);
        }
        for category in &account.categories {
            pdf.field(&category.category, &category_line(category));
        }
        pdf.subheading("Saldo diário / Daily balance");
        if account.closing_balance.is_none() {
            pdf.paragraph(
                "Saldo não disponível / Not known: no balance of this account held under a usable consent reaches \
                 back to this month, or the month ended more than a day before the first day fetched.",
            );
        } else if account.balances.is_empty() {
            pdf.paragraph(NONE);
        }
        for day in &account.balances {
            pdf.field(&day.date, &day.balance);
        }
        pdf.subheading("Transações / Transactions");
        if account.transactions.is_empty() {
            pdf.paragraph(NONE);
        }
        for line in &account.transactions {
            let sign = if line.credit_debit_type == "CREDITO" { "+" } else { "-" };
            pdf.monospace(&format!("{} {sign}{:>12} {:<24} {}", line.date, line.amount, line.kind, line.name));
        }
    }
    pdf.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_categorys_line_leaves_out_a_side_with_nothing() {
        let line = |credits: &str, debits: &str, count| {
            category_line(&CategoryTotal {
                category: "C".into(),
                credits: credits.into(),
                debits: debits.into(),
                count,
            })
        };
        assert_eq!(line("2885.68", "0.00", 1), "+2885.68 (1 lançamento / 1 transaction)");
        assert_eq!(line("0.00", "120.50", 2), "-120.50 (2 lançamentos / 2 transactions)");
        assert_eq!(line("10.00", "3.05", 3), "+10.00 -3.05 (3 lançamentos / 3 transactions)");
        assert_eq!(line("0.00", "0.00", 2), "-0.00 (2 lançamentos / 2 transactions)", "transactions of nothing");
    }
    use chrono::{DateTime, Utc};

    use crate::scoring::month_bounds;

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn transaction(id: &str, credit: bool, kind: &str, cents: i64, when: &str) -> StoredTransaction {
        StoredTransaction {
            institution: "bank".into(),
            account_id: "acc".into(),
            transaction_id: id.into(),
            credit,
            kind: kind.into(),
            name: id.to_uppercase(),
            amount_cents: cents,
            booked_at: at(when),
        }
    }

    /// An account whose days from 2026-09-15 to 2026-11-20 were fetched, with `balance_cents` at
    /// the last of them.
    fn account(balance_cents: i64) -> StoredAccount {
        StoredAccount {
            institution: "bank".into(),
            account_id: "acc".into(),
            consent_id: "c".into(),
            kind: "CONTA_DEPOSITO_A_VISTA".into(),
            brand_name: "Banco".into(),
            number: "123".into(),
            balance_cents: Some(balance_cents),
            balance_at: Some(at("2026-11-20T00:00:00Z")),
            summary: None,
            fetched_by: vec!["c".into()],
            booked: (date("2026-09-15"), date("2026-11-20")),
        }
    }

    #[test]
    fn totals_of_the_largest_amounts_the_api_writes_do_not_wrap() {
        // 999,999,999,999,999.99 reais, the largest amount of 15 whole digits, 200 times over.
        let largest = 99_999_999_999_999_999;
        let transactions: Vec<StoredTransaction> =
            (0..200).map(|n| transaction(&format!("t{n}"), true, "TED", largest, "2026-10-05T10:00:00Z")).collect();
        let stored = account(largest);
        let months = month_bounds("2026-10").unwrap();
        let statement = build("cust", "2026-10", months, std::slice::from_ref(&stored), &transactions);
        let total = "199999999999999998.00";
        assert_eq!((statement.total_credits.as_str(), statement.accounts[0].net.as_str()), (total, total));
        assert_eq!(statement.accounts[0].opening_balance.as_deref(), Some("-198999999999999998.01"));
    }

    #[test]
    fn totals_and_balances_add_up_to_the_transactions() {
        let stored = account(1_000_00);
        let transactions = [
            transaction("a", true, "FOLHA_PAGAMENTO", 3_000_00, "2026-10-05T10:00:00Z"),
            transaction("b", false, "PIX", 120_50, "2026-10-05T18:00:00Z"),
            transaction("c", false, "BOLETO", 800_00, "2026-10-10T09:00:00Z"),
            transaction("d", false, "PIX", 79_50, "2026-10-31T23:59:59Z"),
            // Outside the month: before, and after (moves the closing balance back).
            transaction("e", true, "PIX", 50_00, "2026-09-30T12:00:00Z"),
            transaction("f", false, "PIX", 200_00, "2026-11-02T12:00:00Z"),
        ];
        let statement =
            build("cust", "2026-10", month_bounds("2026-10").unwrap(), std::slice::from_ref(&stored), &transactions);
        let account = &statement.accounts[0];
        assert!(statement.complete && account.complete);
        assert_eq!((account.fetched_from.as_str(), account.fetched_through.as_str()), ("2026-09-15", "2026-11-20"));
        assert_eq!(account.transactions.len(), 4);
        assert_eq!((account.total_credits.as_str(), account.total_debits.as_str()), ("3000.00", "1000.00"));
        assert_eq!(account.net, "2000.00");
        assert_eq!(account.closing_balance.as_deref(), Some("1200.00"), "1000 now, 200 spent in November");
        assert_eq!(account.opening_balance.as_deref(), Some("-800.00"));
        let days: Vec<(&str, &str)> = account.balances.iter().map(|d| (d.date.as_str(), d.balance.as_str())).collect();
        assert_eq!(days, [("2026-10-05", "2079.50"), ("2026-10-10", "1279.50"), ("2026-10-31", "1200.00")]);
        // No balance fetched: the month's movements, and no daily balances made up from zero.
        let unbalanced = StoredAccount { balance_cents: None, balance_at: None, ..stored.clone() };
        let months = month_bounds("2026-10").unwrap();
        let statement = build("cust", "2026-10", months, std::slice::from_ref(&unbalanced), &transactions);
        let account = &statement.accounts[0];
        assert_eq!((account.transactions.len(), account.net.as_str()), (4, "2000.00"));
        assert_eq!((account.opening_balance.as_deref(), account.closing_balance.as_deref()), (None, None));
        assert!(account.balances.is_empty(), "{:?}", account.balances);
        let pix = account.categories.iter().find(|c| c.category == "PIX").unwrap();
        assert_eq!((pix.debits.as_str(), pix.count), ("200.00", 2));
        assert_eq!(statement.total_credits, "3000.00");

        // September, fetched from its 15th: its closing balance and the balances of the days from
        // the 14th are known, not its opening balance. A transaction the institution dated before
        // the days fetched is shown, with no balance for its day.
        let stray = transaction("g", false, "PIX", 10_00, "2026-09-10T12:00:00Z");
        let with_stray = [&transactions[..], std::slice::from_ref(&stray)].concat();
        let september =
            build("cust", "2026-09", month_bounds("2026-09").unwrap(), std::slice::from_ref(&stored), &with_stray);
        let account = &september.accounts[0];
        assert!(!september.complete);
        assert_eq!((account.opening_balance.as_deref(), account.closing_balance.as_deref()), (None, Some("-800.00")));
        let days: Vec<(&str, &str)> = account.balances.iter().map(|d| (d.date.as_str(), d.balance.as_str())).collect();
        assert_eq!(days, [("2026-09-30", "-800.00")]);
        assert_eq!((account.transactions.len(), account.net.as_str()), (2, "40.00"));

        // August ended before the first day fetched: its balances are unknown, and it is not
        // complete.
        let august =
            build("cust", "2026-08", month_bounds("2026-08").unwrap(), std::slice::from_ref(&stored), &transactions);
        let account = &august.accounts[0];
        assert_eq!((account.opening_balance.as_deref(), account.closing_balance.as_deref()), (None, None));
        assert!(account.transactions.is_empty());
        assert!(!august.complete && !account.complete);
        // Once the history fetched reaches back to September's first day, August's closing balance
        // is known (what moved since is all held); September itself, fetched from its first day
        // and over before the last fetch, is complete; November, fetched to its 20th, is not.
        let reaching = StoredAccount { booked: (date("2026-09-01"), date("2026-11-20")), ..stored };
        let august =
            build("cust", "2026-08", month_bounds("2026-08").unwrap(), std::slice::from_ref(&reaching), &transactions);
        assert_eq!(august.accounts[0].closing_balance.as_deref(), Some("-850.00"), "{august:?}");
        let september =
            build("cust", "2026-09", month_bounds("2026-09").unwrap(), std::slice::from_ref(&reaching), &transactions);
        assert!(september.complete);
        let november =
            build("cust", "2026-11", month_bounds("2026-11").unwrap(), std::slice::from_ref(&reaching), &transactions);
        assert!(!november.complete);
        // A balance taken within the month moves on with what the month held after it.
        let later = transaction("h", false, "PIX", 30_00, "2026-11-25T12:00:00Z");
        let with_later = [&transactions[..], std::slice::from_ref(&later)].concat();
        let november =
            build("cust", "2026-11", month_bounds("2026-11").unwrap(), std::slice::from_ref(&reaching), &with_later);
        assert_eq!(november.accounts[0].closing_balance.as_deref(), Some("970.00"), "{november:?}");
        // December began after the last fetch (November's 20th): its opening balance is not known,
        // and its last balance is November 20th's, which the PDF names so.
        let december = build("cust", "2026-12", month_bounds("2026-12").unwrap(), &[reaching], &with_later);
        let account = &december.accounts[0];
        assert_eq!((account.opening_balance.as_deref(), account.closing_balance.as_deref()), (None, Some("970.00")));
        let pdf = String::from_utf8_lossy(&render_pdf(&december)).into_owned();
        assert!(pdf.contains("Balance on 2026-11-20") && !pdf.contains("Closing balance"), "{pdf}");
        // No account: nothing was fetched for any day of the month.
        assert!(!build("cust", "2026-10", month_bounds("2026-10").unwrap(), &[], &transactions).complete);
    }
}
