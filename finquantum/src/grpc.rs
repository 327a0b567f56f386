//! The `aigronova.fin.v1.FinQuantum` gRPC service and the common `DataSubject` service: the
//! edge where protobuf messages become domain values and back. Each call is authenticated by the
//! `Authenticate` interceptor before it gets here, and acts only on the caller's tenant.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aigronova_platform::{
    Error,
    audit::{self, AuditEvent, EventKind, OutboxWaker},
    auth::{self, Caller},
    cpf::Cpf,
    crypto::TenantCipher,
    error::internal,
    grpc::Page,
    inference::{InferenceError, Model, ModelRegistry},
    monitoring::InferenceMonitor,
    subject::{self, SUBJECT_SCOPE},
    time,
};
use aigronova_proto::{
    aigronova::{
        common::v1::{self as common, data_subject_server::DataSubject},
        fin::v1 as proto,
    },
    google::api::HttpBody,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    consent::{
        ACCOUNTS_BALANCES_READ, ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ, Consent, Permissions, require_any,
        require_one,
    },
    openfinance::{Grant, OpenFinanceClient, OpenFinanceError, ResponseCache},
    scoring::{self, Applicant, BankSummary, DeclaredFields, ReasonWords},
    statement,
    store::{self, Fetched, Store, StoredScore},
};

/// The state every call shares.
#[derive(Clone, Debug)]
pub(crate) struct FinQuantumApi {
    store: Store,
    models: ModelRegistry,
    outbox: OutboxWaker,
    monitor: InferenceMonitor,
    client: OpenFinanceClient,
    institutions: Arc<BTreeMap<String, String>>,
    retention: std::time::Duration,
}

impl FinQuantumApi {
    pub(crate) fn new(
        store: Store,
        models: ModelRegistry,
        outbox: OutboxWaker,
        monitor: InferenceMonitor,
        client: OpenFinanceClient,
        institutions: BTreeMap<String, String>,
        retention: std::time::Duration,
    ) -> Self {
        Self { store, models, outbox, monitor, client, institutions: Arc::new(institutions), retention }
    }

    /// The page of a customer's list `page_token` asks for; a token that is not the list's is a
    /// 400 only once the customer is found: a customer the tenant does not have is a 404 first.
    async fn page_of<'a>(
        &self,
        tenant_id: &str,
        customer_id: &str,
        page_size: i32,
        page_token: &'a str,
        filter: &str,
        cipher: &TenantCipher,
    ) -> Result<Page<'a>, Error> {
        match Page::of(page_size, page_token, filter, cipher) {
            Ok(page) => Ok(page),
            Err(refused) => {
                self.store.customer_exists(tenant_id, customer_id).await?;
                Err(refused)
            }
        }
    }

    pub(crate) fn outbox(&self) -> OutboxWaker {
        self.outbox.clone()
    }

    /// Where the institutions' pages are cached.
    pub(crate) fn cache(&self) -> ResponseCache {
        self.client.cache().clone()
    }

    /// Fetches what `consent` of `tenant_id` gives access to from its institution.
    async fn fetch(&self, tenant_id: &str, consent: &Consent) -> Result<Fetched, Status> {
        let base = self.institutions.get(&consent.institution).ok_or_else(|| {
            Status::failed_precondition(format!(
                "institution {:?} of consent {} is no longer configured",
                consent.institution, consent.id
            ))
        })?;
        let failed = |error: OpenFinanceError| institution_failure(&consent.institution, error);
        let cipher = self.store.cipher(tenant_id).await?;
        let grant = Grant { consent_id: &consent.id, cipher: &cipher };
        let accounts = self.client.accounts(base, grant).await.map_err(failed)?;
        // A year, to today in Brasília, is the longest period an institution answers for.
        let fetched_at = Utc::now();
        let window = crate::openfinance::booking_window(fetched_at);
        let mut fetched = Fetched { accounts: Vec::new(), transactions: Vec::new(), fetched_at };
        for account in accounts {
            let balance = if consent.permissions.grants(ACCOUNTS_BALANCES_READ) {
                Some(self.client.balance(base, grant, &account.account_id).await.map_err(failed)?)
            } else {
                None
            };
            let transactions = match self.client.transactions(base, grant, &account.account_id, window).await {
                Ok(transactions) => transactions,
                // Pages that read, but say two things of one transaction: not kept for the next
                // ingestion, which asks the institution again.
                Err(error @ OpenFinanceError::Malformed(_)) => {
                    self.client.cache().forget_consent(&consent.id).await;
                    return Err(failed(error));
                }
                Err(error) => return Err(failed(error)),
            };
            // No card number in clear in a transaction's id or in words that should be codes (an
            // account's or a transaction's type, a brand).
            for mut transaction in transactions {
                transaction.transaction_id = crate::stored_transaction_id(&cipher, &transaction.transaction_id);
                transaction.kind = crate::mask_card_numbers(&transaction.kind);
                fetched.transactions.push((account.account_id.clone(), transaction));
            }
            let account = crate::openfinance::Account {
                brand_name: crate::mask_card_numbers(&account.brand_name),
                kind: crate::mask_card_numbers(&account.kind),
                ..account
            };
            fetched.accounts.push((account, balance));
        }
        Ok(fetched)
    }

    /// The customer's consents that are valid now and grant every one of `needed`, after
    /// checking that at least one does (`permission_denied` naming the permission otherwise).
    async fn usable_consents(
        &self,
        tenant_id: &str,
        customer_id: &str,
        needed: &[&str],
        what: &str,
    ) -> Result<Vec<Consent>, Status> {
        let consents = self.store.consents_of(tenant_id, customer_id).await?;
        let now = Utc::now();
        require_one(&consents, needed, now, what)?;
        Ok(consents.into_iter().filter(|consent| consent.allows(needed, now).is_ok()).collect())
    }
}

/// The status for an institution that failed: its refusal is a failed precondition (the consent
/// is not honoured there), a timeout or an error after the retries is unavailable (try later), an
/// answer outside the Open Finance shapes is internal (a 502 at the gateway). Each is marked as
/// the institution's failure, not finquantum's.
fn institution_failure(institution: &str, error: OpenFinanceError) -> Status {
    // What the institution sent may be quoted (an id, a value): card numbers and CPFs in it are
    // masked as in a name, in the log and in the answer alike.
    let said = crate::mask_name(&match &error {
        OpenFinanceError::Malformed(detail) => detail.clone(),
        other => other.to_string(),
    });
    tracing::warn!(%institution, error = %said, "Open Finance ingestion failed");
    let status = match error {
        OpenFinanceError::Refused { .. } => {
            Status::failed_precondition(format!("institution {institution:?} refused the consent: {said}"))
        }
        OpenFinanceError::Timeout { .. }
        | OpenFinanceError::OutOfTime
        | OpenFinanceError::Server { .. }
        | OpenFinanceError::Unreachable(_) => Status::unavailable(format!("institution {institution:?}: {said}")),
        OpenFinanceError::Malformed(_) | OpenFinanceError::TooManyPages(_) => {
            Status::internal(format!("institution {institution:?} answered outside the Open Finance shapes: {said}"))
        }
    };
    aigronova_platform::error::third_party_failure(status, crate::INSTITUTION_PARTY)
}

fn consent_message(consent: &Consent) -> proto::Consent {
    proto::Consent {
        id: consent.id.clone(),
        customer_id: consent.customer_id.clone(),
        institution: consent.institution.clone(),
        permissions: consent.permissions.iter().map(str::to_owned).collect(),
        expires_at: Some(time::to_proto(consent.expires_at)),
        status: consent.status_at(Utc::now()).as_str().to_owned(),
        create_time: Some(time::to_proto(consent.created_at)),
        revoke_time: consent.revoked_at.map(time::to_proto),
        last_ingestion_time: consent.last_ingested_at.map(time::to_proto),
    }
}

fn score_message(score: StoredScore, words: &ReasonWords) -> Result<proto::CreditScore, Status> {
    let features: std::collections::BTreeMap<String, f64> = serde_json::from_value(score.features).unwrap_or_default();
    let withheld = scoring::withheld_in(&score.bank);
    let bank: Option<proto::BankSummary> = serde_json::from_value::<StoredBank>(score.bank).ok().map(Into::into);
    let reasons = words
        .reasons(&score.reasons, &features, &withheld)
        .into_iter()
        .map(|reason| proto::Reason { code: reason.code.to_owned(), description: reason.description.to_owned() })
        .collect();
    Ok(proto::CreditScore {
        id: score.id,
        customer_id: score.customer_id,
        score: i32::try_from(score.score).map_err(|error| internal(&error))?,
        risk_band: score.risk_band,
        model: score.model,
        model_version: score.model_version,
        reasons,
        probability_of_default: score.probability,
        features,
        bank,
        create_time: Some(time::to_proto(score.created_at)),
    })
}

/// The bank summary as stored with a decision.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredBank {
    has_checking_account: bool,
    average_balance_cents: i64,
    overdraft_days: i32,
    income_months: i32,
    average_monthly_income_cents: i64,
    has_savings_account: bool,
    savings_balance_cents: i64,
    window_days: i32,
}

impl From<&BankSummary> for StoredBank {
    fn from(bank: &BankSummary) -> Self {
        Self {
            has_checking_account: bank.has_checking_account,
            average_balance_cents: bank.average_balance_cents,
            overdraft_days: bank.overdraft_days,
            income_months: bank.income_months,
            average_monthly_income_cents: bank.average_monthly_income_cents,
            has_savings_account: bank.has_savings_account,
            savings_balance_cents: bank.savings_balance_cents,
            window_days: bank.window_days,
        }
    }
}

impl From<StoredBank> for proto::BankSummary {
    fn from(bank: StoredBank) -> Self {
        Self {
            average_balance: scoring::reais(bank.average_balance_cents),
            overdraft_days: bank.overdraft_days,
            income_months: bank.income_months,
            average_monthly_income: scoring::reais(bank.average_monthly_income_cents),
            savings_balance: scoring::reais(bank.savings_balance_cents),
            has_checking_account: bank.has_checking_account,
            window_days: bank.window_days,
            has_savings_account: bank.has_savings_account,
        }
    }
}

/// An id the service issued: a UUID in any of its spellings, with nothing around it; an invalid
/// argument naming `field` otherwise.
fn parse_id(field: &str, value: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    // Any spelling of the UUID, but nothing around it.
    Uuid::parse_str(value).map(|id| id.to_string()).map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// Puts each feature of `withheld` (see [`scoring::withheld`]) in `row` at the code least
/// favourable to the applicant, all of them together: the combination of their codes with the
/// highest probability of default, the others' values as they are.
fn least_favourable(model: &Model, row: &mut [f32], withheld: &[&str]) -> Result<(), Error> {
    let features = &model.manifest().features;
    let positions: Vec<usize> =
        withheld.iter().filter_map(|name| features.iter().position(|feature| feature.name == *name)).collect();
    let Some((&last, rest)) = positions.split_last() else { return Ok(()) };
    let codes = |position: usize| scoring::codes_of(&features[position].name);
    // Every combination of the other features' codes; the last feature's codes tried in one call.
    let combinations = rest.iter().fold(vec![Vec::new()], |combinations: Vec<Vec<f32>>, position| {
        let extended = combinations
            .iter()
            .flat_map(|combination| codes(*position).iter().map(|code| [combination.as_slice(), &[*code]].concat()));
        extended.collect()
    });
    let mut highest: Option<(f64, Vec<f32>)> = None;
    for combination in combinations {
        for (position, code) in rest.iter().zip(&combination) {
            row[*position] = *code;
        }
        let mut alternatives: Vec<&[f32]> = vec![&[]; row.len()];
        alternatives[last] = codes(last);
        let outputs = model.substitution_outputs(row, &alternatives)?;
        for (code, output) in codes(last).iter().zip(outputs) {
            if highest.as_ref().is_none_or(|(probability, _)| output > *probability) {
                highest = Some((output, [combination.as_slice(), &[*code]].concat()));
            }
        }
    }
    for (position, code) in positions.iter().zip(highest.map(|(_, codes)| codes).unwrap_or_default()) {
        row[*position] = code;
    }
    Ok(())
}

/// Scores `row` with `model`: the probability of default and how far each feature's value stands
/// from its most favourable one, on the calling task (the trees walked again for each feature's
/// alternatives; see `assessment::assess` in healthquantum). `withheld` are the features of the
/// accounts the shared data does not hold.
fn predict(model: &Model, row: &[f32], withheld: &[&str]) -> Result<(f64, Vec<(String, f64)>), Error> {
    let alternatives = scoring::alternatives(model.manifest(), row, withheld);
    let slices: Vec<&[f32]> = alternatives.iter().map(Vec::as_slice).collect();
    let substituted = model.predict_substituted(row, &slices)?;
    let shortfalls = scoring::shortfalls(model.manifest(), substituted.output, &alternatives, &substituted.outputs);
    Ok((substituted.prediction, shortfalls))
}

fn event(caller: &Caller, kind: EventKind, action: &str, subject: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent::new(caller, crate::SERVICE_NAME, kind, action, subject, details)
}

#[tonic::async_trait]
impl proto::fin_quantum_server::FinQuantum for FinQuantumApi {
    async fn create_consent(
        &self,
        request: Request<proto::CreateConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::CreateConsentRequest { cpf, institution, permissions, expires_at } = request.into_inner();
        let cpf = Cpf::parse(&cpf)?;
        let institution = institution.trim().to_owned();
        if !self.institutions.contains_key(&institution) {
            let known: Vec<&str> = self.institutions.keys().map(String::as_str).collect();
            let reason = if institution.is_empty() {
                "is required".to_owned()
            } else {
                format!("unknown institution {institution:?}; configured: {}", known.join(", "))
            };
            return Err(Error::invalid("institution", reason).into());
        }
        let permissions = Permissions::parse(&permissions)?;
        let now = Utc::now();
        let expires_at = expires_at
            .as_ref()
            .ok_or_else(|| Error::invalid("expiresAt", "is required"))
            .and_then(|at| time::from_proto(at).ok_or_else(|| Error::invalid("expiresAt", "is out of range")))?;
        if expires_at <= now {
            return Err(Error::invalid("expiresAt", "must be in the future").into());
        }
        // Kept to the microsecond: a finer time is refused, not cut to another one.
        if chrono::Timelike::nanosecond(&expires_at) % 1_000 != 0 {
            return Err(Error::invalid("expiresAt", "is finer than the microsecond, which consents are kept to").into());
        }
        // Open Finance Brasil's data-sharing consents last 12 months at most.
        if expires_at > now + chrono::Months::new(12) {
            return Err(Error::invalid(
                "expiresAt",
                "must be within 12 months, as Open Finance Brasil limits consents",
            )
            .into());
        }
        let mut consent = Consent {
            id: Uuid::now_v7().to_string(),
            customer_id: Uuid::now_v7().to_string(),
            institution,
            permissions,
            expires_at,
            created_at: round_micros(now),
            revoked_at: None,
            last_ingested_at: None,
        };
        let recorded = event(
            &caller,
            EventKind::PersonalDataChange,
            "fin.CreateConsent",
            &format!("consent:{}", consent.id),
            serde_json::json!({
                "institution": consent.institution,
                "permissions": consent.permissions.iter().collect::<Vec<_>>(),
                "expiresAt": time::stored(consent.expires_at),
            }),
        );
        consent.customer_id = self.store.create_consent(&caller.tenant_id, &cpf, &consent, &recorded).await?;
        self.outbox.wake();
        tracing::info!(tenant = %caller.tenant_id, consent = %consent.id, institution = %consent.institution, "consent recorded");
        Ok(Response::new(consent_message(&consent)))
    }

    async fn get_consent(
        &self,
        request: Request<proto::GetConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        let caller = auth::caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let read = |consent: &Consent| {
            event(
                caller,
                EventKind::SensitiveRead,
                "fin.GetConsent",
                &format!("customer:{}", consent.customer_id),
                serde_json::json!({"consent": id}),
            )
        };
        let consent = self.store.read_consent(&caller.tenant_id, &id, read).await?;
        self.outbox.wake();
        Ok(Response::new(consent_message(&consent)))
    }

    async fn revoke_consent(
        &self,
        request: Request<proto::RevokeConsentRequest>,
    ) -> Result<Response<proto::Consent>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = parse_id("id", &request.get_ref().id)?;
        let now = round_micros(Utc::now());
        let purge_due = now + chrono::Duration::from_std(self.retention).unwrap_or_default();
        let recorded = event(
            &caller,
            EventKind::PersonalDataChange,
            "fin.RevokeConsent",
            &format!("consent:{id}"),
            serde_json::json!({"dataDeletionDue": time::stored(purge_due)}),
        );
        let consent = self.store.revoke_consent(&caller.tenant_id, &id, now, purge_due, &recorded).await?;
        // Nothing more is fetched under it: what was is not kept in the cache either.
        self.client.cache().forget_consent(&id).await;
        self.outbox.wake();
        // Revoked by this call, not before it (a repeated revocation answers as the first did).
        if consent.revoked_at == Some(now) {
            tracing::info!(tenant = %caller.tenant_id, consent = %id, "consent revoked");
        }
        Ok(Response::new(consent_message(&consent)))
    }

    async fn ingest_consent_data(
        &self,
        request: Request<proto::IngestConsentDataRequest>,
    ) -> Result<Response<proto::Ingestion>, Status> {
        let caller = auth::caller(&request)?.clone();
        // The institution is given what the caller's deadline leaves, less a tenth (at least 100 ms)
        // to answer in: past it, the institution's failure is told, rather than the caller's
        // deadline passing on a call that looks like finquantum's own failure.
        let budget = aigronova_platform::grpc::time_left(request.metadata())
            .map(|left| left.saturating_sub((left / 10).max(Duration::from_millis(100))));
        let id = parse_id("consentId", &request.get_ref().consent_id)?;
        let consent = self.store.consent(&caller.tenant_id, &id).await?;
        consent.allows(&[ACCOUNTS_READ, ACCOUNTS_TRANSACTIONS_READ], Utc::now())?;
        let fetched = match budget {
            Some(budget) => tokio::time::timeout(budget, self.fetch(&caller.tenant_id, &consent))
                .await
                .unwrap_or_else(|_| Err(institution_failure(&consent.institution, OpenFinanceError::OutOfTime)))?,
            None => self.fetch(&caller.tenant_id, &consent).await?,
        };
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let accounts = count(fetched.accounts.len());
        let balances = count(fetched.accounts.iter().filter(|(_, balance)| balance.is_some()).count());
        let transactions = count(fetched.transactions.len());
        let recorded = |new: u64| {
            event(
                &caller,
                EventKind::PersonalDataChange,
                "fin.IngestConsentData",
                &format!("consent:{}", consent.id),
                serde_json::json!({"accounts": accounts, "transactions": transactions, "newTransactions": new}),
            )
        };
        let stored = self.store.store_ingestion(&caller.tenant_id, &consent, &fetched, Utc::now(), recorded).await;
        let new = match stored.map_err(Status::from) {
            Ok(new) => new,
            Err(status) => {
                // Not kept for the next ingestion: pages that do not read, and pages of a consent
                // revoked or erased while they were fetched (whose purge ran before they were cached).
                if aigronova_platform::error::is_third_party_failure(&status) {
                    tracing::warn!(institution = %consent.institution, error = %status.message(), "Open Finance ingestion failed");
                }
                self.client.cache().forget_consent(&consent.id).await;
                return Err(status);
            }
        };
        self.outbox.wake();
        tracing::info!(tenant = %caller.tenant_id, consent = %consent.id, accounts, transactions, new, "consent data ingested");
        Ok(Response::new(proto::Ingestion {
            consent_id: consent.id,
            accounts,
            balances,
            transactions,
            new_transactions: i32::try_from(new).unwrap_or(i32::MAX),
        }))
    }

    async fn score_credit(
        &self,
        request: Request<proto::ScoreCreditRequest>,
    ) -> Result<Response<proto::CreditScore>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::ScoreCreditRequest { cpf, applicant } = request.into_inner();
        let cpf = Cpf::parse(&cpf)?;
        let applicant = applicant
            .ok_or_else(|| Error::invalid("applicant", "is required"))
            .and_then(|applicant| {
                Applicant::parse(&DeclaredFields {
                    duration_months: applicant.duration_months,
                    credit_amount: applicant.credit_amount,
                    age: applicant.age,
                    existing_credits: applicant.existing_credits,
                    dependents: applicant.dependents,
                    employment_years: applicant.employment_years,
                    credit_history: &applicant.credit_history,
                    housing: &applicant.housing,
                    purpose: &applicant.purpose,
                    monthly_income: applicant.monthly_income,
                })
            })
            .inspect_err(|_| {
                // Declared data the model cannot take (none at all included) is a refused input, as a
                // feature out of range is.
                if let Ok(model) = self.models.get(scoring::MODEL) {
                    self.monitor.record(&caller.tenant_id, &model, None, Duration::ZERO, false);
                }
            })?;
        let needed = [ACCOUNTS_READ, ACCOUNTS_BALANCES_READ, ACCOUNTS_TRANSACTIONS_READ];
        let now = Utc::now();
        // A CPF never consented is refused as one whose consents are all gone: the same permission named.
        let Some(data) = self.store.customer_data(&caller.tenant_id, &cpf).await? else {
            return Err(require_any(&[], &needed, now, "a credit score").expect_err("no consent grants anything"));
        };
        let customer_id = data.customer_id;
        require_one(&data.consents, &needed, now, "a credit score")?;
        let consents: Vec<&Consent> =
            data.consents.iter().filter(|consent| consent.allows(&needed, now).is_ok()).collect();
        if consents.iter().all(|consent| consent.last_ingested_at.is_none()) {
            return Err(Status::failed_precondition(
                "no data has been ingested under the customer's valid consents that grant all three permissions: \
                 POST /v1/fin/consents/{consentId}/ingestions first",
            ));
        }
        let accounts = crate::store::visible_accounts(data.accounts, &consents);
        let bank = BankSummary::of_stored(&accounts);
        let withheld = scoring::withheld(&bank);
        let mut features = scoring::features(&applicant, &bank)?;
        let model = self.models.get(scoring::MODEL)?;
        let started = Instant::now();
        let mut row = model
            .feature_vector(&features, "features")
            .map_err(|error| match error {
                // A value outside what the model accepts (its manifest's range) names the
                // applicant's field it came from.
                InferenceError::InvalidFeature { field, reason } => {
                    let feature = field.strip_prefix("features.").unwrap_or(&field);
                    match scoring::applicant_field(feature) {
                        Some(sent) => Error::invalid(sent, reason),
                        None => Error::from(InferenceError::InvalidFeature { field, reason }),
                    }
                }
                error => Error::from(error),
            })
            .inspect_err(|_| {
                self.monitor.record(&caller.tenant_id, &model, None, started.elapsed(), false);
            })?;
        let started = Instant::now();
        // Monitoring sees the row as the shared data gave it, an account missing at the code of
        // none, as training saw applicants without one: counted at the code it is scored at, the
        // least favourable, every missing account would move that feature's population away
        // from training's and keep its drift in alert.
        let shared = (!withheld.is_empty()).then(|| row.clone());
        let predicted = least_favourable(&model, &mut row, &withheld).and_then(|()| predict(&model, &row, &withheld));
        let monitored = shared.as_deref().unwrap_or(&row);
        self.monitor.record(&caller.tenant_id, &model, Some(monitored), started.elapsed(), predicted.is_ok());
        let (probability, shortfalls) = predicted?;
        // The decision stores the codes it scored.
        for (feature, value) in model.manifest().features.iter().zip(&row) {
            if withheld.contains(&feature.name.as_str()) {
                features.insert(feature.name.clone(), f64::from(*value));
            }
        }
        let reasons = scoring::reasons(&shortfalls, &withheld);
        let features = scoring::sorted(&features);
        let score = StoredScore {
            id: Uuid::now_v7().to_string(),
            customer_id: customer_id.clone(),
            model: model.name().to_owned(),
            model_version: model.version().to_owned(),
            features: serde_json::to_value(&features).map_err(|error| internal(&error))?,
            bank: serde_json::to_value(StoredBank::from(&bank)).map_err(|error| internal(&error))?,
            probability,
            score: i64::from(scoring::score_of(probability)),
            risk_band: model.risk_band(probability).to_owned(),
            reasons: reasons.clone(),
            created_at: round_micros(Utc::now()),
        };
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let recorded = event(
            &caller,
            EventKind::Decision,
            "fin.ScoreCredit",
            &format!("customer:{customer_id}"),
            serde_json::json!({
                "creditScoreId": score.id,
                "model": score.model,
                "modelVersion": score.model_version,
                "inputDigest": audit::input_digest(&cipher, &features),
                "output": {"score": score.score, "probabilityOfDefault": probability, "riskBand": score.risk_band},
                "reasons": reasons.iter().filter_map(|feature| scoring::code_of(feature)).collect::<Vec<_>>(),
                "latencyMs": started.elapsed().as_secs_f64() * 1000.0,
            }),
        )
        .with_event_id(&score.id);
        let made_under: Vec<String> = consents.iter().map(|consent| consent.id.clone()).collect();
        self.store.insert_score(&caller.tenant_id, &score, &made_under, &recorded).await.map_err(
            |error| match error {
                // Every consent it was made under was revoked meanwhile: the first permission they gave.
                Error::PermissionDenied(detail) => aigronova_platform::error::missing_permission(needed[0], &detail),
                error => Status::from(error),
            },
        )?;
        self.outbox.wake();
        tracing::info!(tenant = %caller.tenant_id, score = %score.id, band = %score.risk_band, "credit scored");
        Ok(Response::new(score_message(score, self.store.reason_words())?))
    }

    async fn list_consents(
        &self,
        request: Request<proto::ListConsentsRequest>,
    ) -> Result<Response<proto::ListConsentsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let proto::ListConsentsRequest { customer_id, page_size, page_token } = request.get_ref();
        let customer_id = parse_id("customerId", customer_id)?;
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let filter = format!("consents\u{0}{customer_id}");
        let page = self.page_of(&caller.tenant_id, &customer_id, *page_size, page_token, &filter, &cipher).await?;
        let read = |consents: &[Consent]| {
            event(
                caller,
                EventKind::SensitiveRead,
                "fin.ListConsents",
                &format!("customer:{customer_id}"),
                serde_json::json!({"consents": consents.iter().map(|consent| consent.id.as_str()).collect::<Vec<_>>()}),
            )
        };
        let (consents, next) = self.store.consents_page(&caller.tenant_id, &customer_id, page, read).await?;
        if !consents.is_empty() {
            self.outbox.wake();
        }
        Ok(Response::new(proto::ListConsentsResponse {
            consents: consents.iter().map(consent_message).collect(),
            next_page_token: Page::next_token(next, &filter, &cipher),
        }))
    }

    async fn list_credit_scores(
        &self,
        request: Request<proto::ListCreditScoresRequest>,
    ) -> Result<Response<proto::ListCreditScoresResponse>, Status> {
        let caller = auth::caller(&request)?;
        let proto::ListCreditScoresRequest { customer_id, page_size, page_token } = request.get_ref();
        let customer_id = parse_id("customerId", customer_id)?;
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let filter = format!("credit-scores\u{0}{customer_id}");
        let page = self.page_of(&caller.tenant_id, &customer_id, *page_size, page_token, &filter, &cipher).await?;
        // One read of the customer's data for the page, naming the decisions and what they showed.
        let read = |scores: &[StoredScore]| {
            let ids: Vec<&str> = scores.iter().map(|score| score.id.as_str()).collect();
            let fields: std::collections::BTreeSet<&str> = scores.iter().flat_map(held_fields).collect();
            event(
                caller,
                EventKind::SensitiveRead,
                "fin.ListCreditScores",
                &format!("customer:{customer_id}"),
                serde_json::json!({"creditScores": ids, "fields": fields}),
            )
        };
        let (scores, next) = self.store.scores_page(&caller.tenant_id, &customer_id, page, read).await?;
        if !scores.is_empty() {
            self.outbox.wake();
        }
        let words = self.store.reason_words();
        Ok(Response::new(proto::ListCreditScoresResponse {
            credit_scores: scores.into_iter().map(|score| score_message(score, words)).collect::<Result<_, _>>()?,
            next_page_token: Page::next_token(next, &filter, &cipher),
        }))
    }

    async fn get_credit_score(
        &self,
        request: Request<proto::GetCreditScoreRequest>,
    ) -> Result<Response<proto::CreditScore>, Status> {
        let caller = auth::caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        // The read names the customer, unless an erasure unlinked the decision from them.
        let read = |score: &StoredScore| {
            let subject = if score.customer_id.is_empty() {
                format!("credit-score:{id}")
            } else {
                format!("customer:{}", score.customer_id)
            };
            event(
                caller,
                EventKind::SensitiveRead,
                "fin.GetCreditScore",
                &subject,
                serde_json::json!({"creditScore": id, "fields": held_fields(score)}),
            )
        };
        let score = self.store.score(&caller.tenant_id, &id, read).await?;
        self.outbox.wake();
        Ok(Response::new(score_message(score, self.store.reason_words())?))
    }

    async fn get_statement(&self, request: Request<proto::GetStatementRequest>) -> Result<Response<HttpBody>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::GetStatementRequest { customer_id, month, format } = request.into_inner();
        let customer_id = parse_id("customerId", &customer_id)?;
        let bounds = scoring::month_bounds(&month)?;
        // Bookings are dated in Brasília: its next month begins three hours after UTC's.
        if bounds.0 > crate::openfinance::brasilia_date(Utc::now()) {
            return Err(Error::invalid("month", format!("{month} has not begun yet (in Brasília time)")).into());
        }
        // Exactly as documented: a value with spaces around it is no format.
        let pdf = match format.as_str() {
            "" | "json" => false,
            "pdf" => true,
            other => return Err(Error::invalid("format", format!("must be json or pdf, not {other:?}")).into()),
        };
        self.store.customer_exists(&caller.tenant_id, &customer_id).await?;
        let consents =
            self.usable_consents(&caller.tenant_id, &customer_id, &[ACCOUNTS_TRANSACTIONS_READ], "a statement").await?;
        // Nothing fetched yet is no empty month: told what to do, as a score is.
        if consents.iter().all(|consent| consent.last_ingested_at.is_none()) {
            return Err(Status::failed_precondition(
                "no data has been ingested under the customer's valid consents that grant ACCOUNTS_TRANSACTIONS_READ: \
                 POST /v1/fin/consents/{consentId}/ingestions first",
            ));
        }
        let usable: Vec<&Consent> = consents.iter().collect();
        // A month's statement reads its month and what came after (to walk back from the balance),
        // and what came after a balance taken before the month began (to walk forward from it).
        let first = bounds.0.and_hms_opt(0, 0, 0).map(|at| at.and_utc());
        let since = |accounts: &[crate::store::StoredAccount]| {
            first.map(|first| accounts.iter().filter_map(|account| account.balance_at).fold(first, std::cmp::min))
        };
        let read = event(
            &caller,
            EventKind::SensitiveRead,
            "fin.GetStatement",
            &format!("customer:{customer_id}"),
            serde_json::json!({"month": month, "format": if pdf { "pdf" } else { "json" }}),
        );
        let held = self.store.data_under(&caller.tenant_id, &customer_id, &usable, since, Some(&read)).await?;
        self.outbox.wake();
        // A month no account's fetched days reach, and no transaction held falls in (one an
        // institution dated before the days asked for), is no month of zeros: told what was fetched.
        let (first_day, next_month) = bounds;
        let reached =
            |account: &crate::store::StoredAccount| account.booked.0 < next_month && account.booked.1 >= first_day;
        let held_in_month = held
            .transactions
            .iter()
            .any(|t| (first_day..next_month).contains(&crate::openfinance::brasilia_date(t.booked_at)));
        if !held.accounts.is_empty() && !held.accounts.iter().any(reached) && !held_in_month {
            let from = held.accounts.iter().map(|account| account.booked.0).min().unwrap_or(first_day);
            let through = held.accounts.iter().map(|account| account.booked.1).max().unwrap_or(first_day);
            let hint = if first_day > through {
                "ingest again (POST /v1/fin/consents/{consentId}/ingestions) to fetch what is newer"
            } else {
                "an institution answers for the 12 months up to the day of an ingestion"
            };
            return Err(Error::invalid(
                "month",
                format!("no transactions were fetched for {month}: the customer's accounts were fetched for {from} to {through}; {hint}"),
            )
            .into());
        }
        let statement = statement::build(&customer_id, &month, bounds, &held.accounts, &held.transactions);
        let (content_type, data) = if pdf {
            ("application/pdf", statement::render_pdf(&statement))
        } else {
            ("application/json", serde_json::to_vec(&statement).map_err(|error| internal(&error))?)
        };
        Ok(Response::new(HttpBody { content_type: content_type.into(), data, extensions: Vec::new() }))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        auth::caller(&request)?;
        Ok(Response::new(proto::ListModelsResponse { models: self.models.cards() }))
    }
}

/// To the microsecond, what storage keeps.
fn round_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    at.trunc_subsecs(6)
}

/// The common `DataSubject` service: export and erasure for a CPF, called by ai-governance with
/// a service token for the requester's tenant.
#[tonic::async_trait]
impl DataSubject for FinQuantumApi {
    async fn export_subject(
        &self,
        request: Request<common::ExportSubjectRequest>,
    ) -> Result<Response<common::ExportSubjectResponse>, Status> {
        let caller = auth::service_caller(&request, SUBJECT_SCOPE)?;
        let common::ExportSubjectRequest { cpf, request_id } = request.into_inner();
        let cpf = Cpf::parse(&cpf)?;
        let recorded = |ids: &[String]| {
            event(
                &caller,
                EventKind::SensitiveRead,
                "fin.ExportSubject",
                &if ids.is_empty() {
                    "customer:none".to_owned()
                } else {
                    ids.iter().map(|id| format!("customer:{id}")).collect::<Vec<_>>().join(",")
                },
                serde_json::json!({"subjectRequest": request_id, "customers": ids.len()}),
            )
        };
        let data = self.store.export_subject(&caller.tenant_id, &cpf, recorded).await?;
        self.outbox.wake();
        Ok(Response::new(common::ExportSubjectResponse {
            service: crate::SERVICE_NAME.to_owned(),
            data: Some(subject::to_struct(data)),
        }))
    }

    async fn erase_subject(
        &self,
        request: Request<common::EraseSubjectRequest>,
    ) -> Result<Response<common::EraseSubjectResponse>, Status> {
        let caller = auth::service_caller(&request, SUBJECT_SCOPE)?;
        let common::EraseSubjectRequest { cpf, request_id } = request.into_inner();
        let cpf = Cpf::parse(&cpf)?;
        let recorded = |customer_id: &str, erased: u64| {
            event(
                &caller,
                EventKind::PersonalDataChange,
                "fin.EraseSubject",
                &format!("customer:{customer_id}"),
                serde_json::json!({"subjectRequest": request_id, "erasedRecords": erased}),
            )
        };
        let store::Erased { erased, kept, consents } =
            self.store.erase_subject(&caller.tenant_id, &cpf, recorded).await?;
        for consent in &consents {
            self.client.cache().forget_consent(consent).await;
        }
        self.store.truncate_log_soon();
        self.outbox.wake();
        tracing::info!(tenant = %caller.tenant_id, erased, kept, "data subject erased");
        let retained = if kept == 0 {
            Vec::new()
        } else {
            vec![common::RetainedRecord {
                kind: "credit_scores".into(),
                reason: "credit decisions are kept, with their inputs deleted and no link to the person, as \
                         evidence of automated decisions the customer may contest (LGPD Art. 20) and for the \
                         institution's legal obligations (LGPD Art. 16 I)"
                    .into(),
            }]
        };
        Ok(Response::new(common::EraseSubjectResponse {
            service: crate::SERVICE_NAME.to_owned(),
            erased_records: i64::try_from(erased).unwrap_or(i64::MAX),
            retained,
        }))
    }
}

/// The fields of a stored score that hold the customer's data, as a read of it shows them: none
/// once an erasure emptied them.
fn held_fields(score: &StoredScore) -> Vec<&'static str> {
    let held = |value: &serde_json::Value| !(value.is_null() || value.as_object().is_some_and(|map| map.is_empty()));
    [("features", &score.features), ("bank", &score.bank)]
        .into_iter()
        .filter(|(_, value)| held(value))
        .map(|(name, _)| name)
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids() {
        assert!(parse_id("id", "nope").is_err());
        assert!(parse_id("id", "").is_err());
        let id = "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b";
        assert_eq!(parse_id("id", &id.to_uppercase()).unwrap(), id, "any spelling");
        for padded in [format!(" {id}"), format!("{id}\n")] {
            assert!(parse_id("id", &padded).is_err(), "{padded:?}");
        }
    }
}
