//! Patients and assessments in the service's own database (SQLite or PostgreSQL through
//! `sqlx::Any`). Every query filters on the tenant: a row of another tenant does not exist.

use aigronova_platform::{
    Error,
    audit::{self, AuditEvent},
    storage::{Database, StoreError},
};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Row, any::AnyRow};

use crate::{
    assessment::Assessment,
    patient::{BirthDate, Cpf, Patient, PatientId, PatientName},
};

/// The queries of this service over one [`Database`].
#[derive(Clone, Debug)]
pub(crate) struct Store {
    database: Database,
}

impl Store {
    pub(crate) fn new(database: Database) -> Self {
        Self { database }
    }

    pub(crate) async fn create_patient(&self, tenant_id: &str, patient: &Patient) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO patients (tenant_id, id, name, cpf, birth_date, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(patient.id.as_str())
        .bind(patient.name.as_str())
        .bind(patient.cpf.as_str())
        .bind(patient.birth_date.to_string())
        .bind(timestamp(patient.created_at))
        .execute(self.database.pool())
        .await
        .map_err(StoreError::from)?;
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
        let mut transaction = self.database.begin_write().await?;
        let row =
            sqlx::query("SELECT id, name, cpf, birth_date, created_at FROM patients WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id.as_str())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(StoreError::from)?
                .ok_or_else(|| Error::NotFound("patient".into()))?;
        let patient = patient_from(&row)?;
        audit::enqueue(&mut transaction, &event(&patient)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(patient)
    }

    /// `NotFound` unless `id` is a patient of `tenant_id`.
    pub(crate) async fn patient_exists(&self, tenant_id: &str, id: &PatientId) -> Result<(), Error> {
        sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id.as_str())
            .fetch_optional(self.database.pool())
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound("patient".into()))?;
        Ok(())
    }

    /// Stores `assessment` for its patient, who must be a patient of `tenant_id`, and its audit
    /// `event` in the same transaction.
    pub(crate) async fn insert_assessment(
        &self,
        tenant_id: &str,
        assessment: &Assessment,
        event: &AuditEvent,
    ) -> Result<(), Error> {
        let features = serde_json::to_string(&assessment.features)
            .map_err(|error| StoreError::Corrupt(format!("features do not serialize: {error}")))?;
        let mut transaction = self.database.begin_write().await?;
        sqlx::query(
            "INSERT INTO assessments \
             (tenant_id, id, patient_id, model, model_version, features, probability, risk_band, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant_id)
        .bind(assessment.id.as_str())
        .bind(assessment.patient_id.as_str())
        .bind(assessment.model.as_str())
        .bind(assessment.model_version.as_str())
        .bind(features)
        .bind(assessment.probability)
        .bind(assessment.risk_band.as_str())
        .bind(timestamp(assessment.created_at))
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        audit::enqueue(&mut transaction, event).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// RFC 3339 in UTC with a `Z`, to the microsecond: sorts as text on both engines.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn patient_from(row: &AnyRow) -> Result<Patient, StoreError> {
    let text = |column: &str| row.try_get::<String, _>(column);
    let corrupt = |column: &str, error: Error| StoreError::Corrupt(format!("patients.{column}: {error}"));
    let created_at = text("created_at")?;
    Ok(Patient {
        id: PatientId::parse("id", &text("id")?).map_err(|error| corrupt("id", error))?,
        name: PatientName::parse(&text("name")?).map_err(|error| corrupt("name", error))?,
        cpf: Cpf::parse(&text("cpf")?).map_err(|error| corrupt("cpf", error))?,
        birth_date: BirthDate::parse(&text("birth_date")?).map_err(|error| corrupt("birth_date", error))?,
        created_at: DateTime::parse_from_rfc3339(&created_at)
            .map_err(|error| StoreError::Corrupt(format!("patients.created_at: {error}")))?
            .with_timezone(&Utc),
    })
}
