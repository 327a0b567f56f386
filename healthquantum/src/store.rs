//! Patients and assessments in the service's own database (SQLite or PostgreSQL through
//! `sqlx::Any`). Every query filters on the tenant: a row of another tenant does not exist.
//!
//! A patient's personal fields (name, CPF, birth date, contact) are sealed together in the
//! `sealed` column with the tenant's data key (`platform::crypto`), bound to the tenant and row;
//! the CPF is looked up through its blind index `cpf_hash`. The clear-text columns of the first
//! schema stay empty.
//!
//! A CPF is one person: no two live patients of a tenant share one (see `refuse_registered_cpf`).

use std::sync::Arc;

use aigronova_platform::{
    Error,
    audit::{self, AuditEvent},
    crypto::{TenantCipher, TenantKeys},
    storage::{Backend, Database, StoreError},
    time,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Row, any::AnyRow};

use crate::{
    assessment::Assessment,
    patient::{BirthDate, Cpf, Email, Patient, PatientChanges, PatientId, PatientName, Phone, searchable},
};

/// Rows read per query while a name filter scans a tenant's patients.
const SCAN_BATCH: i64 = 200;
/// Rows one list call examines at most before it returns a page (possibly short).
const SCAN_LIMIT: usize = 2000;

/// A stored image's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRecord {
    pub(crate) id: String,
    pub(crate) patient_id: String,
    pub(crate) media_type: String,
    pub(crate) size_bytes: i64,
    pub(crate) sha256: String,
    pub(crate) width: i64,
    pub(crate) height: i64,
    pub(crate) has_thumbnail: bool,
    pub(crate) created_at: String,
}

/// The personal fields, as sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    name: String,
    cpf: String,
    #[serde(rename = "birthDate")]
    birth_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
}

/// The columns an assessment is read from (see [`assessment_from`]), as a literal for `concat!`.
macro_rules! assessment_columns {
    () => {
        "id, model, model_version, features, probability, risk_band, created_at, top_features, regression"
    };
}

/// A page of patients and the token of the next one.
#[derive(Debug)]
pub(crate) struct PatientPage {
    pub(crate) patients: Vec<Patient>,
    pub(crate) next_page_token: Option<String>,
}

/// A page of a patient's assessments and the token of the next one.
#[derive(Debug)]
pub(crate) struct AssessmentPage {
    pub(crate) assessments: Vec<Assessment>,
    pub(crate) next_page_token: Option<String>,
}

/// A page of a patient's images, and the token of the next when more follow.
pub(crate) struct ImagePage {
    pub(crate) images: Vec<ImageRecord>,
    pub(crate) next_page_token: Option<String>,
}

/// Which patients a list call wants.
#[derive(Debug, Default)]
pub(crate) struct PatientFilter {
    pub(crate) name_prefix: Option<String>,
    pub(crate) cpf: Option<Cpf>,
}

/// The filter of a patient list, as its page tokens are bound to it.
/// A name prefix as names are searched ([`searchable`]); white space at its end is kept as one
/// space, which ends a word.
fn search_prefix(prefix: &str) -> String {
    let mut folded = searchable(prefix);
    if prefix.ends_with(char::is_whitespace) && !folded.is_empty() {
        folded.push(' ');
    }
    folded
}

/// Whether the searchable `name` starts with `prefix`: one ending with a space matches a name
/// whose word ends there, the last word too.
fn starts_with_prefix(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) || prefix.strip_suffix(' ').is_some_and(|word| name == word)
}

fn filter_of(prefix: Option<&str>, cpf_hash: Option<&str>) -> String {
    format!("patients\u{0}{}\u{0}{}", prefix.unwrap_or_default(), cpf_hash.unwrap_or_default())
}

/// The page token that goes on after the id `after` of the list `filter`.
fn next_token(cipher: &TenantCipher, filter: &str, after: &str) -> String {
    aigronova_platform::grpc::page_token(cipher, filter, after)
}

/// The id a page token goes on after, when it was made for `filter` and that position; otherwise
/// `malformed` or `foreign` is what is wrong with it.
fn resume_after(
    cipher: &TenantCipher,
    token: &str,
    filter: &str,
    malformed: &str,
    foreign: &str,
) -> Result<String, Error> {
    use aigronova_platform::grpc::{TokenRefusal, page_token_position};
    match page_token_position(cipher, token, filter) {
        Ok(after) => Ok(after.to_owned()),
        Err(TokenRefusal::Malformed) => Err(Error::invalid("pageToken", malformed)),
        Err(TokenRefusal::Foreign) => Err(Error::invalid("pageToken", foreign)),
    }
}

/// The queries of this service over one [`Database`].
#[derive(Clone, Debug)]
pub(crate) struct Store {
    database: Database,
    keys: Arc<TenantKeys>,
}

impl Store {
    /// Empties the embedded database's write-ahead log after an erasure (see
    /// [`Database::truncate_log_soon`]).
    pub(crate) fn truncate_log_soon(&self) {
        self.database.truncate_log_soon();
    }
}

impl Store {
    pub(crate) fn new(database: Database, keys: Arc<TenantKeys>) -> Self {
        Self { database, keys }
    }

    /// The tenant's data key, which also seals its objects (reports, images, thumbnails).
    pub(crate) async fn cipher(&self, tenant_id: &str) -> Result<Arc<TenantCipher>, Error> {
        Ok(self.keys.cipher(tenant_id).await?)
    }

    /// Whether `tenant_id` has a data key in this database, without making one.
    pub(crate) async fn holds_data_key(&self, tenant_id: &str) -> Result<bool, Error> {
        Ok(self.keys.holds(tenant_id).await?)
    }

    /// Records `patient` with its audit event, in one transaction; `AlreadyExists` when another
    /// patient of the tenant has its CPF.
    pub(crate) async fn create_patient(
        &self,
        tenant_id: &str,
        patient: &Patient,
        event: &AuditEvent,
    ) -> Result<(), Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let cpf_hash = cipher.blind_index(patient.cpf.as_str());
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        refuse_registered_cpf(&mut transaction, self.database.backend(), tenant_id, &cpf_hash, &patient.id).await?;
        sqlx::query(
            "INSERT INTO patients (tenant_id, id, name, cpf, birth_date, created_at, sealed, cpf_hash) \
             VALUES ($1, $2, '', '', '', $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(patient.id.as_str())
        .bind(time::stored(patient.created_at))
        .bind(seal(&cipher, tenant_id, patient))
        .bind(&cpf_hash)
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Records `event(the other patient's id)` when a live patient of `tenant_id` other than
    /// `except` has `cpf`: a refusal that said so told the caller that this person is a patient,
    /// which is a read of what the tenant holds of them.
    pub(crate) async fn record_cpf_disclosure(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        except: &PatientId,
        event: impl FnOnce(&str) -> AuditEvent,
    ) -> Result<(), Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let other: Option<String> = sqlx::query_scalar(
            "SELECT id FROM patients WHERE tenant_id = $1 AND cpf_hash = $2 AND erased_at IS NULL AND id <> $3 \
             ORDER BY id LIMIT 1",
        )
        .bind(tenant_id)
        .bind(cipher.blind_index(cpf.as_str()))
        .bind(except.as_str())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        if let Some(other) = other {
            audit::enqueue(&mut transaction, &event(&other)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The patient `id` of `tenant_id`, shown to a caller: the read and its audit event
    /// (`event(&patient)`) commit together. `NotFound` when it is unknown or another tenant's.
    pub(crate) async fn read_patient(
        &self,
        tenant_id: &str,
        id: &PatientId,
        event: impl FnOnce(&Patient) -> AuditEvent,
    ) -> Result<Patient, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let patient = fetch_patient(&mut transaction, &cipher, tenant_id, id).await?;
        audit::enqueue(&mut transaction, &event(&patient)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(patient)
    }

    /// `NotFound` unless `id` is a patient of `tenant_id`.
    pub(crate) async fn patient_exists(&self, tenant_id: &str, id: &PatientId) -> Result<(), Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL")
            .bind(tenant_id)
            .bind(id.as_str())
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound("patient".into()))?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A page of the tenant's patients after `after` (an id), filtered, with its audit event
    /// (`event(&patients)`) in the same transaction.
    pub(crate) async fn list_patients(
        &self,
        tenant_id: &str,
        filter: &PatientFilter,
        page_size: usize,
        page_token: Option<&str>,
        event: impl FnOnce(&[Patient]) -> AuditEvent,
    ) -> Result<PatientPage, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let prefix = filter.name_prefix.as_deref().map(search_prefix);
        let cpf_hash = filter.cpf.as_ref().map(|cpf| cipher.blind_index(cpf.as_str()));
        let filter = filter_of(prefix.as_deref(), cpf_hash.as_deref());
        let mut cursor = match page_token {
            Some(token) => resume_after(
                &cipher,
                token,
                &filter,
                "is not a token a patient list returned",
                "was returned for another filter, was altered, or was made before this list's tokens named their \
                 position: send it unchanged, with the namePrefix and cpf of the request that returned it, or start \
                 again from the first page",
            )?,
            None => String::new(),
        };
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let mut patients = Vec::new();
        let mut examined = 0;
        let mut exhausted = false;
        // One match past the page tells whether there is a next page, so that a full last page
        // comes without a token.
        let wanted = page_size + 1;
        while patients.len() < wanted && examined < SCAN_LIMIT {
            let rows = sqlx::query(
                "SELECT id, created_at, updated_at, sealed FROM patients \
                 WHERE tenant_id = $1 AND erased_at IS NULL AND id > $2 AND ($3 = '' OR cpf_hash = $3) \
                 ORDER BY id LIMIT $4",
            )
            .bind(tenant_id)
            .bind(&cursor)
            .bind(cpf_hash.as_deref().unwrap_or(""))
            .bind(SCAN_BATCH)
            .fetch_all(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            if rows.is_empty() {
                exhausted = true;
                break;
            }
            for row in &rows {
                examined += 1;
                let patient = patient_from(row, &cipher, tenant_id)?;
                cursor = patient.id.to_string();
                if prefix.as_deref().is_none_or(|prefix| starts_with_prefix(&searchable(patient.name.as_str()), prefix))
                {
                    patients.push(patient);
                    if patients.len() == wanted {
                        break;
                    }
                }
            }
            if (rows.len() as i64) < SCAN_BATCH && patients.len() < wanted {
                exhausted = true;
                break;
            }
        }
        let next_after = if patients.len() > page_size {
            patients.truncate(page_size);
            patients.last().map(|patient| patient.id.to_string())
        } else {
            // The scan stopped at its limit: the next page goes on from where it stopped.
            (!exhausted).then_some(cursor)
        };
        if !patients.is_empty() {
            audit::enqueue(&mut transaction, &event(&patients)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        let next_page_token = next_after.map(|after| next_token(&cipher, &filter, &after));
        Ok(PatientPage { patients, next_page_token })
    }

    /// Applies `changes` to the patient `id`, with the audit events `events(&patient, changed)` in
    /// the same transaction, `changed` the fields whose values the change altered (none when every
    /// value sent is the one held); returns the patient as changed and, when it was written, the
    /// ids of its assessments, whose reports are to be made again (their deletion recorded here).
    /// `AlreadyExists` when the change gives the patient the CPF of another.
    pub(crate) async fn update_patient(
        &self,
        tenant_id: &str,
        id: &PatientId,
        changes: PatientChanges,
        events: impl FnOnce(&Patient, &[&'static str]) -> Vec<AuditEvent>,
    ) -> Result<(Patient, Option<Vec<String>>), Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        if self.database.backend() == Backend::Postgres {
            // Read as last committed and held until this change commits: a change read before
            // another's commit would write the other's fields back (its CPF among them), and one
            // read before an erasure would put the erased fields back.
            sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
                .bind(tenant_id)
                .bind(id.as_str())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
        }
        let mut patient = fetch_patient(&mut transaction, &cipher, tenant_id, id).await?;
        let before = patient.clone();
        let cpf_before = patient.cpf.clone();
        changes.apply(&mut patient);
        let changed = before.differing_fields(&patient);
        if changed.is_empty() {
            // Every value sent is the one held: nothing is written, and no change is audited;
            // the fields the answer shows are.
            for event in events(&before, &[]) {
                audit::enqueue(&mut transaction, &event).await?;
            }
            transaction.commit().await.map_err(StoreError::from)?;
            return Ok((before, None));
        }
        let cpf_hash = cipher.blind_index(patient.cpf.as_str());
        // Only a new CPF is checked: a patient that shares its CPF with another since before the
        // check existed can still be changed otherwise.
        if patient.cpf != cpf_before {
            refuse_registered_cpf(&mut transaction, self.database.backend(), tenant_id, &cpf_hash, id).await?;
        }
        let updated = sqlx::query(
            "UPDATE patients SET sealed = $1, cpf_hash = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5 AND erased_at IS NULL",
        )
        .bind(seal(&cipher, tenant_id, &patient))
        .bind(&cpf_hash)
        .bind(patient.updated_at.map(time::stored))
        .bind(tenant_id)
        .bind(id.as_str())
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        if updated.rows_affected() != 1 {
            return Err(Error::NotFound("patient".into()));
        }
        // Reports print the patient's header: theirs are to be made again, and their objects
        // deleted, recorded here so that the sweep deletes any the object store refuses now.
        let reports = ids_for_patient(&mut transaction, ASSESSMENTS_OF_PATIENT, tenant_id, id.as_str()).await?;
        record_deletions(&mut transaction, tenant_id, &[], &reports).await?;
        for event in events(&patient, &changed) {
            audit::enqueue(&mut transaction, &event).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok((patient, Some(reports)))
    }

    /// Deletes the patient with their images, and erases them if they have assessments, which are
    /// kept, with the audit event `event` makes of what was deleted; the ids of the assessments
    /// (whose reports are objects to delete) and of the images deleted, whose objects are to be
    /// deleted once the deletion is committed.
    pub(crate) async fn delete_patient(
        &self,
        tenant_id: &str,
        id: &PatientId,
        event: impl FnOnce(&Deleted) -> AuditEvent,
    ) -> Result<Deleted, Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // On PostgreSQL the patient is held first: an image being stored meanwhile (which holds
        // the patient too) is committed before the deletion reads the images, or refused after it.
        hold_live_patient(&mut transaction, self.database.backend(), tenant_id, id.as_str(), RowLock::Update).await?;
        let mut deleted = Deleted::default();
        for (sql, ids) in [
            (ASSESSMENTS_OF_PATIENT, &mut deleted.assessments),
            ("DELETE FROM images WHERE tenant_id = $1 AND patient_id = $2 RETURNING id", &mut deleted.images),
        ] {
            // What the transaction reads and deletes, not what was there before it: an image
            // stored meanwhile is deleted and its objects with it.
            *ids = ids_for_patient(&mut transaction, sql, tenant_id, id.as_str()).await?;
        }
        // Assessments are clinical records the law keeps: a patient with any is erased as a data
        // subject is (personal fields gone, the row kept for its assessments), one without any is
        // deleted.
        let kept = !deleted.assessments.is_empty();
        let query = if kept {
            sqlx::query(
                "UPDATE patients SET name = '', cpf = '', birth_date = '', sealed = NULL, cpf_hash = NULL, \
                 erased_at = $3 WHERE tenant_id = $1 AND id = $2",
            )
        } else {
            sqlx::query("DELETE FROM patients WHERE tenant_id = $1 AND id = $2")
        };
        let query = query.bind(tenant_id).bind(id.as_str());
        let query = if kept { query.bind(time::stored(Utc::now())) } else { query };
        query.execute(&mut *transaction).await.map_err(StoreError::from)?;
        record_deletions(&mut transaction, tenant_id, &deleted.images, &deleted.assessments).await?;
        audit::enqueue(&mut transaction, &event(&deleted)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(deleted)
    }

    /// Seals the personal fields of rows written before encryption and empties their clear
    /// columns; how many.
    pub(crate) async fn seal_clear_rows(&self) -> Result<usize, Error> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, name, cpf, birth_date, created_at FROM patients \
             WHERE sealed IS NULL AND erased_at IS NULL",
        )
        .fetch_all(self.database.pool())
        .await
        .map_err(StoreError::from)?;
        for row in &rows {
            let tenant_id: String = row.try_get("tenant_id").map_err(StoreError::from)?;
            let text = |column: &str| row.try_get::<String, _>(column).map_err(StoreError::from);
            let corrupt = |column: &str, error: Error| StoreError::Corrupt(format!("patients.{column}: {error}"));
            let patient = Patient {
                id: PatientId::parse("id", &text("id")?).map_err(|error| corrupt("id", error))?,
                name: PatientName::stored(&text("name")?).map_err(|error| corrupt("name", error))?,
                cpf: Cpf::parse(&text("cpf")?).map_err(|error| corrupt("cpf", error))?,
                birth_date: BirthDate::parse(&text("birth_date")?).map_err(|error| corrupt("birth_date", error))?,
                email: None,
                phone: None,
                created_at: time::parse_stored("patients.created_at", &text("created_at")?)?,
                updated_at: None,
            };
            let cipher = self.keys.cipher(&tenant_id).await?;
            let mut transaction = self.database.begin_tenant(&tenant_id).await?;
            sqlx::query(
                "UPDATE patients SET sealed = $1, cpf_hash = $2, name = '', cpf = '', birth_date = '' \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(seal(&cipher, &tenant_id, &patient))
            .bind(cipher.blind_index(patient.cpf.as_str()))
            .bind(&tenant_id)
            .bind(patient.id.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            transaction.commit().await.map_err(StoreError::from)?;
        }
        Ok(rows.len())
    }

    /// Seals the inputs of assessments stored in clear (before inputs were sealed); how many. Run
    /// at start, after which inputs in clear are refused as corrupt, so that none planted in the
    /// table is served as an assessment's.
    pub(crate) async fn seal_clear_inputs(&self) -> Result<usize, Error> {
        let rows = sqlx::query("SELECT tenant_id, id, features FROM assessments WHERE features NOT LIKE 'v1:%'")
            .fetch_all(self.database.pool())
            .await
            .map_err(StoreError::from)?;
        let mut sealed = 0;
        for row in &rows {
            let text = |column: &str| row.try_get::<String, _>(column).map_err(StoreError::from);
            let (tenant_id, id, features) = (text("tenant_id")?, text("id")?, text("features")?);
            // One that is no JSON is left as it is: refused as corrupt when read, it stops nothing else.
            if serde_json::from_str::<serde_json::Value>(&features).is_err() {
                tracing::warn!(
                    tenant_id,
                    assessment = id,
                    "assessment inputs in clear that are not JSON left unsealed"
                );
                continue;
            }
            let cipher = self.keys.cipher(&tenant_id).await?;
            let mut transaction = self.database.begin_tenant(&tenant_id).await?;
            let updated =
                sqlx::query("UPDATE assessments SET features = $1 WHERE tenant_id = $2 AND id = $3 AND features = $4")
                    .bind(cipher.seal(&features_context(&tenant_id, &id), &features))
                    .bind(&tenant_id)
                    .bind(&id)
                    .bind(&features)
                    .execute(&mut *transaction)
                    .await
                    .map_err(StoreError::from)?;
            transaction.commit().await.map_err(StoreError::from)?;
            sealed += usize::try_from(updated.rows_affected()).unwrap_or(0);
        }
        Ok(sealed)
    }

    pub(crate) async fn insert_assessment(
        &self,
        tenant_id: &str,
        cipher: &TenantCipher,
        assessment: &Assessment,
        event: &AuditEvent,
    ) -> Result<(), Error> {
        let features = serde_json::to_string(&assessment.features)
            .map_err(|error| StoreError::Corrupt(format!("features do not serialize: {error}")))?;
        // Clinical inputs are health data (LGPD Art. 11): sealed, with the tenant's data key the
        // caller holds, as the personal fields are.
        let features = cipher.seal(&features_context(tenant_id, assessment.id.as_str()), &features);
        let top_features = serde_json::to_string(&assessment.top_features).expect("contributions serialise");
        // Stored only for a patient of the tenant who is not erased, checked in the same statement.
        // On PostgreSQL the patient's row is held as it is checked: a deletion or an erasure that
        // holds it already is waited for, and the row read again once it commits, so that no
        // assessment is stored for a patient it erased (SQLite runs write transactions one at a
        // time).
        let lock = if self.database.backend() == Backend::Postgres { " FOR SHARE" } else { "" };
        let stored = audit::write_recorded(
            &self.database,
            tenant_id,
            &format!(
                "INSERT INTO assessments \
                 (tenant_id, id, patient_id, model, model_version, features, probability, risk_band, created_at, \
                 top_features, regression) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
                 WHERE EXISTS (SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $3 AND erased_at IS NULL{lock})"
            ),
            vec![
                tenant_id.into(),
                assessment.id.as_str().into(),
                assessment.patient_id.as_str().into(),
                assessment.model.as_str().into(),
                assessment.model_version.as_str().into(),
                features.into(),
                assessment.output.into(),
                assessment.risk_band.as_str().into(),
                time::stored(assessment.created_at).into(),
                top_features.into(),
                i64::from(assessment.regression).into(),
            ],
            event,
        )
        .await?;
        if stored { Ok(()) } else { Err(Error::NotFound("patient".into())) }
    }
}

impl Store {
    /// Records `image` of its patient, who must be a patient of `tenant_id`, with its audit event.
    pub(crate) async fn insert_image(
        &self,
        tenant_id: &str,
        image: &ImageRecord,
        event: &AuditEvent,
    ) -> Result<(), Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // On PostgreSQL the patient is held until the image is stored: an erasure or a deletion
        // (each holding the patient before it reads the images) waits for it and deletes it, or
        // goes first and the image is refused (SQLite runs write transactions one at a time).
        hold_live_patient(&mut transaction, self.database.backend(), tenant_id, &image.patient_id, RowLock::Share)
            .await?;
        sqlx::query(
            "INSERT INTO images (tenant_id, id, patient_id, media_type, size_bytes, sha256, width, height, \
             has_thumbnail, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(tenant_id)
        .bind(&image.id)
        .bind(&image.patient_id)
        .bind(&image.media_type)
        .bind(image.size_bytes)
        .bind(&image.sha256)
        .bind(image.width)
        .bind(image.height)
        .bind(i64::from(image.has_thumbnail))
        .bind(&image.created_at)
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A page of the images of a patient of `tenant_id` (not erased), oldest first, with the audit
    /// event `event` makes of them in the same transaction when there are any.
    pub(crate) async fn images(
        &self,
        tenant_id: &str,
        patient_id: &PatientId,
        page_size: usize,
        page_token: Option<&str>,
        event: impl FnOnce(&[ImageRecord]) -> AuditEvent,
    ) -> Result<ImagePage, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let filter = format!("images\u{0}{patient_id}");
        let after = match page_token {
            Some(token) => {
                let refused = "is not a token this patient's image list returned: send it unchanged, or start again \
                               from the first page";
                resume_after(&cipher, token, &filter, refused, refused)?
            }
            None => String::new(),
        };
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let backend = self.database.backend();
        hold_live_patient(&mut transaction, backend, tenant_id, patient_id.as_str(), RowLock::Share).await?;
        // One past the page tells whether there is a next page.
        let rows = sqlx::query(
            "SELECT id, patient_id, media_type, size_bytes, sha256, width, height, has_thumbnail, created_at \
             FROM images WHERE tenant_id = $1 AND patient_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant_id)
        .bind(patient_id.as_str())
        .bind(&after)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let mut images = rows.iter().map(image_from).collect::<Result<Vec<_>, _>>()?;
        let more = images.len() > page_size;
        images.truncate(page_size);
        if !images.is_empty() {
            audit::enqueue(&mut transaction, &event(&images)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        let next_page_token = more.then(|| images.last().map(|last| next_token(&cipher, &filter, &last.id))).flatten();
        Ok(ImagePage { images, next_page_token })
    }

    /// One image of a patient of `tenant_id`; when `event` is given, a read that `shown` accepts
    /// is audited with it (a refused one shows nothing, and is not).
    pub(crate) async fn image(
        &self,
        tenant_id: &str,
        patient_id: &PatientId,
        id: &str,
        event: Option<&AuditEvent>,
        shown: impl FnOnce(&ImageRecord) -> Result<(), Error>,
    ) -> Result<ImageRecord, Error> {
        // A read that audits nothing writes nothing, and takes no write turn.
        let mut transaction = match event {
            Some(_) => self.database.begin_tenant(tenant_id).await?,
            None => self.database.begin_tenant_read(tenant_id).await?,
        };
        let row = sqlx::query(
            "SELECT id, patient_id, media_type, size_bytes, sha256, width, height, has_thumbnail, created_at \
             FROM images WHERE tenant_id = $1 AND patient_id = $2 AND id = $3",
        )
        .bind(tenant_id)
        .bind(patient_id.as_str())
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let Some(row) = row else {
            // Another tenant's patient, or one gone, is not found as a patient, as on every other
            // route under it.
            let patient = sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL")
                .bind(tenant_id)
                .bind(patient_id.as_str())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
            return Err(Error::NotFound(if patient.is_some() { "image" } else { "patient" }.into()));
        };
        let image = image_from(&row)?;
        shown(&image)?;
        if let Some(event) = event {
            audit::enqueue(&mut transaction, event).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(image)
    }

    /// Deletes the image record `id`, with the audit `event`; `NotFound`, and nothing recorded,
    /// when it is gone already (a deletion of the same image, or of its patient, came first).
    pub(crate) async fn delete_image(&self, tenant_id: &str, id: &str, event: &AuditEvent) -> Result<(), Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let deleted = sqlx::query("DELETE FROM images WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound("image".into()));
        }
        record_deletions(&mut transaction, tenant_id, &[id.to_owned()], &[]).await?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The tenants with objects a deletion or an erasure left to delete (work across tenants, as
    /// the service's own role).
    pub(crate) async fn tenants_with_pending_deletions(&self) -> Result<Vec<String>, Error> {
        let tenants = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM object_deletions ORDER BY tenant_id")
            .fetch_all(self.database.pool())
            .await
            .map_err(StoreError::from)?;
        Ok(tenants)
    }

    /// The objects of `tenant_id` a deletion or an erasure left to delete, oldest first.
    pub(crate) async fn pending_deletions(&self, tenant_id: &str) -> Result<Vec<String>, Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let keys = sqlx::query_scalar(
            "SELECT object_key FROM object_deletions WHERE tenant_id = $1 ORDER BY recorded_at, object_key",
        )
        .bind(tenant_id)
        .fetch_all(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(keys)
    }

    /// Forgets the deletions of `keys`, whose objects are gone.
    pub(crate) async fn deletions_done(&self, tenant_id: &str, keys: &[String]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        for key in keys {
            sqlx::query("DELETE FROM object_deletions WHERE tenant_id = $1 AND object_key = $2")
                .bind(tenant_id)
                .bind(key)
                .execute(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The patient and their assessment `id`, for a report. `NotFound` unless both are the
    /// tenant's. The read is audited once the report is in hand ([`Store::report_current`]).
    pub(crate) async fn report_data(
        &self,
        tenant_id: &str,
        patient_id: &PatientId,
        id: &str,
    ) -> Result<(Patient, Assessment), Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let patient = fetch_patient(&mut transaction, &cipher, tenant_id, patient_id).await?;
        let assessment = fetch_assessment(&mut transaction, &cipher, tenant_id, patient_id, id).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok((patient, assessment))
    }

    /// A page of the assessments of the patient `patient_id` of `tenant_id` (not erased), in id
    /// order, with the audit event `event` makes of them in the same transaction when there are any.
    pub(crate) async fn list_assessments(
        &self,
        tenant_id: &str,
        patient_id: &PatientId,
        page_size: usize,
        page_token: Option<&str>,
        event: impl FnOnce(&[Assessment]) -> AuditEvent,
    ) -> Result<AssessmentPage, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let filter = format!("assessments\u{0}{patient_id}");
        let after = match page_token {
            Some(token) => {
                let refused = "is not a token this patient's assessment list returned: send it unchanged, or start \
                               again from the first page";
                resume_after(&cipher, token, &filter, refused, refused)?
            }
            None => String::new(),
        };
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // Held while its assessments are read: an erasure waits, or went first and they are not shown.
        let backend = self.database.backend();
        hold_live_patient(&mut transaction, backend, tenant_id, patient_id.as_str(), RowLock::Share).await?;
        // One past the page tells whether there is a next page, so that a full last page comes
        // without a token.
        let rows = sqlx::query(concat!(
            "SELECT ",
            assessment_columns!(),
            " FROM assessments WHERE tenant_id = $1 AND patient_id = $2 AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(patient_id.as_str())
        .bind(&after)
        .bind(i64::try_from(page_size + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let mut assessments = rows
            .iter()
            .map(|row| assessment_from(row, &cipher, tenant_id, patient_id))
            .collect::<Result<Vec<_>, _>>()?;
        let more = assessments.len() > page_size;
        assessments.truncate(page_size);
        if !assessments.is_empty() {
            audit::enqueue(&mut transaction, &event(&assessments)).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        let next_page_token =
            more.then(|| assessments.last().map(|last| next_token(&cipher, &filter, &last.id))).flatten();
        Ok(AssessmentPage { assessments, next_page_token })
    }

    /// The assessment `id` of the patient `patient_id` of `tenant_id` (not erased), with the
    /// audit event `event` in the same transaction.
    pub(crate) async fn read_assessment(
        &self,
        tenant_id: &str,
        patient_id: &PatientId,
        id: &str,
        event: AuditEvent,
    ) -> Result<Assessment, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let backend = self.database.backend();
        hold_live_patient(&mut transaction, backend, tenant_id, patient_id.as_str(), RowLock::Share).await?;
        let assessment = fetch_assessment(&mut transaction, &cipher, tenant_id, patient_id, id).await?;
        audit::enqueue(&mut transaction, &event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(assessment)
    }

    /// Whether image `id` of `tenant_id` has its record.
    pub(crate) async fn image_recorded(&self, tenant_id: &str, id: &str) -> Result<bool, Error> {
        self.any_row(tenant_id, "SELECT 1 FROM images WHERE tenant_id = $1 AND id = $2", id).await
    }

    /// Whether the report of assessment `id` of `tenant_id` outlived its patient: the assessment
    /// is here (so this database made the report) and its patient is erased or gone.
    pub(crate) async fn report_outlived_patient(&self, tenant_id: &str, id: &str) -> Result<bool, Error> {
        let query = "SELECT 1 FROM assessments a LEFT JOIN patients p ON p.tenant_id = a.tenant_id AND p.id = \
                     a.patient_id WHERE a.tenant_id = $1 AND a.id = $2 AND (p.id IS NULL OR p.erased_at IS NOT NULL)";
        self.any_row(tenant_id, query, id).await
    }

    /// When this database last recorded anything of `tenant_id` (a patient written, an assessment
    /// or an image stored); `None` when it holds nothing of the tenant.
    pub(crate) async fn newest_write(&self, tenant_id: &str) -> Result<Option<chrono::DateTime<Utc>>, Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let newest: Option<String> = sqlx::query_scalar(
            "SELECT MAX(at) FROM (SELECT MAX(COALESCE(updated_at, created_at)) AS at FROM patients WHERE tenant_id = $1 UNION ALL \
             SELECT MAX(created_at) FROM assessments WHERE tenant_id = $1 UNION ALL \
             SELECT MAX(created_at) FROM images WHERE tenant_id = $1) AS writes",
        )
        .bind(tenant_id)
        .fetch_one(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(newest.and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok()).map(|at| at.with_timezone(&Utc)))
    }

    /// Whether `query`, bound to `tenant_id` and `id`, finds a row, in a read of the tenant.
    async fn any_row(&self, tenant_id: &str, query: &'static str, id: &str) -> Result<bool, Error> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let row = sqlx::query(query)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(row.is_some())
    }

    /// Whether the report of assessment `id`, made from `patient` as read, still shows what is
    /// stored: the assessment is there, and the patient neither erased nor changed since. When it
    /// does, `event` (the read of the report) is written in the same transaction, which holds the
    /// patient's row so that no change or erasure comes between the check and the event.
    pub(crate) async fn report_current(
        &self,
        tenant_id: &str,
        patient: &Patient,
        id: &str,
        event: Option<&AuditEvent>,
    ) -> Result<bool, Error> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let backend = self.database.backend();
        let held = hold_live_patient(&mut transaction, backend, tenant_id, patient.id.as_str(), RowLock::Share).await;
        match held {
            Ok(_) => {}
            Err(Error::NotFound(_)) => return Ok(false),
            Err(error) => return Err(error),
        }
        let row = sqlx::query(
            "SELECT p.updated_at FROM patients p JOIN assessments a ON a.tenant_id = p.tenant_id AND a.patient_id = p.id \
             WHERE p.tenant_id = $1 AND p.id = $2 AND a.id = $3 AND p.erased_at IS NULL",
        )
        .bind(tenant_id)
        .bind(patient.id.as_str())
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let Some(row) = row else { return Ok(false) };
        let updated_at: Option<String> = row.try_get("updated_at").map_err(StoreError::from)?;
        let updated_at = updated_at.as_deref().map(|at| time::parse_stored("patients.updated_at", at)).transpose()?;
        if updated_at != patient.updated_at {
            return Ok(false);
        }
        if let Some(event) = event {
            audit::enqueue(&mut transaction, event).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Everything held about the patients of `tenant_id` with `cpf`, as JSON, and its audit
    /// event (`event(patient ids)`) in the same transaction.
    pub(crate) async fn export_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&[String]) -> AuditEvent,
    ) -> Result<serde_json::Value, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, created_at, updated_at, sealed FROM patients \
             WHERE tenant_id = $1 AND cpf_hash = $2 AND erased_at IS NULL ORDER BY id",
        )
        .bind(tenant_id)
        .bind(cipher.blind_index(cpf.as_str()))
        .fetch_all(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let mut patients = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let patient = patient_from(row, &cipher, tenant_id)?;
            let assessments = sqlx::query(
                "SELECT id, model, model_version, features, probability, risk_band, created_at, top_features, \
                 regression FROM assessments \
                 WHERE tenant_id = $1 AND patient_id = $2 ORDER BY id",
            )
            .bind(tenant_id)
            .bind(patient.id.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .iter()
            .map(|row| assessment_json(row, &cipher, tenant_id))
            .collect::<Result<Vec<_>, _>>()?;
            let images: Vec<serde_json::Value> = sqlx::query(
                "SELECT id, patient_id, media_type, size_bytes, sha256, width, height, has_thumbnail, created_at \
                 FROM images WHERE tenant_id = $1 AND patient_id = $2 ORDER BY id",
            )
            .bind(tenant_id)
            .bind(patient.id.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .iter()
            .map(|row| {
                image_from(row).map(|image| {
                    serde_json::json!({
                        "id": image.id,
                        "mediaType": image.media_type,
                        "sizeBytes": image.size_bytes,
                        "sha256": image.sha256,
                        "createTime": image.created_at,
                    })
                })
            })
            .collect::<Result<_, _>>()?;
            ids.push(patient.id.to_string());
            patients.push(serde_json::json!({
                "images": images,
                "id": patient.id.as_str(),
                "name": patient.name.as_str(),
                "cpf": patient.cpf.as_str(),
                "birthDate": patient.birth_date.to_string(),
                "email": patient.email.as_ref().map(Email::as_str),
                "phone": patient.phone.as_ref().map(Phone::as_str),
                "createTime": time::stored(patient.created_at),
                "updateTime": patient.updated_at.map(time::stored),
                "assessments": assessments,
            }));
        }
        audit::enqueue(&mut transaction, &event(&ids)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(serde_json::json!({ "patients": patients }))
    }

    /// Removes the personal fields of the patients of `tenant_id` with `cpf` (sealed values and
    /// blind index), marks them erased and deletes their images' records, with the audit event
    /// `event` makes of what was erased, all in one transaction: an erasure that fails after it
    /// is retried from the same state, never from patients it can no longer find by their CPF.
    /// Returns the patients erased, the assessments kept (whose reports are objects to delete)
    /// and the images deleted (whose objects are to be deleted once the erasure is committed).
    pub(crate) async fn erase_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&Erased) -> AuditEvent,
    ) -> Result<Erased, Error> {
        let cipher = self.keys.cipher(tenant_id).await?;
        let cpf_hash = cipher.blind_index(cpf.as_str());
        let backend = self.database.backend();
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // No patient is given the CPF meanwhile (the lock a registration of it takes), and the
        // patients found are held until the erasure commits: a change of CPF that commits first is
        // read before the rows are (PostgreSQL reads a locked row again once it is free).
        lock_cpf(&mut transaction, backend, tenant_id, &cpf_hash).await?;
        let select = if backend == Backend::Postgres {
            "SELECT id FROM patients WHERE tenant_id = $1 AND cpf_hash = $2 AND erased_at IS NULL ORDER BY id FOR UPDATE"
        } else {
            "SELECT id FROM patients WHERE tenant_id = $1 AND cpf_hash = $2 AND erased_at IS NULL ORDER BY id"
        };
        let ids = ids_of(
            &sqlx::query(select)
                .bind(tenant_id)
                .bind(&cpf_hash)
                .fetch_all(&mut *transaction)
                .await
                .map_err(StoreError::from)?,
        )?;
        for id in &ids {
            sqlx::query(
                "UPDATE patients SET name = '', cpf = '', birth_date = '', sealed = NULL, cpf_hash = NULL, \
                 erased_at = $1 WHERE tenant_id = $2 AND id = $3 AND cpf_hash = $4 AND erased_at IS NULL",
            )
            .bind(time::stored(Utc::now()))
            .bind(tenant_id)
            .bind(id)
            .bind(&cpf_hash)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        }
        let mut erased = Erased { patients: ids, ..Erased::default() };
        for patient_id in &erased.patients {
            for (sql, ids) in [
                ("SELECT id FROM assessments WHERE tenant_id = $1 AND patient_id = $2", &mut erased.assessments),
                ("DELETE FROM images WHERE tenant_id = $1 AND patient_id = $2 RETURNING id", &mut erased.images),
            ] {
                ids.extend(ids_of(
                    &sqlx::query(sql)
                        .bind(tenant_id)
                        .bind(patient_id)
                        .fetch_all(&mut *transaction)
                        .await
                        .map_err(StoreError::from)?,
                )?);
            }
        }
        record_deletions(&mut transaction, tenant_id, &erased.images, &erased.assessments).await?;
        audit::enqueue(&mut transaction, &event(&erased)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(erased)
    }
}

/// Where the bytes of image `image_id` are kept.
pub(crate) fn image_key(tenant_id: &str, image_id: &str) -> String {
    format!("images/{tenant_id}/{image_id}")
}

/// Where the thumbnail of image `image_id` is kept.
pub(crate) fn thumbnail_key(tenant_id: &str, image_id: &str) -> String {
    format!("images/{tenant_id}/{image_id}.thumbnail.png")
}

/// Where the report of assessment `assessment_id` is kept.
pub(crate) fn report_key(tenant_id: &str, assessment_id: &str) -> String {
    format!("reports/{tenant_id}/{assessment_id}.pdf")
}

/// Records, in the transaction that removes their records, that the objects of `images` (and
/// their thumbnails) and the reports of `assessments` are to be deleted: a row per object, until
/// [`Store::deletions_done`].
async fn record_deletions(
    connection: &mut sqlx::AnyConnection,
    tenant_id: &str,
    images: &[String],
    assessments: &[String],
) -> Result<(), Error> {
    let keys = images
        .iter()
        .flat_map(|id| [image_key(tenant_id, id), thumbnail_key(tenant_id, id)])
        .chain(assessments.iter().map(|id| report_key(tenant_id, id)));
    let now = time::stored(Utc::now());
    for key in keys {
        sqlx::query(
            "INSERT INTO object_deletions (tenant_id, object_key, recorded_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, object_key) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&key)
        .bind(&now)
        .execute(&mut *connection)
        .await
        .map_err(StoreError::from)?;
    }
    Ok(())
}

/// What erasing a data subject did: the patients erased, their assessments (kept, no longer
/// linked to a person) and their images (deleted).
#[derive(Debug, Default)]
pub(crate) struct Erased {
    pub patients: Vec<String>,
    pub assessments: Vec<String>,
    pub images: Vec<String>,
}

/// What deleting a patient deleted with them, and the assessments kept.
#[derive(Debug, Default)]
pub(crate) struct Deleted {
    pub assessments: Vec<String>,
    pub images: Vec<String>,
}

/// Holds, until the transaction ends, the CPF whose blind index is `cpf_hash` in `tenant_id`: on
/// PostgreSQL an advisory lock on the two, which every transaction storing or erasing the CPF
/// takes first; on SQLite, write transactions run one at a time already.
/// How [`hold_live_patient`] holds the patient's row on PostgreSQL.
#[derive(Clone, Copy)]
enum RowLock {
    /// Against changes and other holders: the transaction deletes what hangs off the patient.
    Update,
    /// Against changes only: the transaction adds to the patient.
    Share,
}

/// Checks that patient `id` of `tenant_id` exists and is not erased (`NotFound` otherwise) and, on
/// PostgreSQL, holds its row as `lock` says until the transaction ends; on SQLite, write
/// transactions run one at a time already.
async fn hold_live_patient(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
    tenant_id: &str,
    id: &str,
    lock: RowLock,
) -> Result<(), Error> {
    let select = match (backend, lock) {
        (Backend::Postgres, RowLock::Update) => {
            "SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR UPDATE"
        }
        (Backend::Postgres, RowLock::Share) => {
            "SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL FOR SHARE"
        }
        _ => "SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
    };
    sqlx::query(select)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound("patient".into()))?;
    Ok(())
}

async fn lock_cpf(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
    tenant_id: &str,
    cpf_hash: &str,
) -> Result<(), Error> {
    if backend == Backend::Postgres {
        // The key shows in `pg_locks`: a digest of the keyed blind index, which says nothing of the CPF.
        let digest = Sha256::digest(format!("patients.cpf_hash\0{tenant_id}\0{cpf_hash}").as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
        // Counted, so that the row holds an integer rather than the function's `void`.
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(key)
            .fetch_one(&mut *connection)
            .await
            .map_err(StoreError::from)?;
    }
    Ok(())
}

/// Refuses `cpf_hash`, a CPF's blind index, when a patient of `tenant_id` other than `except` has
/// it and is not erased: a CPF is one person, and data-subject requests find the person by it.
///
/// Called in the write transaction that stores the CPF, which must not see a row stored after its
/// check: on SQLite, write transactions run one at a time; on PostgreSQL, the transaction first
/// takes an advisory lock on the tenant and the blind index, which a second transaction storing
/// the same CPF waits for, and then sees the first's row (at `READ COMMITTED`, each statement reads
/// what was committed before it). Not a unique index: a database written before this check may
/// hold duplicates, on which building one would fail at start-up.
async fn refuse_registered_cpf(
    connection: &mut sqlx::AnyConnection,
    backend: Backend,
    tenant_id: &str,
    cpf_hash: &str,
    except: &PatientId,
) -> Result<(), Error> {
    lock_cpf(connection, backend, tenant_id, cpf_hash).await?;
    let registered = sqlx::query(
        "SELECT 1 FROM patients WHERE tenant_id = $1 AND cpf_hash = $2 AND erased_at IS NULL AND id <> $3 LIMIT 1",
    )
    .bind(tenant_id)
    .bind(cpf_hash)
    .bind(except.as_str())
    .fetch_optional(&mut *connection)
    .await
    .map_err(StoreError::from)?;
    match registered {
        // Without the other patient's id: the caller may not know it, and learns only that the CPF is taken.
        Some(_) => Err(Error::Refused(Box::new(aigronova_platform::error::already_exists(
            "cpf",
            "cpf: a patient with this CPF is already registered",
        )))),
        None => Ok(()),
    }
}

fn image_from(row: &AnyRow) -> Result<ImageRecord, StoreError> {
    Ok(ImageRecord {
        id: row.try_get("id")?,
        patient_id: row.try_get("patient_id")?,
        media_type: row.try_get("media_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        width: row.try_get::<i64, _>("width")?,
        height: row.try_get::<i64, _>("height")?,
        has_thumbnail: row.try_get::<i64, _>("has_thumbnail")? == 1,
        created_at: row.try_get("created_at")?,
    })
}

/// The ids of a patient's assessments (whose reports are objects), for [`ids_for_patient`].
const ASSESSMENTS_OF_PATIENT: &str = "SELECT id FROM assessments WHERE tenant_id = $1 AND patient_id = $2";

/// The ids `sql` answers with the tenant as $1 and the patient as $2.
async fn ids_for_patient(
    connection: &mut sqlx::AnyConnection,
    sql: &'static str,
    tenant_id: &str,
    patient_id: &str,
) -> Result<Vec<String>, StoreError> {
    ids_of(&sqlx::query(sql).bind(tenant_id).bind(patient_id).fetch_all(connection).await?)
}

/// The `id` column of `rows`.
fn ids_of(rows: &[AnyRow]) -> Result<Vec<String>, StoreError> {
    rows.iter().map(|row| row.try_get::<String, _>("id")).collect::<Result<_, _>>().map_err(StoreError::from)
}

/// What an assessment's inputs are sealed for: its tenant and row.
fn features_context(tenant_id: &str, id: &str) -> String {
    format!("assessments/{tenant_id}/{id}/features")
}

/// An assessment's inputs as JSON, opened with the tenant's key. Inputs stored in clear before
/// they were sealed are sealed at start ([`Store::seal_clear_inputs`]): any found in clear since
/// were put there by other hands.
fn open_features(cipher: &TenantCipher, tenant_id: &str, id: &str, stored: &str) -> Result<String, StoreError> {
    if !aigronova_platform::crypto::is_sealed(stored) {
        return Err(StoreError::Corrupt(format!("assessment {id}: its inputs are stored in clear, not sealed")));
    }
    cipher
        .open(&features_context(tenant_id, id), stored)
        .map_err(|_| StoreError::Corrupt(format!("assessment {id}: its inputs do not open with the tenant's key")))
}

fn assessment_json(row: &AnyRow, cipher: &TenantCipher, tenant_id: &str) -> Result<serde_json::Value, StoreError> {
    let id: String = row.try_get("id")?;
    let features: String = row.try_get("features")?;
    let features = open_features(cipher, tenant_id, &id, &features)?;
    let features: serde_json::Value = serde_json::from_str(&features)
        .map_err(|error| StoreError::Corrupt(format!("assessments.features: {error}")))?;
    // Named as the API names them: `value`, and `probability` for a classifier's (`null` for a
    // regressor's, as the bundle writes a field with no value).
    let output = row.try_get::<f64, _>("probability")?;
    let probability = (row.try_get::<i64, _>("regression")? != 1).then_some(output);
    Ok(serde_json::json!({
        "id": id,
        "model": row.try_get::<String, _>("model")?,
        "modelVersion": row.try_get::<String, _>("model_version")?,
        "features": features,
        "value": output,
        "probability": probability,
        // As the API shows them: `{"feature", "contribution"}`, largest first.
        "topFeatures": row
            .try_get::<Option<String>, _>("top_features")?
            .and_then(|json| serde_json::from_str::<Vec<(String, f64)>>(&json).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(feature, contribution)| serde_json::json!({"feature": feature, "contribution": contribution}))
            .collect::<Vec<_>>(),
        "riskBand": row.try_get::<String, _>("risk_band")?,
        "createTime": row.try_get::<String, _>("created_at")?,
    }))
}

/// What the sealed column of `patient` holds, bound to its tenant and row.
fn seal(cipher: &TenantCipher, tenant_id: &str, patient: &Patient) -> String {
    let sealed = Sealed {
        name: patient.name.as_str().to_owned(),
        cpf: patient.cpf.as_str().to_owned(),
        birth_date: patient.birth_date.to_string(),
        email: patient.email.as_ref().map(|email| email.as_str().to_owned()),
        phone: patient.phone.as_ref().map(|phone| phone.as_str().to_owned()),
    };
    let json = serde_json::to_string(&sealed).expect("personal fields serialise");
    cipher.seal(&context(tenant_id, patient.id.as_str()), &json)
}

fn context(tenant_id: &str, id: &str) -> String {
    format!("patients/{tenant_id}/{id}")
}

/// The assessment `id` of the patient `patient_id` of `tenant_id`.
async fn fetch_assessment(
    transaction: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    patient_id: &PatientId,
    id: &str,
) -> Result<Assessment, Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        assessment_columns!(),
        " FROM assessments WHERE tenant_id = $1 AND patient_id = $2 AND id = $3"
    ))
    .bind(tenant_id)
    .bind(patient_id.as_str())
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await
    .map_err(StoreError::from)?
    .ok_or_else(|| Error::NotFound("assessment".into()))?;
    Ok(assessment_from(&row, cipher, tenant_id, patient_id)?)
}

/// An assessment of `patient_id` from its row, its inputs opened.
fn assessment_from(
    row: &AnyRow,
    cipher: &TenantCipher,
    tenant_id: &str,
    patient_id: &PatientId,
) -> Result<Assessment, StoreError> {
    let corrupt = |what: &str, error: serde_json::Error| StoreError::Corrupt(format!("assessments.{what}: {error}"));
    let id: String = row.try_get("id")?;
    let features: String = row.try_get("features")?;
    let features = open_features(cipher, tenant_id, &id, &features)?;
    let top: Option<String> = row.try_get("top_features")?;
    Ok(Assessment {
        id,
        patient_id: patient_id.clone(),
        model: row.try_get("model")?,
        model_version: row.try_get("model_version")?,
        features: serde_json::from_str(&features).map_err(|error| corrupt("features", error))?,
        output: row.try_get("probability")?,
        regression: row.try_get::<i64, _>("regression")? == 1,
        risk_band: row.try_get("risk_band")?,
        top_features: top
            .map(|json| serde_json::from_str(&json).map_err(|error| corrupt("top_features", error)))
            .transpose()?
            .unwrap_or_default(),
        created_at: time::parse_stored("assessments.created_at", &row.try_get::<String, _>("created_at")?)?,
    })
}

async fn fetch_patient(
    transaction: &mut sqlx::AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    id: &PatientId,
) -> Result<Patient, Error> {
    let row = sqlx::query(
        "SELECT id, created_at, updated_at, sealed FROM patients \
         WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
    )
    .bind(tenant_id)
    .bind(id.as_str())
    .fetch_optional(&mut *transaction)
    .await
    .map_err(StoreError::from)?
    .ok_or_else(|| Error::NotFound("patient".into()))?;
    Ok(patient_from(&row, cipher, tenant_id)?)
}

/// A patient from its row: the sealed fields opened and parsed again.
fn patient_from(row: &AnyRow, cipher: &TenantCipher, tenant_id: &str) -> Result<Patient, StoreError> {
    let id: String = row.try_get("id")?;
    let sealed: Option<String> = row.try_get("sealed")?;
    let sealed = sealed.ok_or_else(|| StoreError::Corrupt(format!("patient {id} has no sealed fields")))?;
    let json = cipher
        .open(&context(tenant_id, &id), &sealed)
        .map_err(|error| StoreError::Corrupt(format!("patient {id}: {error}")))?;
    let fields: Sealed =
        serde_json::from_str(&json).map_err(|error| StoreError::Corrupt(format!("patient {id}: {error}")))?;
    let corrupt = |column: &str, error: Error| StoreError::Corrupt(format!("patients.{column}: {error}"));
    let updated_at: Option<String> = row.try_get("updated_at")?;
    Ok(Patient {
        id: PatientId::parse("id", &id).map_err(|error| corrupt("id", error))?,
        name: PatientName::stored(&fields.name).map_err(|error| corrupt("name", error))?,
        cpf: Cpf::parse(&fields.cpf).map_err(|error| corrupt("cpf", error))?,
        birth_date: BirthDate::parse(&fields.birth_date).map_err(|error| corrupt("birth_date", error))?,
        email: Email::stored(fields.email.as_deref().unwrap_or_default()).map_err(|error| corrupt("email", error))?,
        phone: Phone::stored(fields.phone.as_deref().unwrap_or_default()).map_err(|error| corrupt("phone", error))?,
        created_at: time::parse_stored("patients.created_at", &row.try_get::<String, _>("created_at")?)?,
        updated_at: updated_at.as_deref().map(|at| time::parse_stored("patients.updated_at", at)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patient::NewPatient;

    const TENANT: &str = "tenant-a";

    async fn store(dir: &std::path::Path) -> Store {
        testing::store(dir).await.0
    }

    use super::testing::event;

    /// The `n`th of a series of valid CPFs: the 9 digits of 100000000 + `n` and their check digits.
    fn cpf(n: u32) -> Cpf {
        let mut digits: Vec<u32> = format!("{:09}", 100_000_000 + n).chars().filter_map(|c| c.to_digit(10)).collect();
        for length in [9_u32, 10] {
            let sum: u32 = digits.iter().zip((2..=length + 1).rev()).map(|(digit, weight)| digit * weight).sum();
            let check = (sum * 10) % 11;
            digits.push(if check == 10 { 0 } else { check });
        }
        Cpf::parse(&digits.iter().map(u32::to_string).collect::<String>()).unwrap()
    }

    fn patient(name: &str, cpf: Cpf) -> Patient {
        let birth_date = BirthDate::parse("1980-02-29").unwrap();
        Patient::register(NewPatient {
            name: PatientName::parse(name).unwrap(),
            cpf,
            birth_date,
            email: None,
            phone: None,
        })
    }

    fn refused_as_registered(result: Result<impl std::fmt::Debug, Error>) {
        match result {
            Err(Error::Refused(status)) => {
                assert_eq!(status.code(), tonic::Code::AlreadyExists);
                assert_eq!(status.message(), "cpf: a patient with this CPF is already registered");
            }
            other => panic!("not refused as a CPF already registered: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cpf_is_registered_once_a_tenant_until_its_patient_is_erased() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let first = patient("Maria Silva", cpf(1));
        store.create_patient(TENANT, &first, &event()).await.unwrap();

        refused_as_registered(store.create_patient(TENANT, &patient("Maria S.", cpf(1)), &event()).await);
        // Another tenant's patients are another register.
        store.create_patient("tenant-b", &patient("Maria Silva", cpf(1)), &event()).await.unwrap();
        // A change to the CPF of another is refused; to its own CPF, or another field, is not.
        let second = patient("João Lima", cpf(2));
        store.create_patient(TENANT, &second, &event()).await.unwrap();
        let to_first = PatientChanges { cpf: Some(cpf(1)), ..PatientChanges::default() };
        refused_as_registered(store.update_patient(TENANT, &second.id, to_first.clone(), |_, _| Vec::new()).await);
        let same = PatientChanges {
            cpf: Some(cpf(2)),
            name: Some(PatientName::parse("João").unwrap()),
            ..PatientChanges::default()
        };
        store.update_patient(TENANT, &second.id, same, |_, _| Vec::new()).await.unwrap();

        // Erased, the first patient holds its CPF no more.
        let erased = store.erase_subject(TENANT, &cpf(1), |_| event()).await.unwrap();
        assert_eq!(erased.patients, [first.id.to_string()]);
        let (changed, _) = store.update_patient(TENANT, &second.id, to_first, |_, _| Vec::new()).await.unwrap();
        assert_eq!(changed.cpf, cpf(1));
        refused_as_registered(store.create_patient(TENANT, &patient("Maria Silva", cpf(1)), &event()).await);
    }

    fn assessment_of(patient: &Patient) -> Assessment {
        Assessment {
            id: uuid::Uuid::now_v7().to_string(),
            patient_id: patient.id.clone(),
            model: "breast-cancer".into(),
            model_version: "1".into(),
            features: std::collections::BTreeMap::from([("mean radius".to_owned(), 14.0)]),
            output: 0.25,
            regression: false,
            risk_band: "moderate".into(),
            top_features: vec![("mean radius".into(), 0.1)],
            created_at: time::parse_stored("now", &time::stored(Utc::now())).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_report_is_current_until_its_patient_changes_is_erased_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let reads = |patient: &Patient| {
            let (store, id) = (store.clone(), patient.id.clone());
            async move { store.read_patient(TENANT, &id, |_| event()).await.unwrap() }
        };
        let mut assessments = Vec::new();
        for n in 0..3 {
            let patient = patient("Maria Silva", cpf(n));
            store.create_patient(TENANT, &patient, &event()).await.unwrap();
            let assessment = assessment_of(&patient);
            let cipher = store.cipher(TENANT).await.unwrap();
            store.insert_assessment(TENANT, &cipher, &assessment, &event()).await.unwrap();
            assessments.push((reads(&patient).await, assessment.id));
        }
        let [(changed, a), (erased, b), (deleted, c)] = <[_; 3]>::try_from(assessments).unwrap();
        for (patient, id) in [(&changed, &a), (&erased, &b), (&deleted, &c)] {
            assert!(store.report_current(TENANT, patient, id, None).await.unwrap());
            assert!(!store.report_current("tenant-b", patient, id, None).await.unwrap(), "another tenant's");
        }
        assert!(!store.report_current(TENANT, &changed, &b, None).await.unwrap(), "another patient's assessment");

        let phone = PatientChanges { phone: Some(Phone::parse("+55 11 91234-5678").unwrap()), ..Default::default() };
        let (_, reports) = store.update_patient(TENANT, &changed.id, phone.clone(), |_, _| Vec::new()).await.unwrap();
        assert_eq!(reports, Some(vec![a.clone()]), "the reports to make again");
        // Recorded with the change: the sweep deletes the old report if the object store refuses now.
        assert_eq!(store.pending_deletions(TENANT).await.unwrap(), [report_key(TENANT, &a)]);
        let (_, unchanged) = store.update_patient(TENANT, &changed.id, phone, |_, _| Vec::new()).await.unwrap();
        assert_eq!(unchanged, None, "the same phone again changes nothing");
        assert!(!store.report_current(TENANT, &changed, &a, None).await.unwrap(), "made before the change");
        assert!(store.report_current(TENANT, &reads(&changed).await, &a, None).await.unwrap(), "made after it");

        store.erase_subject(TENANT, &cpf(1), |_| event()).await.unwrap();
        assert!(!store.report_current(TENANT, &erased, &b, None).await.unwrap(), "erased");

        let gone = store.delete_patient(TENANT, &deleted.id, |_| event()).await.unwrap();
        assert_eq!((gone.assessments, gone.images), (vec![c.clone()], Vec::<String>::new()));
        assert!(!store.report_current(TENANT, &deleted, &c, None).await.unwrap(), "deleted");
    }

    #[test]
    fn a_prefix_ending_with_a_space_ends_a_word() {
        let matches = |name: &str, prefix: &str| starts_with_prefix(&searchable(name), &search_prefix(prefix));
        assert!(matches("Ana", "ana "));
        assert!(matches("Ana  Paula", "ana "));
        assert!(!matches("Anabela Nguyễn", "ana "));
        assert!(matches("Anabela Nguyễn", "ana"));
        assert!(matches("Ana Paula", "Ana  pa"));
        assert!(matches("Ana Paula", "ana paula  "));
    }

    #[tokio::test]
    async fn a_name_search_may_answer_an_empty_page_with_a_token_to_go_on_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        // More patients that do not match than one call examines, then one that does.
        let others = u32::try_from(SCAN_LIMIT).unwrap() + 1;
        for n in 0..others {
            store.create_patient(TENANT, &patient("Zeca Souza", cpf(n)), &event()).await.unwrap();
        }
        // A later millisecond: the match comes after the others in id order.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let maria = patient("Maria Silva", cpf(others));
        store.create_patient(TENANT, &maria, &event()).await.unwrap();
        let filter = PatientFilter { name_prefix: Some("mar".into()), cpf: None };

        let first = store.list_patients(TENANT, &filter, 20, None, |_| event()).await.unwrap();
        assert!(first.patients.is_empty(), "{} patients", first.patients.len());
        let token = first.next_page_token.expect("a token to go on from where the scan stopped");
        let second = store.list_patients(TENANT, &filter, 20, Some(&token), |_| event()).await.unwrap();
        assert_eq!(second.patients, [maria]);
        assert_eq!(second.next_page_token, None, "the end");
    }
}

/// What the tests of the store and of its neighbours start from.
#[cfg(test)]
pub(crate) mod testing {
    use aigronova_platform::{audit::EventKind, auth::Caller};

    use super::*;

    /// A store on a fresh embedded database in `dir`, and the database.
    pub(crate) async fn store(dir: &std::path::Path) -> (Store, Database) {
        let url = format!("sqlite://{}", dir.join("healthquantum.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let master = aigronova_platform::crypto::master_key(None, &dir.join("master.key"), "test").unwrap();
        (Store::new(database.clone(), Arc::new(TenantKeys::new(database.clone(), master))), database)
    }

    /// An audit event of the tenant `tenant-a`.
    pub(crate) fn event() -> AuditEvent {
        let caller = Caller { tenant_id: "tenant-a".into(), subject: "test".into(), scopes: Vec::new() };
        AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::PersonalDataChange,
            "test",
            "patient:x",
            serde_json::json!({}),
        )
    }
}
