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
        let row = sqlx::query(
            "SELECT id, name, cpf, birth_date, created_at FROM patients \
             WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL",
        )
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
        sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2 AND erased_at IS NULL")
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

impl Store {
    /// Everything held about the patients of `tenant_id` with `cpf`, as JSON, and its audit
    /// event (`event(patient ids)`) in the same transaction.
    pub(crate) async fn export_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&[String]) -> AuditEvent,
    ) -> Result<serde_json::Value, Error> {
        let mut transaction = self.database.begin_write().await?;
        let rows = sqlx::query(
            "SELECT id, name, cpf, birth_date, created_at FROM patients \
             WHERE tenant_id = $1 AND cpf = $2 AND erased_at IS NULL ORDER BY id",
        )
        .bind(tenant_id)
        .bind(cpf.as_str())
        .fetch_all(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let mut patients = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let patient = patient_from(row)?;
            let assessments = sqlx::query(
                "SELECT id, model, model_version, features, probability, risk_band, created_at FROM assessments \
                 WHERE tenant_id = $1 AND patient_id = $2 ORDER BY id",
            )
            .bind(tenant_id)
            .bind(patient.id.as_str())
            .fetch_all(&mut *transaction)
            .await
            .map_err(StoreError::from)?
            .iter()
            .map(assessment_json)
            .collect::<Result<Vec<_>, _>>()?;
            ids.push(patient.id.to_string());
            patients.push(serde_json::json!({
                "id": patient.id.as_str(),
                "name": patient.name.as_str(),
                "cpf": patient.cpf.as_str(),
                "birthDate": patient.birth_date.to_string(),
                "createTime": timestamp(patient.created_at),
                "assessments": assessments,
            }));
        }
        audit::enqueue(&mut transaction, &event(&ids)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(serde_json::json!({ "patients": patients }))
    }

    /// Empties the personal fields of the patients of `tenant_id` with `cpf` and marks them
    /// erased, with the audit event (`event(patient ids)`) in the same transaction; how many.
    pub(crate) async fn erase_subject(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        event: impl FnOnce(&[String]) -> AuditEvent,
    ) -> Result<Vec<String>, Error> {
        let mut transaction = self.database.begin_write().await?;
        let ids: Vec<String> =
            sqlx::query("SELECT id FROM patients WHERE tenant_id = $1 AND cpf = $2 AND erased_at IS NULL ORDER BY id")
                .bind(tenant_id)
                .bind(cpf.as_str())
                .fetch_all(&mut *transaction)
                .await
                .map_err(StoreError::from)?
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?;
        for id in &ids {
            sqlx::query(
                "UPDATE patients SET name = '', cpf = '', birth_date = '', erased_at = $1 \
                 WHERE tenant_id = $2 AND id = $3",
            )
            .bind(timestamp(Utc::now()))
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
        }
        audit::enqueue(&mut transaction, &event(&ids)).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(ids)
    }
}

fn assessment_json(row: &AnyRow) -> Result<serde_json::Value, StoreError> {
    let features: String = row.try_get("features")?;
    let features: serde_json::Value = serde_json::from_str(&features)
        .map_err(|error| StoreError::Corrupt(format!("assessments.features: {error}")))?;
    Ok(serde_json::json!({
        "id": row.try_get::<String, _>("id")?,
        "model": row.try_get::<String, _>("model")?,
        "modelVersion": row.try_get::<String, _>("model_version")?,
        "features": features,
        "probability": row.try_get::<f64, _>("probability")?,
        "riskBand": row.try_get::<String, _>("risk_band")?,
        "createTime": row.try_get::<String, _>("created_at")?,
    }))
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
