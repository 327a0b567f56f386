//! Customers, consents, fetched data and credit decisions in the service's own database
//! (SQLite or PostgreSQL through `sqlx::Any`). Every query filters on the tenant, and on
//! PostgreSQL row-level security holds each transaction to its tenant as well. A customer's CPF
//! is sealed with the tenant's data key and found through its blind index.

use std::{collections::BTreeSet, sync::Arc};

use aigronova_platform::{
    Error,
    audit::{self, AuditEvent},
    cpf::Cpf,
    crypto::{TenantCipher, TenantKeys},
    grpc::Page,
    storage::{Backend, Database, Param, StoreError, bind_params},
    time,
};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Row, any::AnyRow};

use crate::{
    consent::{ACCOUNTS_BALANCES_READ, ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ, Consent, ConsentStatus, Permissions},
    openfinance::{self, brasilia_date},
    scoring::{AccountSummary, ReasonWords, SUMMARY_DAYS},
};

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccount {
    pub institution: String,
    pub account_id: String,
    pub consent_id: String,
    pub kind: String,
    pub brand_name: String,
    pub number: String,
    pub balance_cents: Option<i64>,
    pub balance_at: Option<DateTime<Utc>>,
    /// Kept at ingestion when the balance was fetched.
    pub summary: Option<AccountSummary>,
    /// Every consent that fetched the account (`consent_id` among them).
    pub fetched_by: Vec<String>,
    /// The booking days its transactions were fetched for, first and last (Brasília dates): from
    /// the first day its earliest ingestion asked for to the day of its last.
    pub booked: (NaiveDate, NaiveDate),
}

/// The accounts a use of the data under the `usable` consents may see: those one of them fetched,
/// and their balances and summaries only when one of those grants balances.
pub(crate) fn visible_accounts(accounts: Vec<StoredAccount>, usable: &[&Consent]) -> Vec<StoredAccount> {
    accounts
        .into_iter()
        .filter_map(|mut account| {
            let fetchers: Vec<&&Consent> =
                usable.iter().filter(|consent| account.fetched_by.contains(&consent.id)).collect();
            if fetchers.is_empty() {
                return None;
            }
            if !fetchers.iter().any(|consent| consent.permissions.grants(ACCOUNTS_BALANCES_READ)) {
                (account.balance_cents, account.balance_at, account.summary) = (None, None, None);
            }
            Some(account)
        })
        .collect()
}

/// A transaction as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTransaction {
    pub institution: String,
    pub account_id: String,
    pub transaction_id: String,
    /// Money in (`CREDITO`) rather than out.
    pub credit: bool,
    pub kind: String,
    pub name: String,
    /// Positive; the direction is `credit`.
    pub amount_cents: i64,
    pub booked_at: DateTime<Utc>,
}

impl StoredTransaction {
    pub fn belongs_to(&self, account: &StoredAccount) -> bool {
        self.institution == account.institution && self.account_id == account.account_id
    }

    /// The amount with its direction: credits positive, debits negative.
    pub fn signed_cents(&self) -> i64 {
        if self.credit { self.amount_cents } else { -self.amount_cents }
    }

    /// A salary credit: the Open Finance payroll types, or a credit named as a salary.
    pub fn is_salary(&self) -> bool {
        let name = self.name.to_uppercase();
        self.credit
            && (crate::scoring::SALARY_TYPES.contains(&self.kind.as_str())
                || name.contains("SALARIO")
                || name.contains("SALÁRIO"))
    }
}

/// What one ingestion fetched, ready to store (no `Debug`: transaction names and ids as the
/// institution sent them, before any card number in them is masked, are not for logs).
pub struct Fetched {
    pub accounts: Vec<(openfinance::Account, Option<openfinance::Balance>)>,
    pub transactions: Vec<(String, openfinance::Transaction)>,
    /// When the fetch began: the transactions were asked for over
    /// [`openfinance::booking_window`] of it.
    pub fetched_at: DateTime<Utc>,
}

/// A stored credit decision.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredScore {
    pub id: String,
    pub customer_id: String,
    pub model: String,
    pub model_version: String,
    pub features: serde_json::Value,
    pub bank: serde_json::Value,
    pub probability: f64,
    pub score: i64,
    pub risk_band: String,
    pub reasons: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What the purge deleted for one consent.
#[derive(Debug)]
pub struct Purged {
    pub tenant_id: String,
    pub consent_id: String,
    pub accounts: u64,
    pub transactions: u64,
    /// The customer's valid consents that hold some of the accounts from now on, having fetched
    /// them too; the other accounts and their transactions are deleted.
    pub kept_under: Vec<String>,
}

/// The queries of this service over one [`Database`].
#[derive(Clone, Debug)]
pub(crate) struct Store {
    database: Database,
    keys: Arc<TenantKeys>,
    /// The words of the credit decisions' reasons.
    words: Arc<ReasonWords>,
}

impl Store {
    /// Empties the embedded database's write-ahead log after an erasure (see
    /// [`Database::truncate_log_soon`]).
    pub(crate) fn truncate_log_soon(&self) {
        self.database.truncate_log_soon();
    }
}

impl Store {
    pub(crate) fn new(database: Database, keys: Arc<TenantKeys>, words: ReasonWords) -> Self {
        Self { database, keys, words: Arc::new(words) }
    }

    pub(crate) fn reason_words(&self) -> &ReasonWords {
        &self.words
    }

    /// Seals up to [`SEAL_BATCH`] transaction names stored in clear (by an earlier version, or by
    /// a replica of one still running during a rolling upgrade: a bank's words may name people and
    /// hold their CPFs), their card numbers and CPFs masked as now, but for those of the tenants in `skip`,
    /// to which a tenant whose rows cannot be sealed is added.
    pub(crate) async fn seal_clear_names(&self, skip: &mut BTreeSet<String>) -> Result<Sealing, Error> {
        let sql = format!(
            "SELECT tenant_id, customer_id, institution, account_id, transaction_id, name FROM transactions \
             WHERE substr(name, 1, 3) <> 'v1:'{} \
             ORDER BY tenant_id, customer_id, institution, account_id, transaction_id LIMIT $1",
            not_in(skip, 2)
        );
        let select = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(SEAL_BATCH), skip);
        let update = "UPDATE transactions SET name = $1 WHERE tenant_id = $2 AND customer_id = $3 \
                      AND institution = $4 AND account_id = $5 AND transaction_id = $6 AND name = $7";
        self.seal_batch(select, update, skip, |row, cipher, tenant_id| {
            let text = |column: &str| row.try_get::<String, _>(column);
            let (customer_id, institution) = (text("customer_id")?, text("institution")?);
            let (account_id, transaction_id, name) = (text("account_id")?, text("transaction_id")?, text("name")?);
            let context = name_context(tenant_id, &customer_id, &institution, &account_id);
            Ok(vec![
                cipher.seal(&context, &crate::mask_name(&name)).into(),
                tenant_id.into(),
                customer_id.into(),
                institution.into(),
                account_id.into(),
                transaction_id.into(),
                name.into(),
            ])
        })
        .await
    }

    /// Seals up to [`SEAL_BATCH`] account numbers stored in clear (by an earlier version, or by a
    /// replica of one during a rolling upgrade), as [`Self::seal_clear_names`] does names.
    pub(crate) async fn seal_clear_numbers(&self, skip: &mut BTreeSet<String>) -> Result<Sealing, Error> {
        let sql = format!(
            "SELECT tenant_id, customer_id, institution, account_id, kind, number FROM accounts \
             WHERE substr(number, 1, 3) <> 'v1:'{} \
             ORDER BY tenant_id, customer_id, institution, account_id LIMIT $1",
            not_in(skip, 2)
        );
        let select = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(SEAL_BATCH), skip);
        let update = "UPDATE accounts SET number = $1 WHERE tenant_id = $2 AND customer_id = $3 \
                      AND institution = $4 AND account_id = $5 AND number = $6";
        self.seal_batch(select, update, skip, |row, cipher, tenant_id| {
            let text = |column: &str| row.try_get::<String, _>(column);
            let (customer_id, institution) = (text("customer_id")?, text("institution")?);
            let (account_id, number) = (text("account_id")?, text("number")?);
            let context = number_context(tenant_id, &customer_id, &institution, &account_id);
            let shown = shown_number(&text("kind")?, &number, crate::mask_card_numbers);
            Ok(vec![
                cipher.seal(&context, &shown).into(),
                tenant_id.into(),
                customer_id.into(),
                institution.into(),
                account_id.into(),
                number.into(),
            ])
        })
        .await
    }

    /// Seals the inputs (declared data, bank figures) of up to [`SEAL_BATCH`] credit decisions
    /// stored in clear, as [`Self::seal_clear_names`] does names.
    pub(crate) async fn seal_clear_inputs(&self, skip: &mut BTreeSet<String>) -> Result<Sealing, Error> {
        let sql = format!(
            "SELECT tenant_id, id, features, bank FROM credit_scores \
             WHERE ((substr(features, 1, 3) <> 'v1:' AND features <> $1) OR (substr(bank, 1, 3) <> 'v1:' AND bank <> $1)){} \
             ORDER BY tenant_id, id LIMIT $2",
            not_in(skip, 3)
        );
        let select = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ERASED_INPUTS).bind(SEAL_BATCH), skip);
        let update = "UPDATE credit_scores SET features = $1, bank = $2 WHERE tenant_id = $3 AND id = $4 \
                      AND features = $5 AND bank = $6";
        self.seal_batch(select, update, skip, |row, cipher, tenant_id| {
            let text = |column: &str| row.try_get::<String, _>(column);
            let (id, features, bank) = (text("id")?, text("features")?, text("bank")?);
            let seal = |column: &str, stored: &str| {
                if stored == ERASED_INPUTS || aigronova_platform::crypto::is_sealed(stored) {
                    stored.to_owned()
                } else {
                    cipher.seal(&score_context(tenant_id, &id, column), stored)
                }
            };
            Ok(vec![
                seal("features", &features).into(),
                seal("bank", &bank).into(),
                tenant_id.into(),
                id.as_str().into(),
                features.into(),
                bank.into(),
            ])
        })
        .await
    }

    /// Runs `update` with the parameters `sealed` makes of each row `select` finds (ordered by
    /// tenant, whose id is its first column), [`SEAL_TRANSACTION`] rows a transaction. A tenant
    /// whose rows fail (its data key, a write) is logged and added to `skip`, and the others go on.
    async fn seal_batch(
        &self,
        select: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        update: &'static str,
        skip: &mut BTreeSet<String>,
        sealed: impl Fn(&AnyRow, &TenantCipher, &str) -> Result<Vec<Param>, sqlx::Error>,
    ) -> Result<Sealing, Error> {
        let rows = select.fetch_all(self.database.pool()).await.map_err(StoreError::from)?;
        let mut sealing = Sealing { selected: rows.len(), sealed: 0 };
        for rows in rows.chunk_by(|a, b| a.try_get::<String, _>(0).ok() == b.try_get::<String, _>(0).ok()) {
            let tenant_id: String = rows[0].try_get(0).map_err(StoreError::from)?;
            let tenant = async {
                let cipher = self.keys.cipher(&tenant_id).await?;
                let mut changed = 0;
                for rows in rows.chunks(SEAL_TRANSACTION) {
                    let mut transaction = self.database.begin_tenant(&tenant_id).await?;
                    for row in rows {
                        let params = sealed(row, &cipher, &tenant_id).map_err(StoreError::from)?;
                        let updated = bind_params(sqlx::query(update), params)
                            .execute(&mut *transaction)
                            .await
                            .map_err(StoreError::from)?;
                        changed += usize::try_from(updated.rows_affected()).unwrap_or(0);
                    }
                    transaction.commit().await.map_err(StoreError::from)?;
                }
                Ok::<_, Error>(changed)
            };
            match tenant.await {
                Ok(changed) => sealing.sealed += changed,
                Err(error) => {
                    tracing::error!(tenant_id, %error, "cannot seal a tenant's rows stored in clear; left for the next pass");
                    skip.insert(tenant_id);
                }
            }
        }
        Ok(sealing)
    }

    /// The cipher of `tenant_id`'s data key.
    pub(crate) async fn cipher(&self, tenant_id: &str) -> Result<Arc<TenantCipher>, Error> {
        Ok(self.keys.cipher(tenant_id).await?)
    }

    /// Stores `consent`, its customer found by CPF or registered, and its audit event together.
    pub(crate) async fn create_consent(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        consent: &Consent,
        event: &AuditEvent,
    ) -> Result<String, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let cpf_hash = cipher.blind_index(cpf.as_str());
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let customer_id = match find_customer(&mut transaction, tenant_id, &cpf_hash).await? {
            Some(id) => id,
            None => {
                let id = consent.customer_id.clone();
                // A consent for the same new CPF made at the same moment may register the customer
                // first: this one then waits for it, inserts nothing, and takes its customer.
                sqlx::query(
                    "INSERT INTO customers (tenant_id, id, cpf_hash, sealed_cpf, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, cpf_hash) DO NOTHING",
                )
                .bind(tenant_id)
                .bind(&id)
                .bind(&cpf_hash)
                .bind(cipher.seal(&format!("customers:{tenant_id}:{id}"), cpf.as_str()))
                .bind(time::stored(consent.created_at))
                .execute(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
                find_customer(&mut transaction, tenant_id, &cpf_hash)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("a customer registered is not found".into()))?
            }
        };
        sqlx::query(
            "INSERT INTO consents (tenant_id, id, customer_id, institution, permissions, expires_at, created_at, \
             purge_due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
        )
        .bind(tenant_id)
        .bind(&consent.id)
        .bind(&customer_id)
        .bind(&consent.institution)
        .bind(consent.permissions.to_stored())
        .bind(time::stored(consent.expires_at))
        .bind(time::stored(consent.created_at))
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(customer_id)
    }

    /// The consent `id` of `tenant_id`; `NotFound` when unknown or another tenant's.
    pub(crate) async fn consent(&self, tenant_id: &str, id: &str) -> Result<Consent, Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let consent = consent_on(&mut transaction, tenant_id, id).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(consent)
    }

    /// The consent `id` as a caller reads it, with the audit event of the read in the same
    /// transaction: a consent tells whom the tenant knows at which institution.
    pub(crate) async fn read_consent(
        &self,
        tenant_id: &str,
        id: &str,
        event: impl FnOnce(&Consent) -> AuditEvent,
    ) -> Result<Consent, Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let consent = consent_on(&mut transaction, tenant_id, id).await?;
        audit::enqueue(&mut transaction, &event(&consent)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(consent)
    }

    /// Every consent of `customer_id`.
    pub(crate) async fn consents_of(&self, tenant_id: &str, customer_id: &str) -> Result<Vec<Consent>, Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let consents = consents_on(&mut transaction, tenant_id, customer_id).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(consents)
    }

    /// The customer with `cpf`, if the tenant has one.
    pub(crate) async fn customer_by_cpf(&self, tenant_id: &str, cpf: &Cpf) -> Result<Option<String>, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let customer_id = find_customer(&mut transaction, tenant_id, &cipher.blind_index(cpf.as_str())).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(customer_id)
    }

    /// `NotFound` unless `customer_id` is a customer of `tenant_id`.
    pub(crate) async fn customer_exists(&self, tenant_id: &str, customer_id: &str) -> Result<(), Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        require_customer(&mut transaction, tenant_id, customer_id).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A page of the customer's consents, newest first, and the id to go on from when more
    /// follow; `NotFound` for a customer the tenant does not have.
    pub(crate) async fn consents_page(
        &self,
        tenant_id: &str,
        customer_id: &str,
        page: Page<'_>,
        event: impl FnOnce(&[Consent]) -> AuditEvent,
    ) -> Result<(Vec<Consent>, Option<String>), Error> {
        let mut transaction = self.database.begin_tenant_snapshot(tenant_id).await?;
        let rows = customer_page(&mut transaction, "consents", tenant_id, customer_id, page).await?;
        let mut consents = rows.iter().map(consent_of).collect::<Result<Vec<_>, _>>()?;
        let next = page.split(&mut consents, |consent| consent.id.clone());
        if !consents.is_empty() {
            audit::enqueue(&mut transaction, &event(&consents)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok((consents, next))
    }

    /// A page of the customer's credit decisions, newest first, with the audit event of their
    /// read when the page shows some; `NotFound` for a customer the tenant does not have.
    pub(crate) async fn scores_page(
        &self,
        tenant_id: &str,
        customer_id: &str,
        page: Page<'_>,
        event: impl FnOnce(&[StoredScore]) -> AuditEvent,
    ) -> Result<(Vec<StoredScore>, Option<String>), Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant_snapshot(tenant_id).await?;
        let rows = customer_page(&mut transaction, "credit_scores", tenant_id, customer_id, page).await?;
        let mut scores = rows.iter().map(|row| score_of(row, &cipher, tenant_id)).collect::<Result<Vec<_>, _>>()?;
        let next = page.split(&mut scores, |score| score.id.clone());
        if !scores.is_empty() {
            audit::enqueue(&mut transaction, &event(&scores)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok((scores, next))
    }

    /// Marks the consent revoked, its data due for deletion at `purge_due`, with its event (an
    /// expired consent stays expired, and its data goes as an expired consent's does). A
    /// consent already revoked stays as it was.
    pub(crate) async fn revoke_consent(
        &self,
        tenant_id: &str,
        id: &str,
        now: DateTime<Utc>,
        purge_due: DateTime<Utc>,
        event: &AuditEvent,
    ) -> Result<Consent, Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let updated = sqlx::query(
            "UPDATE consents SET revoked_at = $3, purge_due_at = $4 \
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(time::stored(now))
        .bind(time::stored(purge_due))
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let row = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound(format!("consent {id}")))?;
        if updated.rows_affected() == 1 {
            audit::enqueue(&mut transaction, event).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(consent_of(&row)?)
    }

    /// Stores what an ingestion under `consent` fetched: accounts (now held under this consent)
    /// with their balances, and the transactions not stored before, whose number it returns.
    pub(crate) async fn store_ingestion(
        &self,
        tenant_id: &str,
        consent: &Consent,
        fetched: &Fetched,
        now: DateTime<Utc>,
        event: impl FnOnce(u64) -> AuditEvent,
    ) -> Result<u64, Error> {
        check_shapes(fetched).map_err(|detail| outside_shapes(consent, &detail))?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // The consent, locked and read again in this transaction: one revoked or erased while its
        // data was being fetched takes nothing more.
        lock_customer(&mut transaction, self.database.backend(), tenant_id, &consent.customer_id).await?;
        let current = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(&consent.id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound(format!("consent {}", consent.id)))?;
        consent_of(&current)?
            .allows(&[ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ], now)
            .map_err(|status| Error::Refused(Box::new(status)))?;
        let cipher = self.keys.cipher(tenant_id).await?;
        let fetched_at = time::stored(fetched.fetched_at);
        let mut stored = Vec::with_capacity(fetched.accounts.len());
        let kept = match consent.permissions.grants(ACCOUNTS_BALANCES_READ) {
            true => BTreeSet::new(),
            false => held_with_balances(&mut transaction, tenant_id, consent, now).await?,
        };
        for (account, balance) in &fetched.accounts {
            sqlx::query(
                "INSERT INTO consent_accounts (tenant_id, consent_id, customer_id, institution, account_id) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, consent_id, institution, account_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&consent.id)
            .bind(&consent.customer_id)
            .bind(&consent.institution)
            .bind(&account.account_id)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            let number = shown_number(
                &account.kind,
                &format!("{}-{}", account.number, account.check_digit),
                crate::mask_card_numbers,
            );
            let sealed_number = cipher.seal(
                &number_context(tenant_id, &consent.customer_id, &consent.institution, &account.account_id),
                &number,
            );
            let (booked_from, account_fetched_at) = held_after(
                &mut transaction,
                tenant_id,
                &consent.customer_id,
                &consent.institution,
                &account.account_id,
                fetched.fetched_at,
            )
            .await?;
            if kept.contains(&account.account_id) {
                // Held under another consent that grants its balance: it stays there, balance
                // and all; only its description is refreshed.
                sqlx::query(
                    "UPDATE accounts SET kind = $5, brand_name = $6, number = $7, fetched_at = $8, booked_from = $9 \
                     WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4",
                )
                .bind(tenant_id)
                .bind(&consent.customer_id)
                .bind(&consent.institution)
                .bind(&account.account_id)
                .bind(&account.kind)
                .bind(&account.brand_name)
                .bind(&sealed_number)
                .bind(time::stored(account_fetched_at))
                .bind(booked_from.to_string())
                .execute(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
                continue;
            }
            let (balance_cents, balance_at) = match balance {
                Some(balance) => (balance.cents(), Some(balance.at().unwrap_or(now))),
                None => (None, None),
            };
            sqlx::query(
                "INSERT INTO accounts (tenant_id, customer_id, institution, account_id, consent_id, kind, brand_name, \
                 number, balance_cents, balance_at, fetched_at, booked_from) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (tenant_id, customer_id, institution, account_id) DO UPDATE SET \
                 consent_id = excluded.consent_id, kind = excluded.kind, brand_name = excluded.brand_name, \
                 number = excluded.number, balance_cents = excluded.balance_cents, balance_at = excluded.balance_at, \
                 fetched_at = excluded.fetched_at, booked_from = excluded.booked_from",
            )
            .bind(tenant_id)
            .bind(&consent.customer_id)
            .bind(&consent.institution)
            .bind(&account.account_id)
            .bind(&consent.id)
            .bind(&account.kind)
            .bind(&account.brand_name)
            .bind(&sealed_number)
            .bind(balance_cents)
            .bind(balance_at.map(time::stored))
            .bind(time::stored(account_fetched_at))
            .bind(booked_from.to_string())
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            stored.push(StoredAccount {
                fetched_by: vec![consent.id.clone()],
                institution: consent.institution.clone(),
                account_id: account.account_id.clone(),
                consent_id: consent.id.clone(),
                kind: account.kind.clone(),
                brand_name: account.brand_name.clone(),
                number,
                balance_cents,
                balance_at,
                summary: None,
                booked: (booked_from, brasilia_date(account_fetched_at)),
            });
        }
        // Transactions stored under an id in clear that holds a card number (by an earlier
        // version, fetched in an earlier window too) take the id they are stored under now.
        for (account, _) in &fetched.accounts {
            rename_card_ids(&mut transaction, &cipher, tenant_id, consent, &account.account_id).await?;
        }
        let mut inserted = 0;
        for (account_id, item) in &fetched.transactions {
            let amount = item.transaction_amount.cents().ok_or_else(|| {
                outside_shapes(consent, &format!("transaction {}'s amount is not an amount", item.transaction_id))
            })?;
            let booked_at = DateTime::parse_from_rfc3339(&item.transaction_date_time)
                .map_err(|_| {
                    outside_shapes(
                        consent,
                        &format!("transaction {}'s date and time is not RFC 3339", item.transaction_id),
                    )
                })?
                .with_timezone(&Utc);
            let name = crate::mask_name(&item.transaction_name);
            let result = sqlx::query(
                "INSERT INTO transactions (tenant_id, customer_id, institution, account_id, transaction_id, credit, \
                 kind, name, amount_cents, currency, booked_at, fetched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (tenant_id, customer_id, institution, account_id, transaction_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&consent.customer_id)
            .bind(&consent.institution)
            .bind(account_id)
            .bind(&item.transaction_id)
            .bind(i64::from(item.credit_debit_type == "CREDITO"))
            .bind(&item.kind)
            .bind(cipher.seal(&name_context(tenant_id, &consent.customer_id, &consent.institution, account_id), &name))
            .bind(amount)
            .bind(&item.transaction_amount.currency)
            .bind(time::stored(booked_at))
            .bind(&fetched_at)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            inserted += result.rows_affected();
            if result.rows_affected() == 0 {
                // Stored before: as the institution has it now (a transaction it corrected, its
                // amount, side or date), its name and type as masked now, should an earlier masking
                // (or version) have missed a card.
                let context = name_context(tenant_id, &consent.customer_id, &consent.institution, account_id);
                let row = sqlx::query(
                    "SELECT name, kind, credit, amount_cents, currency, booked_at FROM transactions \
                     WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4 \
                     AND transaction_id = $5",
                )
                .bind(tenant_id)
                .bind(&consent.customer_id)
                .bind(&consent.institution)
                .bind(account_id)
                .bind(&item.transaction_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
                let facts = (
                    i64::from(item.credit_debit_type == "CREDITO"),
                    amount,
                    item.transaction_amount.currency.clone(),
                    time::stored(booked_at),
                );
                let stored: Option<(String, String, BookedFacts)> = row
                    .map(|row| {
                        let facts = (
                            row.try_get("credit")?,
                            row.try_get("amount_cents")?,
                            row.try_get("currency")?,
                            row.try_get("booked_at")?,
                        );
                        Ok::<_, sqlx::Error>((row.try_get("name")?, row.try_get("kind")?, facts))
                    })
                    .transpose()
                    .map_err(StoreError::from)?;
                let clear =
                    stored.as_ref().is_some_and(|(stored, _, _)| !aigronova_platform::crypto::is_sealed(stored));
                // Compared as it was sealed, not as it is shown (masked again): one sealed with a card
                // an earlier masking missed is sealed again, masked.
                let current = stored
                    .as_ref()
                    .map(|(stored, _, _)| opened(&cipher, &context, stored, "a transaction's name"))
                    .transpose()?
                    .flatten();
                let kind_changed = stored.as_ref().is_some_and(|(_, kind, _)| *kind != item.kind);
                let corrected = stored.as_ref().is_some_and(|(_, _, stored)| *stored != facts);
                if clear || kind_changed || corrected || current.is_some_and(|current| current != name) {
                    let (credit, amount_cents, currency, booked) = facts;
                    sqlx::query(
                        "UPDATE transactions SET name = $6, kind = $7, credit = $8, amount_cents = $9, currency = $10, \
                         booked_at = $11 WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
                         AND account_id = $4 AND transaction_id = $5",
                    )
                    .bind(tenant_id)
                    .bind(&consent.customer_id)
                    .bind(&consent.institution)
                    .bind(account_id)
                    .bind(&item.transaction_id)
                    .bind(cipher.seal(&context, &name))
                    .bind(&item.kind)
                    .bind(credit)
                    .bind(amount_cents)
                    .bind(currency)
                    .bind(booked)
                    .execute(&mut *transaction)
                    .await
                    .map_err(StoreError::from)?;
                }
            }
        }
        if !kept.is_empty() {
            let held = read_accounts_only(&mut transaction, &cipher, tenant_id, &consent.customer_id).await?;
            stored
                .extend(held.into_iter().filter(|account| {
                    account.institution == consent.institution && kept.contains(&account.account_id)
                }));
        }
        for account in &stored {
            summarize_account(&mut transaction, &cipher, tenant_id, &consent.customer_id, account).await?;
        }
        // The later of two ingestions that ran at once, whichever stores last (times stored
        // in one fixed-width form compare as text).
        sqlx::query(
            "UPDATE consents SET last_ingested_at = CASE WHEN last_ingested_at > $3 THEN last_ingested_at ELSE $3 END \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(&consent.id)
        .bind(&fetched_at)
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        audit::enqueue(&mut transaction, &event(inserted)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(inserted)
    }

    /// Everything a credit score reads of the customer with `cpf`, in one transaction: the
    /// customer, their consents, and their accounts with the summaries kept at ingestion. `None`
    /// for a CPF the tenant has no customer for.
    pub(crate) async fn customer_data(&self, tenant_id: &str, cpf: &Cpf) -> Result<Option<CustomerData>, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let customer = find_customer(&mut transaction, tenant_id, &cipher.blind_index(cpf.as_str())).await?;
        let Some(customer_id) = customer else {
            transaction.commit().await.map_err(StoreError::from)?;
            return Ok(None);
        };
        let consents = consents_on(&mut transaction, tenant_id, &customer_id).await?;
        let accounts = read_accounts_only(&mut transaction, &cipher, tenant_id, &customer_id).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(Some(CustomerData { customer_id, consents, accounts }))
    }

    /// The accounts held under `usable` and their transactions booked at or after the time `since`
    /// names from the accounts (all of them when it names none), read in one transaction.
    pub(crate) async fn data_under(
        &self,
        tenant_id: &str,
        customer_id: &str,
        usable: &[&Consent],
        since: impl FnOnce(&[StoredAccount]) -> Option<DateTime<Utc>>,
        read: Option<&AuditEvent>,
    ) -> Result<HeldData, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        // A read shown to a caller commits with its audit event.
        let mut transaction = match read {
            Some(_) => self.database.begin_tenant_snapshot(tenant_id).await?,
            None => self.database.begin_tenant_read(tenant_id).await?,
        };
        // `since` sees the accounts the caller may use: an unusable one's older balance reads
        // nothing further back.
        let visible = |accounts: &[StoredAccount]| since(&visible_accounts(accounts.to_vec(), usable));
        let (accounts, transactions) =
            read_accounts(&mut transaction, &cipher, tenant_id, customer_id, visible).await?;
        if let Some(event) = read {
            audit::enqueue(&mut transaction, event).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        let accounts = visible_accounts(accounts, usable);
        let transactions =
            transactions.into_iter().filter(|item| accounts.iter().any(|account| item.belongs_to(account))).collect();
        Ok(HeldData { accounts, transactions })
    }

    /// Records an audit event on its own, for an operation that wrote nothing else.
    async fn record(&self, tenant_id: &str, event: &AuditEvent) -> Result<(), Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Stores a credit decision with its audit event.
    /// Stores `score`, made under `consents` (their ids), with its audit event. `NotFound` when
    /// the customer is gone, `PermissionDenied` when every one of the consents was revoked
    /// meanwhile.
    pub(crate) async fn insert_score(
        &self,
        tenant_id: &str,
        score: &StoredScore,
        consents: &[String],
        event: &AuditEvent,
    ) -> Result<(), Error> {
        // Stored only while one of the consents the score was made under is there and not revoked,
        // checked in the same statement: a score computed while an erasure (which deletes the
        // customer's consents, having locked them first) or a revocation ran is refused rather
        // than kept with the inputs the erasure removed, or made from data no longer to be used.
        // On PostgreSQL the consent's row is locked for share, so that an erasure or a revocation
        // waits for this insert (and then anonymises the score), or this insert waits for it; the
        // consents are the only rows locked, in the order an erasure locks them. SQLite writes one
        // transaction at a time.
        let lock = if self.database.backend() == Backend::Postgres { " FOR SHARE" } else { "" };
        let consent_params = (0..consents.len()).map(|at| format!("${}", 13 + at)).collect::<Vec<_>>().join(", ");
        let consent_params = if consents.is_empty() { "NULL".to_owned() } else { consent_params };
        // The declared data and the bank's figures a decision was made from are the customer's:
        // sealed, as a transaction's name is.
        let cipher = self.keys.cipher(tenant_id).await?;
        let sealed = |column: &str, value: &serde_json::Value| {
            cipher.seal(&score_context(tenant_id, &score.id, column), &value.to_string())
        };
        let mut params: Vec<Param> = vec![
            tenant_id.into(),
            score.id.as_str().into(),
            score.customer_id.as_str().into(),
            score.model.as_str().into(),
            score.model_version.as_str().into(),
            sealed("features", &score.features).into(),
            sealed("bank", &score.bank).into(),
            score.probability.into(),
            score.score.into(),
            score.risk_band.as_str().into(),
            serde_json::Value::from(score.reasons.clone()).to_string().into(),
            time::stored(score.created_at).into(),
        ];
        params.extend(consents.iter().map(|id| Param::from(id.as_str())));
        let stored = audit::write_recorded(
            &self.database,
            tenant_id,
            &format!(
                "INSERT INTO credit_scores (tenant_id, id, customer_id, model, model_version, features, bank, \
                 probability, score, risk_band, reasons, created_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                 WHERE EXISTS (SELECT 1 FROM consents WHERE tenant_id = $1 AND customer_id = $3 \
                 AND id IN ({consent_params}) AND revoked_at IS NULL{lock})"
            ),
            params,
            event,
        )
        .await?;
        if stored {
            return Ok(());
        }
        let customer = sqlx::query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(&score.customer_id)
            .fetch_optional(self.database.pool())
            .await
            .map_err(StoreError::from)?;
        match customer {
            None => Err(Error::NotFound(format!("customer {}", score.customer_id))),
            Some(_) => Err(Error::PermissionDenied(
                "the customer's consent was revoked while the score was made; nothing was stored".into(),
            )),
        }
    }

    pub(crate) async fn score(
        &self,
        tenant_id: &str,
        id: &str,
        event: impl FnOnce(&StoredScore) -> AuditEvent,
    ) -> Result<StoredScore, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let row = sqlx::query("SELECT * FROM credit_scores WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound(format!("credit score {id}")))?;
        let score = score_of(&row, &cipher, tenant_id)?;
        audit::enqueue(&mut transaction, &event(&score)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(score)
    }

    /// Deletes the data held under every consent whose deletion is due at `now` (revoked, or
    /// expired), each consent with its audit event, and marks the consents purged. A consent whose
    /// purge fails is logged and left for the next round; the others go on.
    pub(crate) async fn purge_due(
        &self,
        now: DateTime<Utc>,
        event: impl Fn(&Purged) -> AuditEvent,
    ) -> Result<Vec<Purged>, Error> {
        let due = {
            let rows = sqlx::query(
                "SELECT tenant_id, id, customer_id FROM consents WHERE purged_at IS NULL AND purge_due_at <= $1 \
                 ORDER BY purge_due_at",
            )
            .bind(time::stored(now))
            .fetch_all(self.database.pool())
            .await
            .map_err(StoreError::from)?;
            rows.iter()
                .map(|row| {
                    Ok((row.try_get::<String, _>("tenant_id")?, row.try_get("id")?, row.try_get("customer_id")?))
                })
                .collect::<Result<Vec<(String, String, String)>, sqlx::Error>>()
                .map_err(StoreError::from)?
        };
        let mut purged = Vec::new();
        for (tenant_id, consent_id, customer_id) in due {
            match self.purge_one(&tenant_id, &consent_id, &customer_id, now, &event).await {
                Ok(Some(done)) => purged.push(done),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, tenant = %tenant_id, consent = %consent_id, "purge of a consent failed; retried next round");
                }
            }
        }
        Ok(purged)
    }

    /// Purges consent `consent_id` of `customer_id`, unless another replica has done it meanwhile.
    async fn purge_one(
        &self,
        tenant_id: &str,
        consent_id: &str,
        customer_id: &str,
        now: DateTime<Utc>,
        event: &impl Fn(&Purged) -> AuditEvent,
    ) -> Result<Option<Purged>, Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // Replicas purge, ingest and erase concurrently: each locks the customer's consents first.
        lock_customer(&mut transaction, self.database.backend(), tenant_id, customer_id).await?;
        let still_due = sqlx::query("SELECT id FROM consents WHERE tenant_id = $1 AND id = $2 AND purged_at IS NULL")
            .bind(tenant_id)
            .bind(consent_id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        if still_due.is_none() {
            transaction.rollback().await.map_err(StoreError::from)?;
            return Ok(None);
        }
        let (accounts, transactions, kept_under) =
            hand_on_or_delete(&mut transaction, tenant_id, consent_id, now).await?;
        sqlx::query("DELETE FROM consent_accounts WHERE tenant_id = $1 AND consent_id = $2")
            .bind(tenant_id)
            .bind(consent_id)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        sqlx::query("UPDATE consents SET purged_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(consent_id)
            .bind(time::stored(now))
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        let done = Purged {
            tenant_id: tenant_id.to_owned(),
            consent_id: consent_id.to_owned(),
            accounts,
            transactions,
            kept_under,
        };
        if accounts > 0 || transactions > 0 || !done.kept_under.is_empty() {
            audit::enqueue(&mut transaction, &event(&done)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(Some(done))
    }

    /// Everything held about `cpf`: the customer, consents, accounts, transactions and credit
    /// decisions; the read and its audit event (`event(&customer_ids)`) commit together.
    pub(crate) async fn export_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&[String]) -> AuditEvent,
    ) -> Result<serde_json::Value, Error> {
        let Some(customer_id) = self.customer_by_cpf(tenant_id, cpf).await? else {
            // The lookup is audited even when it finds nobody.
            self.record(tenant_id, &event(&[])).await?;
            return Ok(serde_json::json!({"customers": []}));
        };
        let consents = self.consents_of(tenant_id, &customer_id).await?;
        let all: Vec<&Consent> = consents.iter().collect();
        let HeldData { accounts, transactions, .. } =
            self.data_under(tenant_id, &customer_id, &all, |_| None, None).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let scores = sqlx::query("SELECT * FROM credit_scores WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id")
            .bind(tenant_id)
            .bind(&customer_id)
            .fetch_all(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        let cipher = self.keys.cipher(tenant_id).await?;
        let scores = scores.iter().map(|row| score_of(row, &cipher, tenant_id)).collect::<Result<Vec<_>, _>>()?;
        audit::enqueue(&mut transaction, &event(std::slice::from_ref(&customer_id))).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        let now = Utc::now();
        Ok(serde_json::json!({"customers": [{
            "id": customer_id,
            "cpf": cpf.as_str(),
            "consents": consents.iter().map(|consent| serde_json::json!({
                "id": consent.id,
                "institution": consent.institution,
                "permissions": consent.permissions.iter().collect::<Vec<_>>(),
                "status": consent.status_at(now).as_str(),
                "expiresAt": time::stored(consent.expires_at),
                "createTime": time::stored(consent.created_at),
                "revokeTime": consent.revoked_at.map(time::stored),
                "lastIngestionTime": consent.last_ingested_at.map(time::stored),
            })).collect::<Vec<_>>(),
            "accounts": accounts.iter().map(|account| serde_json::json!({
                "institution": account.institution,
                "accountId": account.account_id,
                "type": account.kind,
                "number": account.number,
                "balance": account.balance_cents.map(crate::scoring::reais),
                "transactions": transactions.iter().filter(|t| t.belongs_to(account)).map(|t| serde_json::json!({
                    "id": t.transaction_id,
                    "creditDebitType": if t.credit { "CREDITO" } else { "DEBITO" },
                    "type": t.kind,
                    "name": t.name,
                    "amount": crate::scoring::reais(t.amount_cents),
                    "bookedAt": time::stored(t.booked_at),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "creditScores": scores.iter().map(|score| serde_json::json!({
                "id": score.id,
                "score": score.score,
                "riskBand": score.risk_band,
                "model": score.model,
                "modelVersion": score.model_version,
                "probabilityOfDefault": score.probability,
                "features": score.features,
                "bank": in_reais(&score.bank),
                "reasons": self.words.reasons(
                    &score.reasons,
                    &serde_json::from_value(score.features.clone()).unwrap_or_default(),
                    &crate::scoring::withheld_in(&score.bank),
                )
                    .into_iter()
                    .map(|reason| serde_json::json!({"code": reason.code, "description": reason.description}))
                    .collect::<Vec<_>>(),
                "createTime": time::stored(score.created_at),
            })).collect::<Vec<_>>(),
        }]}))
    }

    /// Erases `cpf`: its consents, accounts and transactions are deleted and the customer's CPF
    /// with them; credit decisions stay, their inputs emptied and their customer id cleared. Returns the records deleted and
    /// the decisions kept.
    pub(crate) async fn erase_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&str, u64) -> AuditEvent,
    ) -> Result<Erased, Error> {
        let Some(customer_id) = self.customer_by_cpf(tenant_id, cpf).await? else {
            self.record(tenant_id, &event("none", 0)).await?;
            return Ok(Erased::default());
        };
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // The consents first, locked: an ingestion under one of them either has committed (and
        // its rows are deleted below) or waits, then finds its consent gone.
        lock_customer(&mut transaction, self.database.backend(), tenant_id, &customer_id).await?;
        let consents: Vec<String> =
            sqlx::query_scalar("SELECT id FROM consents WHERE tenant_id = $1 AND customer_id = $2")
                .bind(tenant_id)
                .bind(&customer_id)
                .fetch_all(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
        sqlx::query("DELETE FROM consent_accounts WHERE tenant_id = $1 AND customer_id = $2")
            .bind(tenant_id)
            .bind(&customer_id)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        let mut erased = 0;
        for statement in [
            "DELETE FROM transactions WHERE tenant_id = $1 AND customer_id = $2",
            "DELETE FROM accounts WHERE tenant_id = $1 AND customer_id = $2",
            "DELETE FROM consents WHERE tenant_id = $1 AND customer_id = $2",
            "DELETE FROM customers WHERE tenant_id = $1 AND id = $2",
        ] {
            erased += sqlx::query(statement)
                .bind(tenant_id)
                .bind(&customer_id)
                .execute(&mut *transaction)
                .await
                .map_err(StoreError::from)?
                .rows_affected();
        }
        let kept = sqlx::query(
            "UPDATE credit_scores SET features = $3, bank = $3, customer_id = '' WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(tenant_id)
        .bind(&customer_id)
        .bind(ERASED_INPUTS)
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?
        .rows_affected();
        audit::enqueue(&mut transaction, &event(&customer_id, erased)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(Erased { erased, kept, consents })
    }
}

/// What an erasure did: the rows deleted, the credit decisions kept without their inputs, and the
/// consents deleted (whose cached pages go too).
#[derive(Debug, Default)]
pub(crate) struct Erased {
    pub(crate) erased: u64,
    pub(crate) kept: u64,
    pub(crate) consents: Vec<String>,
}

/// What is held of a customer under some consents (see [`Store::data_under`]).
#[derive(Debug)]
pub(crate) struct HeldData {
    pub(crate) accounts: Vec<StoredAccount>,
    pub(crate) transactions: Vec<StoredTransaction>,
}

/// What a credit score reads of a customer (see [`Store::customer_data`]).
#[derive(Debug)]
pub(crate) struct CustomerData {
    pub(crate) customer_id: String,
    pub(crate) consents: Vec<Consent>,
    pub(crate) accounts: Vec<StoredAccount>,
}

/// The columns [`transaction_of`] reads.
macro_rules! transaction_columns {
    () => {
        "institution, account_id, transaction_id, credit, kind, name, amount_cents, booked_at"
    };
}

/// The id of the customer whose CPF has the blind index `cpf_hash`.
async fn find_customer(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    cpf_hash: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT id FROM customers WHERE tenant_id = $1 AND cpf_hash = $2")
        .bind(tenant_id)
        .bind(cpf_hash)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row.map(|row| row.try_get::<String, _>("id")).transpose()?)
}

/// The ids of the accounts of `consent`'s customer at its institution held under another consent
/// that is authorised at `now` and grants their balances.
async fn held_with_balances(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    consent: &Consent,
    now: DateTime<Utc>,
) -> Result<BTreeSet<String>, StoreError> {
    let holders: BTreeSet<String> = consents_on(connection, tenant_id, &consent.customer_id)
        .await?
        .into_iter()
        .filter(|other| {
            other.id != consent.id
                && other.status_at(now) == ConsentStatus::Authorised
                && other.permissions.grants(ACCOUNTS_BALANCES_READ)
        })
        .map(|other| other.id)
        .collect();
    let rows = sqlx::query(
        "SELECT account_id, consent_id FROM accounts WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3",
    )
    .bind(tenant_id)
    .bind(&consent.customer_id)
    .bind(&consent.institution)
    .fetch_all(&mut *connection)
    .await?;
    let mut kept = BTreeSet::new();
    for row in rows {
        if holders.contains(&row.try_get::<String, _>("consent_id")?) {
            kept.insert(row.try_get::<String, _>("account_id")?);
        }
    }
    Ok(kept)
}

/// On PostgreSQL, locks the rows of `customer_id`'s consents, in id order, until the transaction
/// ends: purges, ingestions and erasures of a customer take their turns, and never wait for each
/// other in a circle (SQLite's write transactions exclude each other already).
async fn lock_customer(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
    tenant_id: &str,
    customer_id: &str,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT id FROM consents WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id FOR UPDATE")
            .bind(tenant_id)
            .bind(customer_id)
            .fetch_all(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The accounts held under `consent_id`, purged at `now`: each passes to another consent of the
/// customer that is authorised, fetched that account too and is not being purged (one that grants
/// balances first, then the one that fetched last), without its balance and summary when that
/// consent grants no balances; an account no such consent fetched is deleted with its
/// transactions. Returns the accounts and transactions deleted, and the consents the accounts
/// handed on passed to.
async fn hand_on_or_delete(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    consent_id: &str,
    now: DateTime<Utc>,
) -> Result<(u64, u64, Vec<String>), StoreError> {
    let row = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(consent_id)
        .fetch_one(&mut *connection)
        .await?;
    let purged = consent_of(&row)?;
    let held: Vec<String> = sqlx::query("SELECT account_id FROM accounts WHERE tenant_id = $1 AND consent_id = $2")
        .bind(tenant_id)
        .bind(consent_id)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("account_id"))
        .collect::<Result<_, _>>()?;
    let (mut accounts, mut transactions, mut kept_under) = (0, 0, Vec::new());
    for account_id in held {
        let fetched_by: Vec<String> = sqlx::query(
            "SELECT consent_id FROM consent_accounts WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
             AND account_id = $4 AND consent_id <> $5",
        )
        .bind(tenant_id)
        .bind(&purged.customer_id)
        .bind(&purged.institution)
        .bind(&account_id)
        .bind(consent_id)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("consent_id"))
        .collect::<Result<_, _>>()?;
        let mut heirs = Vec::new();
        for id in fetched_by {
            heirs.extend(valid_heir(connection, tenant_id, &id, now).await?);
        }
        let heir = heirs
            .into_iter()
            .max_by_key(|heir| (heir.permissions.grants(ACCOUNTS_BALANCES_READ), heir.last_ingested_at));
        // Matched by the purged consent too: only a row still held under it is handed on or deleted.
        let key = |query: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>| {
            query
                .bind(tenant_id.to_owned())
                .bind(purged.customer_id.clone())
                .bind(purged.institution.clone())
                .bind(account_id.clone())
                .bind(consent_id.to_owned())
        };
        match heir {
            Some(heir) => {
                let sql = if heir.permissions.grants(ACCOUNTS_BALANCES_READ) {
                    "UPDATE accounts SET consent_id = $6 \
                     WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4 \
                     AND consent_id = $5"
                } else {
                    "UPDATE accounts SET consent_id = $6, balance_cents = NULL, balance_at = NULL, summary = NULL \
                     WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4 \
                     AND consent_id = $5"
                };
                key(sqlx::query(sql)).bind(heir.id.clone()).execute(&mut *connection).await?;
                if !kept_under.contains(&heir.id) {
                    kept_under.push(heir.id);
                }
            }
            None => {
                transactions += key(sqlx::query(
                    "DELETE FROM transactions \
                     WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4 \
                     AND EXISTS (SELECT 1 FROM accounts a WHERE a.tenant_id = $1 AND a.customer_id = $2 \
                     AND a.institution = $3 AND a.account_id = $4 AND a.consent_id = $5)",
                ))
                .execute(&mut *connection)
                .await?
                .rows_affected();
                accounts += key(sqlx::query(
                    "DELETE FROM accounts WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
                     AND account_id = $4 AND consent_id = $5",
                ))
                .execute(&mut *connection)
                .await?
                .rows_affected();
            }
        }
    }
    Ok((accounts, transactions, kept_under))
}

/// Consent `id`, when it is not purged and may fetch accounts and transactions at `now`.
async fn valid_heir(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Consent>, StoreError> {
    let row = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND id = $2 AND purged_at IS NULL")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    let consent = row.as_ref().map(consent_of).transpose()?;
    Ok(consent.filter(|consent| consent.allows(&[ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ], now).is_ok()))
}

/// Every consent of `customer_id`, oldest first.
/// The rows of `table` (`consents` or `credit_scores`) of the customer on `page`, newest first,
/// and one more when more follow; `NotFound` for a customer the tenant does not have.
async fn customer_page(
    connection: &mut sqlx::AnyConnection,
    table: &'static str,
    tenant_id: &str,
    customer_id: &str,
    page: Page<'_>,
) -> Result<Vec<AnyRow>, Error> {
    require_customer(connection, tenant_id, customer_id).await?;
    let sql = format!(
        "SELECT * FROM {table} WHERE tenant_id = $1 AND customer_id = $2 AND ($3 = '' OR id < $3) \
         ORDER BY id DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(customer_id)
        .bind(page.after.unwrap_or_default())
        .bind(page.limit_with_one_more())
        .fetch_all(&mut *connection)
        .await
        .map_err(StoreError::from)?;
    Ok(rows)
}

/// `NotFound` unless `customer_id` is a customer of `tenant_id`.
async fn require_customer(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    customer_id: &str,
) -> Result<(), Error> {
    sqlx::query("SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(customer_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound(format!("customer {customer_id}")))?;
    Ok(())
}

/// The consent `id` of the tenant; `NotFound` when it has none.
async fn consent_on(connection: &mut sqlx::AnyConnection, tenant_id: &str, id: &str) -> Result<Consent, Error> {
    let row = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound(format!("consent {id}")))?;
    Ok(consent_of(&row)?)
}

async fn consents_on(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    customer_id: &str,
) -> Result<Vec<Consent>, StoreError> {
    let rows = sqlx::query("SELECT * FROM consents WHERE tenant_id = $1 AND customer_id = $2 ORDER BY id")
        .bind(tenant_id)
        .bind(customer_id)
        .fetch_all(&mut *connection)
        .await?;
    rows.iter().map(consent_of).collect()
}

/// The customer's accounts, their numbers opened.
async fn read_accounts_only(
    connection: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    customer_id: &str,
) -> Result<Vec<StoredAccount>, StoreError> {
    let rows = sqlx::query(
        "SELECT institution, account_id, consent_id, kind, brand_name, number, balance_cents, balance_at, summary, \
         fetched_at, booked_from FROM accounts WHERE tenant_id = $1 AND customer_id = $2 ORDER BY institution, account_id",
    )
    .bind(tenant_id)
    .bind(customer_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut accounts = rows.iter().map(account_of).collect::<Result<Vec<_>, _>>()?;
    for account in &mut accounts {
        let context = number_context(tenant_id, customer_id, &account.institution, &account.account_id);
        // Masked again for a number an earlier version stored with a card number in it.
        let number = open_number(cipher, &context, &account.number)?;
        account.number = shown_number(&account.kind, &number, crate::mask_card_numbers_again);
    }
    let fetches = sqlx::query(
        "SELECT institution, account_id, consent_id FROM consent_accounts WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant_id)
    .bind(customer_id)
    .fetch_all(&mut *connection)
    .await?;
    for fetch in fetches {
        let (institution, account_id): (String, String) = (fetch.try_get("institution")?, fetch.try_get("account_id")?);
        if let Some(account) =
            accounts.iter_mut().find(|account| account.institution == institution && account.account_id == account_id)
        {
            account.fetched_by.push(fetch.try_get("consent_id")?);
        }
    }
    for account in &mut accounts {
        if !account.fetched_by.contains(&account.consent_id) {
            account.fetched_by.push(account.consent_id.clone());
        }
    }
    Ok(accounts)
}

/// Computes and keeps the summary of `account` (as just stored) from its balance and the
/// transactions of the window before it.
async fn summarize_account(
    connection: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    customer_id: &str,
    account: &StoredAccount,
) -> Result<(), StoreError> {
    // Without a balance there is nothing to summarise, and no summary of an earlier one is kept.
    let summary = match account.balance_at {
        Some(at) => summary_of(connection, cipher, tenant_id, customer_id, account, at).await?,
        None => None,
    };
    sqlx::query(
        "UPDATE accounts SET summary = $5 WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
         AND account_id = $4",
    )
    .bind(tenant_id)
    .bind(customer_id)
    .bind(&account.institution)
    .bind(&account.account_id)
    .bind(summary)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A stored transaction's side (1 for a credit), amount in cents, currency and booking time, as
/// stored: what an institution's correction of it may change.
type BookedFacts = (i64, i64, String, String);

/// The summary of `account` over the window before its balance at `at` (and the slack of its
/// oldest salary), as stored JSON.
async fn summary_of(
    connection: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    customer_id: &str,
    account: &StoredAccount,
    at: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        transaction_columns!(),
        " FROM transactions WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4 \
         AND booked_at >= $5"
    ))
    .bind(tenant_id)
    .bind(customer_id)
    .bind(&account.institution)
    .bind(&account.account_id)
    .bind(time::stored(at - chrono::Duration::days(SUMMARY_DAYS)))
    .fetch_all(&mut *connection)
    .await?;
    let transactions =
        rows.iter().map(|row| transaction_of(row, cipher, tenant_id, customer_id)).collect::<Result<Vec<_>, _>>()?;
    AccountSummary::of(account, &transactions)
        .map(|summary| serde_json::to_string(&summary).map_err(|error| StoreError::Corrupt(error.to_string())))
        .transpose()
}

/// The customer's accounts and their transactions booked at or after `since(&accounts)` (all
/// of them when it is `None`). Stored times sort as text, so the bound is a text comparison.
async fn read_accounts(
    connection: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    customer_id: &str,
    since: impl FnOnce(&[StoredAccount]) -> Option<DateTime<Utc>>,
) -> Result<(Vec<StoredAccount>, Vec<StoredTransaction>), StoreError> {
    let accounts = read_accounts_only(connection, cipher, tenant_id, customer_id).await?;
    if accounts.is_empty() {
        return Ok((accounts, Vec::new()));
    }
    let since = since(&accounts).map_or_else(String::new, time::stored);
    let rows = sqlx::query(concat!(
        "SELECT ",
        transaction_columns!(),
        " FROM transactions WHERE tenant_id = $1 AND customer_id = $2 AND booked_at >= $3"
    ))
    .bind(tenant_id)
    .bind(customer_id)
    .bind(since)
    .fetch_all(&mut *connection)
    .await?;
    let transactions =
        rows.iter().map(|row| transaction_of(row, cipher, tenant_id, customer_id)).collect::<Result<Vec<_>, _>>()?;
    Ok((accounts, transactions))
}

fn stored_time(row: &AnyRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.try_get::<Option<String>, _>(column)?.map(|text| time::parse_stored(column, &text)).transpose()
}

fn required_time(row: &AnyRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    stored_time(row, column)?.ok_or_else(|| StoreError::Corrupt(format!("{column} is empty")))
}

fn consent_of(row: &AnyRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        institution: row.try_get("institution")?,
        permissions: Permissions::from_stored(&row.try_get::<String, _>("permissions")?),
        expires_at: required_time(row, "expires_at")?,
        created_at: required_time(row, "created_at")?,
        revoked_at: stored_time(row, "revoked_at")?,
        last_ingested_at: stored_time(row, "last_ingested_at")?,
    })
}

/// The first booking day from which every transaction of the account is held once a fetch begun
/// at `fetched_at` is stored, and the time of the account's latest fetch: the first day held
/// before when the fetch's window meets or overlaps the days held (none missing between them),
/// the window's own otherwise; the later of the two fetches (an ingestion that began earlier may
/// store after another).
async fn held_after(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    customer_id: &str,
    institution: &str,
    account_id: &str,
    fetched_at: DateTime<Utc>,
) -> Result<(NaiveDate, DateTime<Utc>), StoreError> {
    let window = openfinance::booking_window(fetched_at);
    let row = sqlx::query(
        "SELECT * FROM accounts WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 AND account_id = $4",
    )
    .bind(tenant_id)
    .bind(customer_id)
    .bind(institution)
    .bind(account_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else { return Ok((window.0, fetched_at)) };
    let (held_from, held_through) = account_of(&row)?.booked;
    let held_at = time::parse_stored("accounts.fetched_at", &row.try_get::<String, _>("fetched_at")?)?;
    let from = match held_through.succ_opt().is_some_and(|next| window.0 <= next) {
        true => held_from.min(window.0),
        false => window.0,
    };
    Ok((from, held_at.max(fetched_at)))
}

/// Renames the account's transactions stored under an id in clear that holds a card number to
/// [`crate::stored_transaction_id`], and those whose masked id still shows one an earlier masking
/// missed to [`crate::stored_card_id_now`]; one whose new id is stored already (fetched since) is
/// dropped.
async fn rename_card_ids(
    connection: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    consent: &Consent,
    account_id: &str,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT transaction_id FROM transactions WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
         AND account_id = $4",
    )
    .bind(tenant_id)
    .bind(&consent.customer_id)
    .bind(&consent.institution)
    .bind(account_id)
    .fetch_all(&mut *connection)
    .await?;
    for row in rows {
        let clear: String = row.try_get("transaction_id")?;
        let stored = crate::stored_card_id_now(&clear).unwrap_or_else(|| crate::stored_transaction_id(cipher, &clear));
        if stored == clear {
            continue;
        }
        sqlx::query(
            "UPDATE transactions SET transaction_id = $6 WHERE tenant_id = $1 AND customer_id = $2 \
             AND institution = $3 AND account_id = $4 AND transaction_id = $5 AND NOT EXISTS (SELECT 1 FROM \
             transactions AS held WHERE held.tenant_id = $1 AND held.customer_id = $2 AND held.institution = $3 \
             AND held.account_id = $4 AND held.transaction_id = $6)",
        )
        .bind(tenant_id)
        .bind(&consent.customer_id)
        .bind(&consent.institution)
        .bind(account_id)
        .bind(&clear)
        .bind(&stored)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "DELETE FROM transactions WHERE tenant_id = $1 AND customer_id = $2 AND institution = $3 \
             AND account_id = $4 AND transaction_id = $5",
        )
        .bind(tenant_id)
        .bind(&consent.customer_id)
        .bind(&consent.institution)
        .bind(account_id)
        .bind(&clear)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

fn account_of(row: &AnyRow) -> Result<StoredAccount, StoreError> {
    let fetched_at = time::parse_stored("accounts.fetched_at", &row.try_get::<String, _>("fetched_at")?)?;
    // Accounts fetched before the first booking day was kept count from their last fetch's.
    let booked_from = match row.try_get::<Option<String>, _>("booked_from")? {
        Some(text) => {
            text.parse().map_err(|error| StoreError::Corrupt(format!("accounts.booked_from {text:?}: {error}")))?
        }
        None => openfinance::booking_window(fetched_at).0,
    };
    Ok(StoredAccount {
        institution: row.try_get("institution")?,
        account_id: row.try_get("account_id")?,
        consent_id: row.try_get("consent_id")?,
        // Masked as the ingestion masks them now, for rows an earlier version stored.
        kind: crate::mask_card_numbers(&row.try_get::<String, _>("kind")?),
        brand_name: crate::mask_card_numbers(&row.try_get::<String, _>("brand_name")?),
        number: row.try_get("number")?,
        balance_cents: row.try_get("balance_cents")?,
        balance_at: stored_time(row, "balance_at")?,
        summary: row
            .try_get::<Option<String>, _>("summary")?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|error| StoreError::Corrupt(format!("accounts.summary: {error}")))?,
        fetched_by: Vec::new(),
        booked: (booked_from, brasilia_date(fetched_at)),
    })
}

/// The account type whose number may be its card's: a prepaid payment account.
const PREPAID: &str = "CONTA_PAGAMENTO_PRE_PAGA";

/// An account's `number` (`number-checkDigit`) as it is stored and shown: for a prepaid payment
/// account, whose number may be its card's (its last digit given as the check digit, or not),
/// with any card number in it masked by `mask`; any other account's as the institution gave it,
/// since a bank account number of 13 to 19 digits passes the Luhn check one time in ten.
fn shown_number(kind: &str, number: &str, mask: fn(&str) -> String) -> String {
    match kind {
        PREPAID => mask(number),
        _ => number.to_owned(),
    }
}

/// What an account's number (and check digit) is sealed for: its tenant, customer and account.
fn number_context(tenant_id: &str, customer_id: &str, institution: &str, account_id: &str) -> String {
    format!("accounts/{tenant_id}/{customer_id}/{institution}/{account_id}/number")
}

/// An account's number opened with the tenant's key; one still in clear (stored by an earlier
/// version) as it is, until the purge's pass seals it ([`Store::seal_clear_numbers`]).
fn open_number(cipher: &TenantCipher, context: &str, stored: &str) -> Result<String, StoreError> {
    Ok(opened(cipher, context, stored, "an account's number")?.unwrap_or_else(|| stored.to_owned()))
}

/// `stored` opened with the tenant's key for `context`; `None` for a value still in clear (an
/// earlier version's). `what` names the value in the error when it does not open.
fn opened(cipher: &TenantCipher, context: &str, stored: &str, what: &str) -> Result<Option<String>, StoreError> {
    if !aigronova_platform::crypto::is_sealed(stored) {
        return Ok(None);
    }
    cipher.open(context, stored).map(Some).map_err(|_| StoreError::Corrupt(format!("{what} does not open")))
}

/// What a transaction's name is sealed for: its tenant, customer and account. (Not its id, which
/// an id holding a card number changes for, see `rename_card_ids`.)
fn name_context(tenant_id: &str, customer_id: &str, institution: &str, account_id: &str) -> String {
    format!("transactions/{tenant_id}/{customer_id}/{institution}/{account_id}/name")
}

/// A transaction's name opened with the tenant's key; one still in clear (stored by an earlier
/// version, which may still run beside this one during a rolling upgrade) as it is, until the
/// purge's pass seals it ([`Store::seal_clear_names`]).
fn open_name(cipher: &TenantCipher, context: &str, stored: &str) -> Result<String, StoreError> {
    Ok(match opened(cipher, context, stored, "a transaction's name")? {
        // Masked as now too, what the masking that sealed it left kept as it is: one sealed with a
        // card or a CPF an earlier masking missed is not shown whole.
        Some(name) => crate::mask_name_again(&name),
        // Its card numbers and CPFs masked as now, whatever the version that stored it missed.
        None => crate::mask_name(stored),
    })
}

fn transaction_of(
    row: &AnyRow,
    cipher: &TenantCipher,
    tenant_id: &str,
    customer_id: &str,
) -> Result<StoredTransaction, StoreError> {
    let institution: String = row.try_get("institution")?;
    let account_id: String = row.try_get("account_id")?;
    let context = name_context(tenant_id, customer_id, &institution, &account_id);
    let name = open_name(cipher, &context, &row.try_get::<String, _>("name")?)?;
    Ok(StoredTransaction {
        institution,
        account_id,
        transaction_id: row.try_get("transaction_id")?,
        credit: row.try_get::<i64, _>("credit")? != 0,
        kind: crate::mask_card_numbers(&row.try_get::<String, _>("kind")?),
        name,
        amount_cents: row.try_get("amount_cents")?,
        booked_at: required_time(row, "booked_at")?,
    })
}

/// What a credit decision's `column` (`features`, `bank`) is sealed for: its tenant and row.
fn score_context(tenant_id: &str, id: &str, column: &str) -> String {
    format!("credit_scores/{tenant_id}/{id}/{column}")
}

/// What an erasure leaves of a decision's inputs, in clear: nothing.
const ERASED_INPUTS: &str = "{}";

/// Rows a batch of [`Store::seal_clear_names`], [`Store::seal_clear_numbers`] or
/// [`Store::seal_clear_inputs`] seals at most.
pub(crate) const SEAL_BATCH: i64 = 500;

/// Rows sealed in one transaction, so that a sealing holds few rows locked at a time.
const SEAL_TRANSACTION: usize = 50;

/// What a batch of sealing found in clear, and how many of those rows it sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sealing {
    pub(crate) selected: usize,
    pub(crate) sealed: usize,
}

/// ` AND tenant_id NOT IN ($first, …)` for the tenants of `skip`, or nothing.
fn not_in(skip: &BTreeSet<String>, first: usize) -> String {
    if skip.is_empty() {
        return String::new();
    }
    let placeholders: Vec<String> = (first..first + skip.len()).map(|n| format!("${n}")).collect();
    format!(" AND tenant_id NOT IN ({})", placeholders.join(", "))
}

/// `query` with the tenants of `skip` bound, in order, to its next parameters.
fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    skip: &BTreeSet<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for tenant in skip {
        query = query.bind(tenant.clone());
    }
    query
}

fn score_of(row: &AnyRow, cipher: &TenantCipher, tenant_id: &str) -> Result<StoredScore, StoreError> {
    let id: String = row.try_get("id")?;
    let json = |column: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&row.try_get::<String, _>(column)?)
            .map_err(|error| StoreError::Corrupt(format!("credit_scores.{column}: {error}")))
    };
    // Sealed when stored; what an earlier version stored in clear is read as it is until the
    // purge's pass seals it ([`Store::seal_clear_inputs`]), and an erasure leaves them empty.
    let opened = |column: &str| -> Result<serde_json::Value, StoreError> {
        let stored: String = row.try_get(column)?;
        if stored == ERASED_INPUTS || !aigronova_platform::crypto::is_sealed(&stored) {
            return json(column);
        }
        let text = cipher
            .open(&score_context(tenant_id, &id, column), &stored)
            .map_err(|_| StoreError::Corrupt(format!("credit score {id}: its {column} do not open")))?;
        serde_json::from_str(&text).map_err(|error| StoreError::Corrupt(format!("credit_scores.{column}: {error}")))
    };
    Ok(StoredScore {
        customer_id: row.try_get("customer_id")?,
        model: row.try_get("model")?,
        model_version: row.try_get("model_version")?,
        features: opened("features")?,
        bank: opened("bank")?,
        probability: row.try_get("probability")?,
        score: row.try_get("score")?,
        risk_band: row.try_get("risk_band")?,
        reasons: serde_json::from_value(json("reasons")?)
            .map_err(|error| StoreError::Corrupt(format!("credit_scores.reasons: {error}")))?,
        created_at: required_time(row, "created_at")?,
        id,
    })
}

/// Checks what an institution sent before any of it is stored: every text without control
/// characters (which PostgreSQL's text refuses, NUL among them, and which break a statement's
/// lines), ids present, balances and amounts that read in reais (BRL: the statements and the
/// model know no other currency), transactions credit or debit and dated in RFC 3339 (one id
/// standing for two different transactions is refused as the pages are read). What is wrong, in
/// words.
fn check_shapes(fetched: &Fetched) -> Result<(), String> {
    // Bidirectional overrides too, which would show a statement's text in another order than it is.
    let text = |what: &str, value: &str| match value
        .chars()
        .find(|c| c.is_control() || aigronova_platform::text::is_bidi_control(*c))
    {
        Some(c) => Err(format!("{what} holds a control character (U+{:04X})", u32::from(c))),
        None => Ok(()),
    };
    let reais = |what: &str, amount: &openfinance::Amount, cents: Option<i64>| match (cents, amount.currency.as_str()) {
        (None, _) => Err(format!("{what} is not an amount")),
        (Some(_), "BRL") => Ok(()),
        (Some(_), other) => Err(format!("{what} is in {other:?}, not BRL")),
    };
    for (account, balance) in &fetched.accounts {
        let id = &account.account_id;
        if id.is_empty() {
            return Err("an account has no accountId".to_owned());
        }
        text("an accountId", id)?;
        for (field, value) in [
            ("brandName", &account.brand_name),
            ("type", &account.kind),
            ("number", &account.number),
            ("checkDigit", &account.check_digit),
        ] {
            text(&format!("account {id}'s {field}"), value)?;
        }
        if let Some(balance) = balance {
            reais(&format!("account {id}'s available amount"), &balance.available_amount, balance.cents())?;
            for (what, amount) in [
                ("blocked amount", &balance.blocked_amount),
                ("automatically invested amount", &balance.automatically_invested_amount),
            ] {
                if let Some(amount) = amount {
                    reais(&format!("account {id}'s {what}"), amount, amount.signed_cents())?;
                }
            }
            if balance.update_date_time.is_some() && balance.at().is_none() {
                return Err(format!("account {id}'s balance update time is not RFC 3339"));
            }
        }
    }
    for (account_id, item) in &fetched.transactions {
        let id = &item.transaction_id;
        if id.is_empty() {
            return Err(format!("a transaction of account {account_id} has no transactionId"));
        }
        text("a transactionId", id)?;
        text(&format!("transaction {id}'s name"), &item.transaction_name)?;
        text(&format!("transaction {id}'s type"), &item.kind)?;
        if !matches!(item.credit_debit_type.as_str(), "CREDITO" | "DEBITO") {
            return Err(format!("transaction {id}'s creditDebitType is neither CREDITO nor DEBITO"));
        }
        reais(&format!("transaction {id}'s amount"), &item.transaction_amount, item.transaction_amount.cents())?;
        if DateTime::parse_from_rfc3339(&item.transaction_date_time).is_err() {
            return Err(format!("transaction {id}'s date and time is not RFC 3339"));
        }
    }
    Ok(())
}

/// The error for data an institution sent that is not in the Open Finance shapes: the
/// institution's fault, not the caller's, so no field of the request is named.
fn outside_shapes(consent: &Consent, detail: &str) -> Error {
    // The detail may quote what the institution sent: card numbers and CPFs in it are masked.
    let status = tonic::Status::internal(format!(
        "institution {:?} answered outside the Open Finance shapes: {}",
        consent.institution,
        crate::mask_name(detail)
    ));
    Error::Refused(Box::new(aigronova_platform::error::third_party_failure(status, crate::INSTITUTION_PARTY)))
}

/// A stored bank summary as the API shows it: each `…Cents` amount as a decimal string of reais
/// named without the suffix (`averageBalanceCents: 90124` → `averageBalance: "901.24"`).
fn in_reais(bank: &serde_json::Value) -> serde_json::Value {
    match bank {
        serde_json::Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| match (name.strip_suffix("Cents"), value.as_i64()) {
                (Some(name), Some(cents)) => (name.to_owned(), crate::scoring::reais(cents).into()),
                _ => (name.clone(), value.clone()),
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prepaid_accounts_number_is_masked_with_its_check_digit() {
        let mask = crate::mask_card_numbers;
        assert_eq!(shown_number(PREPAID, "4111111111111111-4", mask), "****1111-4");
        // A card number whose last digit the institution gives as the check digit.
        assert!(!shown_number(PREPAID, "411111111111111-1", mask).contains("411111111111111"));
        assert_eq!(shown_number(PREPAID, "00081234567-0", mask), "00081234567-0");
        // A bank account's number is kept as given, though with its check digit it passes the Luhn check.
        assert_eq!(shown_number("CONTA_DEPOSITO_A_VISTA", "000812345678-5", mask), "000812345678-5");
        assert_eq!(shown_number("CONTA_POUPANCA", "4111111111111111-4", mask), "4111111111111111-4");
        // What a masking left is kept when masked again.
        assert_eq!(shown_number(PREPAID, "****1111-4", crate::mask_card_numbers_again), "****1111-4");
    }
}
