//! The `aigronova.health.v1.HealthQuantum` gRPC service: the edge where protobuf messages become
//! domain values and back. Each call is authenticated by the `Authenticate` interceptor before
//! it gets here, and acts only on the caller's tenant.

use std::time::Instant;

use aigronova_platform::{
    audit::{self, AuditEvent, EventKind, OutboxWaker},
    auth, crypto,
    inference::ModelRegistry,
    monitoring::InferenceMonitor,
    objects::Objects,
    subject::{self, SUBJECT_SCOPE},
    time,
};
use aigronova_proto::{
    aigronova::{
        common::v1::{self as common, data_subject_server::DataSubject},
        health::v1 as proto,
    },
    google::api::HttpBody,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::{
    assessment::{self, Assessment, AssessmentRequest, ModelInput},
    imaging,
    patient::{Cpf, Email, NewPatient, Patient, PatientChanges, PatientId, PatientName, Phone},
    store::{Deleted, Erased, ImageRecord, PatientFilter, Store, image_key, report_key, thumbnail_key},
};

/// The layout of the reports made now, part of what a kept report is sealed for.
const REPORT_LAYOUT: &str = "r2";

/// The scope that lets a caller read patients (GetPatient's, through the gateway).
const READ_SCOPE: &str = "health:read";

/// The state every call shares.
#[derive(Clone, Debug)]
pub(crate) struct HealthQuantumApi {
    store: Store,
    models: ModelRegistry,
    outbox: OutboxWaker,
    monitor: InferenceMonitor,
    objects: Objects,
}

impl HealthQuantumApi {
    pub(crate) fn new(
        store: Store,
        models: ModelRegistry,
        outbox: OutboxWaker,
        monitor: InferenceMonitor,
        objects: Objects,
    ) -> Self {
        Self { store, models, outbox, monitor, objects }
    }

    /// The store and the object store, for the sweep of objects no record wants.
    pub(crate) fn store_and_objects(&self) -> (Store, Objects) {
        (self.store.clone(), self.objects.clone())
    }

    /// Deletes the objects of images whose records are gone; a failure is logged, and the
    /// deletion recorded with the records' (see [`Store::delete_patient`]) is tried again by the
    /// sweep of [`crate::sweep`].
    async fn delete_image_objects(&self, tenant_id: &str, image_ids: &[String]) {
        let keys: Vec<String> =
            image_ids.iter().flat_map(|id| [image_key(tenant_id, id), thumbnail_key(tenant_id, id)]).collect();
        self.delete_objects(tenant_id, &keys).await;
    }

    /// Deletes the reports of the assessments `assessment_ids`; a failure is logged, and tried
    /// again as for images.
    async fn delete_reports(&self, tenant_id: &str, assessment_ids: &[String]) {
        let keys: Vec<String> = assessment_ids.iter().map(|id| report_key(tenant_id, id)).collect();
        self.delete_objects(tenant_id, &keys).await;
    }

    /// Audits that a refusal of `action` (the CPF is another live patient's) told the caller
    /// that the person with `cpf` is a patient. Logged when it cannot be recorded: the refusal
    /// stands either way.
    async fn record_cpf_disclosure(&self, caller: &auth::Caller, action: &str, cpf: &Cpf, except: &PatientId) {
        let event = |other: &str| {
            AuditEvent::new(
                caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                action,
                &format!("patient:{other}"),
                serde_json::json!({"refused": "cpf already registered", "fields": ["cpf"]}),
            )
        };
        match self.store.record_cpf_disclosure(&caller.tenant_id, cpf, except, event).await {
            Ok(()) => self.outbox.wake(),
            Err(error) => tracing::error!(%error, "a refusal that disclosed a registered CPF is not audited"),
        }
    }

    async fn delete_objects(&self, tenant_id: &str, keys: &[String]) {
        let deleted = crate::sweep::delete_objects(&self.store, &self.objects, tenant_id, keys).await;
        if deleted < keys.len() {
            tracing::error!(failed = keys.len() - deleted, "objects not deleted; the sweep deletes them later");
        }
    }
}

/// Whether `result` is the refusal of a CPF another live patient of the tenant has.
fn cpf_taken<T>(result: &Result<T, aigronova_platform::Error>) -> bool {
    matches!(result, Err(aigronova_platform::Error::Refused(status)) if status.code() == tonic::Code::AlreadyExists)
}

fn image_message(image: ImageRecord) -> proto::Image {
    let create_time =
        DateTime::parse_from_rfc3339(&image.created_at).ok().map(|at| time::to_proto(at.with_timezone(&Utc)));
    proto::Image {
        id: image.id,
        patient_id: image.patient_id,
        media_type: image.media_type,
        size_bytes: image.size_bytes,
        sha256: image.sha256,
        has_thumbnail: image.has_thumbnail,
        width: i32::try_from(image.width).unwrap_or(0),
        height: i32::try_from(image.height).unwrap_or(0),
        create_time,
    }
}

/// The audit events of an update of `patient` that set the fields `changed`: the change, when one
/// was `written`, and the read of the personal fields the answer shows that the caller did not
/// send, when it shows them (to a caller who `may_read` patients).
/// The audit events of a change that sent `sent` and altered `changed` (a subset of it, empty
/// when every value sent was the one held).
fn update_events(
    caller: &auth::Caller,
    patient: &Patient,
    sent: &[&str],
    changed: &[&str],
    may_read: bool,
) -> Vec<AuditEvent> {
    let subject = format!("patient:{}", patient.id);
    let event = |kind: EventKind, fields: &[&str]| {
        AuditEvent::new(
            caller,
            crate::SERVICE_NAME,
            kind,
            "health.UpdatePatient",
            &subject,
            serde_json::json!({"fields": fields}),
        )
    };
    // A change of the fields it altered only: values sent as they were held change nothing.
    let mut events = if changed.is_empty() { Vec::new() } else { vec![event(EventKind::PersonalDataChange, changed)] };
    let disclosed: Vec<&str> = patient.held_fields().into_iter().filter(|field| !sent.contains(field)).collect();
    if may_read && !disclosed.is_empty() {
        events.push(event(EventKind::SensitiveRead, disclosed.as_slice()));
    }
    events
}

/// The JSON names of a patient's personal fields.
const PERSONAL_FIELDS: &[&str] = &["name", "cpf", "birthDate", "email", "phone"];

/// `patient` with only the personal fields named in `shown` (JSON names): the others are empty.
fn showing_only(mut patient: proto::Patient, shown: &[&str]) -> proto::Patient {
    let hidden = |field: &str| !shown.contains(&field);
    if hidden("name") {
        patient.name.clear();
    }
    if hidden("cpf") {
        patient.cpf.clear();
    }
    if hidden("birthDate") {
        patient.birth_date.clear();
    }
    if hidden("email") {
        patient.email.clear();
    }
    if hidden("phone") {
        patient.phone.clear();
    }
    patient
}

#[tonic::async_trait]
impl proto::health_quantum_server::HealthQuantum for HealthQuantumApi {
    async fn create_patient(
        &self,
        request: Request<proto::CreatePatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        let caller = auth::caller(&request)?.clone();
        let new = NewPatient::try_from(request.into_inner())?;
        let patient = Patient::register(new);
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::PersonalDataChange,
            "health.CreatePatient",
            &format!("patient:{}", patient.id),
            serde_json::json!({"fields": patient.held_fields()}),
        );
        let created = self.store.create_patient(&caller.tenant_id, &patient, &event).await;
        if cpf_taken(&created) {
            self.record_cpf_disclosure(&caller, "health.CreatePatient", &patient.cpf, &patient.id).await;
        }
        created?;
        self.outbox.wake();
        tracing::info!(tenant = %caller.tenant_id, patient = %patient.id, "patient registered");
        Ok(Response::new(patient.into()))
    }

    async fn get_patient(
        &self,
        request: Request<proto::GetPatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = PatientId::parse("id", &request.get_ref().id)?;
        let event = |patient: &Patient| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                "health.GetPatient",
                &format!("patient:{}", patient.id),
                serde_json::json!({"fields": patient.held_fields()}),
            )
        };
        let patient = self.store.read_patient(&caller.tenant_id, &id, event).await?;
        self.outbox.wake();
        Ok(Response::new(patient.into()))
    }

    async fn list_patients(
        &self,
        request: Request<proto::ListPatientsRequest>,
    ) -> Result<Response<proto::ListPatientsResponse>, Status> {
        self.patients_page(request, "health.ListPatients").await
    }

    async fn search_patients(
        &self,
        request: Request<proto::ListPatientsRequest>,
    ) -> Result<Response<proto::ListPatientsResponse>, Status> {
        self.patients_page(request, "health.SearchPatients").await
    }

    async fn update_patient(
        &self,
        request: Request<proto::UpdatePatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::UpdatePatientRequest { id, name, cpf, birth_date, email, phone } = request.into_inner();
        let id = PatientId::parse("id", &id)?;
        let changes = PatientChanges::parse(
            name.as_deref(),
            cpf.as_deref(),
            birth_date.as_deref(),
            email.as_deref(),
            phone.as_deref(),
        )?;
        if changes.is_empty() {
            return Err(aigronova_platform::Error::invalid(
                "body",
                "names no field to change: send one or more of name, cpf, birthDate, email, phone",
            )
            .into());
        }
        let sent = changes.fields();
        let may_read = caller.has_scope(READ_SCOPE);
        let events =
            |patient: &Patient, changed: &[&'static str]| update_events(&caller, patient, &sent, changed, may_read);
        let new_cpf = changes.cpf.clone();
        let updated = self.store.update_patient(&caller.tenant_id, &id, changes, events).await;
        if let Some(cpf) = new_cpf.filter(|_| cpf_taken(&updated)) {
            self.record_cpf_disclosure(&caller, "health.UpdatePatient", &cpf, &id).await;
        }
        let (patient, reports) = updated?;
        self.outbox.wake();
        // Reports print the patient's header: they are made again on their next request. The
        // change is made: a failure here is logged, not answered, and the sweep tries again.
        if let Some(reports) = reports {
            self.delete_reports(&caller.tenant_id, &reports).await;
        }
        // A caller who may not read patients sees only what it sent.
        let shown = if may_read { PERSONAL_FIELDS } else { sent.as_slice() };
        Ok(Response::new(showing_only(patient.into(), shown)))
    }

    async fn delete_patient(
        &self,
        request: Request<proto::DeletePatientRequest>,
    ) -> Result<Response<proto::DeletePatientResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = PatientId::parse("id", &request.get_ref().id)?;
        let event = |deleted: &Deleted| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::PersonalDataChange,
                "health.DeletePatient",
                &format!("patient:{id}"),
                // A patient with assessments is erased, the assessments kept.
                serde_json::json!({
                    "patient": if deleted.assessments.is_empty() { "deleted" } else { "erased" },
                    "deleted": {"images": deleted.images.len()},
                    "kept": {"assessments": deleted.assessments.len()},
                }),
            )
        };
        let deleted = self.store.delete_patient(&caller.tenant_id, &id, event).await?;
        self.delete_reports(&caller.tenant_id, &deleted.assessments).await;
        self.delete_image_objects(&caller.tenant_id, &deleted.images).await;
        self.outbox.wake();
        // As after an erasure: the deleted rows' older copies do not stay in the embedded log.
        self.store.truncate_log_soon();
        tracing::info!(tenant = %caller.tenant_id, patient = %id, "patient deleted");
        Ok(Response::new(proto::DeletePatientResponse { retained: retained_assessments(&deleted.assessments) }))
    }

    async fn assess_risk(
        &self,
        request: Request<proto::AssessRiskRequest>,
    ) -> Result<Response<proto::Assessment>, Status> {
        let caller = auth::caller(&request)?.clone();
        let request = AssessmentRequest::try_from(request.into_inner())?;
        let model = self.models.get(&request.model)?;
        let started = Instant::now();
        let input = ModelInput::validate(model.clone(), request.features).inspect_err(|_| {
            self.monitor.record(&caller.tenant_id, &model, None, started.elapsed(), false);
        })?;
        let row = input.row().to_vec();
        let started = Instant::now();
        let assessed = assessment::assess(request.patient_id, input);
        let latency = started.elapsed();
        let assessment =
            assessed.inspect_err(|_| self.monitor.record(&caller.tenant_id, &model, Some(&row), latency, false))?;
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::Decision,
            "health.AssessRisk",
            &format!("patient:{}", assessment.patient_id),
            serde_json::json!({
                "assessmentId": assessment.id,
                "model": assessment.model,
                "modelVersion": assessment.model_version,
                "inputDigest": audit::input_digest(&cipher, &assessment.features),
                "output": {"value": assessment.output, "riskBand": assessment.risk_band},
                "latencyMs": latency.as_secs_f64() * 1000.0,
            }),
        )
        .with_event_id(&assessment.id);
        // Stored, and then counted, on a task of its own: a caller that stops waiting does not
        // leave an assessment stored and not counted, nor one half done. An assessment refused
        // for its patient (unknown, another tenant's) is no use of the model.
        let (store, monitor, tenant_id) = (self.store.clone(), self.monitor.clone(), caller.tenant_id.clone());
        let stored = tokio::spawn(async move {
            store.insert_assessment(&tenant_id, &cipher, &assessment, &event).await?;
            monitor.record(&tenant_id, &model, Some(&row), latency, true);
            Ok::<_, aigronova_platform::Error>(assessment)
        });
        let assessment = stored.await.map_err(|error| aigronova_platform::error::internal(&error))??;
        self.outbox.wake();
        tracing::info!(
            tenant = %caller.tenant_id,
            assessment = %assessment.id,
            model = %assessment.model,
            version = %assessment.model_version,
            "risk assessed"
        );
        Ok(Response::new(assessment.into()))
    }

    async fn list_assessments(
        &self,
        request: Request<proto::ListAssessmentsRequest>,
    ) -> Result<Response<proto::ListAssessmentsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::ListAssessmentsRequest { patient_id, page_size, page_token } = request.into_inner();
        let patient_id = PatientId::parse("patientId", &patient_id)?;
        let page_size = aigronova_platform::grpc::page_size(page_size)?;
        let event = |assessments: &[Assessment]| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                "health.ListAssessments",
                &format!("patient:{patient_id}"),
                serde_json::json!({
                    "assessmentIds": assessments.iter().map(|assessment| assessment.id.as_str()).collect::<Vec<_>>(),
                }),
            )
        };
        let page_token = page_token_of(&page_token);
        let page = self.store.list_assessments(&caller.tenant_id, &patient_id, page_size, page_token, event).await?;
        self.outbox.wake();
        Ok(Response::new(proto::ListAssessmentsResponse {
            assessments: page.assessments.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_assessment(
        &self,
        request: Request<proto::GetAssessmentRequest>,
    ) -> Result<Response<proto::Assessment>, Status> {
        let caller = auth::caller(&request)?.clone();
        let patient_id = PatientId::parse("patientId", &request.get_ref().patient_id)?;
        let id = PatientId::parse("id", &request.get_ref().id)?.to_string();
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::SensitiveRead,
            "health.GetAssessment",
            &format!("patient:{patient_id}"),
            serde_json::json!({"assessmentId": id}),
        );
        let assessment = self.store.read_assessment(&caller.tenant_id, &patient_id, &id, event).await?;
        self.outbox.wake();
        Ok(Response::new(assessment.into()))
    }

    async fn get_assessment_report(
        &self,
        request: Request<proto::GetAssessmentReportRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let caller = auth::caller(&request)?.clone();
        let patient_id = PatientId::parse("patientId", &request.get_ref().patient_id)?;
        let id = PatientId::parse("id", &request.get_ref().id)?.to_string();
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::SensitiveRead,
            "health.GetAssessmentReport",
            &format!("patient:{patient_id}"),
            serde_json::json!({"assessmentId": id, "fields": ["name", "cpf", "birthDate"]}),
        );
        let (patient, assessment) = self.store.report_data(&caller.tenant_id, &patient_id, &id).await?;
        let key = report_key(&caller.tenant_id, &id);
        // Sealed for the patient as read: a report made before a change does not open for a
        // reader after it, who makes it again (as one kept before reports were sealed).
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let version = time::stored(patient.updated_at.unwrap_or(patient.created_at));
        // The layout's tag too: a report kept by an earlier layout (one that printed the card of
        // the version served rather than of the one that scored it) does not open, and is made again.
        let context = format!("{key}#{version}#{REPORT_LAYOUT}");
        let kept = self.objects.get(&key).await?.filter(|stored| stored.starts_with(crypto::SEALED_OBJECT));
        let (pdf, made) = match kept.and_then(|stored| cipher.open_bytes(&context, stored).ok()) {
            Some(pdf) => (pdf, false),
            None => {
                // The model card of the version that scored it, when this deployment still has it.
                let model = self.models.get(&assessment.model).ok();
                let manifest = model
                    .as_deref()
                    .map(|model| model.manifest())
                    .filter(|manifest| manifest.version == assessment.model_version);
                let pdf = crate::report::render(&patient, &assessment, manifest);
                self.objects.put(&key, cipher.seal_bytes(&context, &pdf)).await?;
                (pdf, true)
            }
        };
        // Audited once the report is in hand, and only while it shows what is stored: a change,
        // deletion or erasure of the patient committed since the read deletes the reports it finds
        // after committing, which may be before this one was kept: then this one goes too, so that
        // no report outlives what it shows, and the caller asks again.
        let current = self.store.report_current(&caller.tenant_id, &patient, &id, Some(&event)).await;
        if !current.as_ref().is_ok_and(|current| *current) && made {
            self.delete_reports(&caller.tenant_id, std::slice::from_ref(&id)).await;
        }
        if !current? {
            return Err(aigronova_platform::Error::Refused(Box::new(Status::aborted(
                "the patient or the assessment changed while the report was being made: ask for it again",
            )))
            .into());
        }
        self.outbox.wake();
        Ok(Response::new(HttpBody { content_type: "application/pdf".into(), data: pdf, extensions: Vec::new() }))
    }

    async fn upload_image(
        &self,
        request: Request<proto::UploadImageRequest>,
    ) -> Result<Response<proto::Image>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::UploadImageRequest { patient_id, body } = request.into_inner();
        let patient_id = PatientId::parse("patientId", &patient_id)?;
        let HttpBody { content_type, data: bytes, .. } = body.unwrap_or_default();
        if bytes.is_empty() {
            return Err(aigronova_platform::Error::invalid("body", "send the image's bytes as the request body").into());
        }
        imaging::recognise(&bytes, imaging::declared_type(&content_type)?)?;
        self.store.patient_exists(&caller.tenant_id, &patient_id).await?;
        let permit = imaging::examination_slot(&imaging::EXAMINATIONS, imaging::EXAMINATION_WAIT).await?;
        let (bytes, examined) = tokio::task::spawn_blocking(move || {
            let examined = imaging::examine(&bytes);
            drop(permit);
            (bytes, examined)
        })
        .await
        .map_err(|error| aigronova_platform::error::internal(&error))?;
        let examined = examined?;
        let record = ImageRecord {
            id: uuid::Uuid::now_v7().to_string(),
            patient_id: patient_id.to_string(),
            media_type: examined.media_type.as_str().to_owned(),
            size_bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            sha256: {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(&bytes))
            },
            width: i64::from(examined.width),
            height: i64::from(examined.height),
            has_thumbnail: examined.thumbnail.is_some(),
            created_at: time::stored(Utc::now()),
        };
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::PersonalDataChange,
            "health.UploadImage",
            &format!("patient:{patient_id}"),
            serde_json::json!({"imageId": record.id, "mediaType": record.media_type, "sizeBytes": record.size_bytes}),
        );
        // On a task of its own, so that it finishes, or cleans up after itself, when the caller
        // stops waiting: no object is left without its record.
        let api = self.clone();
        let tenant_id = caller.tenant_id.clone();
        let stored = tokio::spawn(async move {
            let kept = api.keep_image(&tenant_id, &record, &bytes, examined.thumbnail.as_deref(), &event).await;
            kept.map(|()| record)
        });
        let record = stored.await.map_err(|error| aigronova_platform::error::internal(&error))??;
        self.outbox.wake();
        Ok(Response::new(image_message(record)))
    }

    async fn list_images(
        &self,
        request: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::ListImagesRequest { patient_id, page_size, page_token } = request.into_inner();
        let patient_id = PatientId::parse("patientId", &patient_id)?;
        let page_size = aigronova_platform::grpc::page_size(page_size)?;
        // What a patient's images are (their types, sizes and dates) is health data too.
        let event = |images: &[ImageRecord]| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                "health.ListImages",
                &format!("patient:{patient_id}"),
                serde_json::json!({"imageIds": images.iter().map(|image| image.id.as_str()).collect::<Vec<_>>()}),
            )
        };
        let page =
            self.store.images(&caller.tenant_id, &patient_id, page_size, page_token_of(&page_token), event).await?;
        self.outbox.wake();
        Ok(Response::new(proto::ListImagesResponse {
            images: page.images.into_iter().map(image_message).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_image(&self, request: Request<proto::GetImageRequest>) -> Result<Response<HttpBody>, Status> {
        self.image_object(request, false).await
    }

    async fn get_image_thumbnail(
        &self,
        request: Request<proto::GetImageRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        self.image_object(request, true).await
    }

    async fn delete_image(
        &self,
        request: Request<proto::GetImageRequest>,
    ) -> Result<Response<proto::DeleteImageResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let patient_id = PatientId::parse("patientId", &request.get_ref().patient_id)?;
        let id = PatientId::parse("id", &request.get_ref().id)?.to_string();
        let image = self.store.image(&caller.tenant_id, &patient_id, &id, None, |_| Ok(())).await?;
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::PersonalDataChange,
            "health.DeleteImage",
            &format!("patient:{patient_id}"),
            serde_json::json!({"imageId": image.id}),
        );
        self.store.delete_image(&caller.tenant_id, &image.id, &event).await?;
        self.delete_image_objects(&caller.tenant_id, std::slice::from_ref(&image.id)).await;
        self.outbox.wake();
        Ok(Response::new(proto::DeleteImageResponse {}))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        auth::caller(&request)?;
        Ok(Response::new(proto::ListModelsResponse { models: self.models.cards() }))
    }
}

impl TryFrom<proto::CreatePatientRequest> for NewPatient {
    type Error = aigronova_platform::Error;

    fn try_from(request: proto::CreatePatientRequest) -> Result<Self, Self::Error> {
        Self::parse(&request.name, &request.cpf, &request.birth_date, &request.email, &request.phone)
    }
}

impl TryFrom<proto::AssessRiskRequest> for AssessmentRequest {
    type Error = aigronova_platform::Error;

    fn try_from(request: proto::AssessRiskRequest) -> Result<Self, Self::Error> {
        Self::parse(&request.patient_id, &request.model, request.features)
    }
}

impl From<Patient> for proto::Patient {
    fn from(patient: Patient) -> Self {
        Self {
            id: patient.id.to_string(),
            name: patient.name.as_str().to_owned(),
            cpf: patient.cpf.as_str().to_owned(),
            birth_date: patient.birth_date.to_string(),
            create_time: Some(time::to_proto(patient.created_at)),
            email: patient.email.as_ref().map(Email::as_str).unwrap_or_default().to_owned(),
            phone: patient.phone.as_ref().map(Phone::as_str).unwrap_or_default().to_owned(),
            update_time: patient.updated_at.map(time::to_proto),
        }
    }
}

/// A list's `pageToken`: none when not given (a blank one is no token, and is refused).
fn page_token_of(page_token: &str) -> Option<&str> {
    Some(page_token).filter(|token| !token.is_empty())
}

impl From<Assessment> for proto::Assessment {
    fn from(assessment: Assessment) -> Self {
        Self {
            id: assessment.id,
            patient_id: assessment.patient_id.to_string(),
            model: assessment.model,
            model_version: assessment.model_version,
            probability: (!assessment.regression).then_some(assessment.output),
            value: assessment.output,
            top_features: assessment
                .top_features
                .into_iter()
                .map(|(feature, contribution)| proto::FeatureContribution { feature, contribution })
                .collect(),
            risk_band: assessment.risk_band,
            create_time: Some(time::to_proto(assessment.created_at)),
            features: assessment.features.into_iter().collect(),
        }
    }
}

/// What a deletion or an erasure that kept `assessments` says it kept: assessments are what the
/// law keeps, so a patient without any leaves nothing retained.
fn retained_assessments(assessments: &[String]) -> Vec<common::RetainedRecord> {
    if assessments.is_empty() {
        return Vec::new();
    }
    vec![common::RetainedRecord {
        kind: "assessments".into(),
        reason: "clinical records are kept for 20 years (Lei 13.787/2018, art. 6; LGPD Art. 16 I), no longer linked \
                 to a name, CPF or birth date"
            .into(),
    }]
}

/// The name prefix of a patient list, without the spaces before it; refused when no name could
/// start with it (longer than a name, or with characters a name may not hold), rather than
/// answered with an empty list.
fn name_prefix_filter(prefix: &str) -> Result<&str, aigronova_platform::Error> {
    let refused = |reason: String| aigronova_platform::Error::invalid("namePrefix", reason);
    // Sent but blank selects nothing a name starts with, as a blank `cpf` is no CPF.
    if !prefix.is_empty() && prefix.trim().is_empty() {
        return Err(refused("is blank: send the start of a name, or leave namePrefix out".to_owned()));
    }
    // Wherever it is, a tab or a line break is no part of a name, at the ends as much as within.
    if prefix.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
        return Err(refused("must not contain control characters, which no name holds".to_owned()));
    }
    let prefix = prefix.trim_start();
    // Spaces at its end end a word: not counted.
    let words = prefix.trim_end();
    if words.chars().count() > PatientName::MAX_CHARS {
        return Err(refused(format!("must be at most {} characters, as a name is", PatientName::MAX_CHARS)));
    }
    if words.chars().any(aigronova_platform::text::is_bidi_control) {
        return Err(refused("must not contain bidirectional overrides, which no name holds".to_owned()));
    }
    // Names are searched without their accents and invisible characters: a prefix of nothing else
    // (a lone accent, a zero-width space) would select every patient rather than the ones meant.
    if !words.is_empty() && crate::patient::searchable(words).is_empty() {
        return Err(refused(
            "holds only accents or invisible characters, which names are searched without: send a letter or digit"
                .to_owned(),
        ));
    }
    Ok(prefix)
}

/// The common `DataSubject` service: export and erasure for a CPF, called by ai-governance with
/// a service token for the requester's tenant.
#[tonic::async_trait]
impl DataSubject for HealthQuantumApi {
    async fn export_subject(
        &self,
        request: Request<common::ExportSubjectRequest>,
    ) -> Result<Response<common::ExportSubjectResponse>, Status> {
        let caller = auth::service_caller(&request, SUBJECT_SCOPE)?;
        let common::ExportSubjectRequest { cpf, request_id } = request.into_inner();
        let cpf = Cpf::parse(&cpf)?;
        let event = |ids: &[String]| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                "health.ExportSubject",
                &subject_of(ids),
                serde_json::json!({"subjectRequest": request_id, "patients": ids.len()}),
            )
        };
        let data = self.store.export_subject(&caller.tenant_id, &cpf, event).await?;
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
        let event = |erased: &Erased| {
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::PersonalDataChange,
                "health.EraseSubject",
                &subject_of(&erased.patients),
                serde_json::json!({
                    "subjectRequest": request_id,
                    "patients": erased.patients.len(),
                    "images": erased.images.len(),
                }),
            )
        };
        let erased = self.store.erase_subject(&caller.tenant_id, &cpf, event).await?;
        self.outbox.wake();
        self.delete_reports(&caller.tenant_id, &erased.assessments).await;
        self.delete_image_objects(&caller.tenant_id, &erased.images).await;
        self.store.truncate_log_soon();
        tracing::info!(tenant = %caller.tenant_id, patients = erased.patients.len(), "data subject erased");
        Ok(Response::new(common::EraseSubjectResponse {
            service: crate::SERVICE_NAME.to_owned(),
            erased_records: i64::try_from(erased.patients.len()).unwrap_or(i64::MAX),
            retained: retained_assessments(&erased.assessments),
        }))
    }
}

impl HealthQuantumApi {
    /// A page of the tenant's patients, audited as `action`: ListPatients with its filter in the
    /// query, SearchPatients with it in the body.
    async fn patients_page(
        &self,
        request: Request<proto::ListPatientsRequest>,
        action: &'static str,
    ) -> Result<Response<proto::ListPatientsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::ListPatientsRequest { name_prefix, cpf, page_size, page_token } = request.into_inner();
        let page_size = aigronova_platform::grpc::page_size(page_size)?;
        let filter = PatientFilter {
            // A space at the end is kept: it ends a word (`Ana ` finds Ana and Ana Paula, not Anabela).
            name_prefix: Some(name_prefix_filter(&name_prefix)?.to_owned()).filter(|prefix| !prefix.is_empty()),
            // Not given is no filter; blanks are a CPF that is none, not a filter dropped.
            cpf: match cpf.as_str() {
                "" => None,
                blank if blank.trim().is_empty() => {
                    return Err(aigronova_platform::Error::invalid(
                        "cpf",
                        "is blank: send the 11 digits of a CPF, or leave cpf out",
                    )
                    .into());
                }
                cpf => Some(Cpf::parse(cpf)?),
            },
        };
        let event = |patients: &[Patient]| {
            // The fields shown of any patient of the page, in the order a patient's are named.
            let held: Vec<Vec<&str>> = patients.iter().map(Patient::held_fields).collect();
            let fields: Vec<&str> = PERSONAL_FIELDS
                .iter()
                .copied()
                .filter(|field| held.iter().any(|fields| fields.contains(field)))
                .collect();
            AuditEvent::new(
                &caller,
                crate::SERVICE_NAME,
                EventKind::SensitiveRead,
                action,
                &patients.iter().map(|patient| format!("patient:{}", patient.id)).collect::<Vec<_>>().join(","),
                serde_json::json!({"fields": fields, "patients": patients.len()}),
            )
        };
        let page_token = page_token_of(&page_token);
        let page = self.store.list_patients(&caller.tenant_id, &filter, page_size, page_token, event).await?;
        self.outbox.wake();
        Ok(Response::new(proto::ListPatientsResponse {
            patients: page.patients.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    /// Stores `bytes` at `key` sealed with the tenant's data key: health data (Art. 11), and
    /// reports print the patient's name and birth date.
    /// Stores an image's sealed bytes and thumbnail, then its record with `event`: the bytes first,
    /// so that a record never points at a missing object; on any failure, the objects already
    /// written are deleted.
    async fn keep_image(
        &self,
        tenant_id: &str,
        record: &ImageRecord,
        bytes: &[u8],
        thumbnail: Option<&[u8]>,
        event: &AuditEvent,
    ) -> Result<(), Status> {
        let stored = async {
            self.put_sealed(tenant_id, &image_key(tenant_id, &record.id), bytes).await?;
            if let Some(thumbnail) = thumbnail {
                self.put_sealed(tenant_id, &thumbnail_key(tenant_id, &record.id), thumbnail).await?;
            }
            self.store.insert_image(tenant_id, record, event).await.map_err(Status::from)
        };
        let result = stored.await;
        if result.is_err() {
            self.delete_image_objects(tenant_id, std::slice::from_ref(&record.id)).await;
        }
        result
    }

    async fn put_sealed(&self, tenant_id: &str, key: &str, bytes: &[u8]) -> Result<(), Status> {
        let sealed = self.store.cipher(tenant_id).await?.seal_bytes(key, bytes);
        Ok(self.objects.put(key, sealed).await?)
    }

    /// The object at `key`, opened with the tenant's data key.
    async fn get_sealed(&self, tenant_id: &str, key: &str) -> Result<Option<Vec<u8>>, Status> {
        let Some(stored) = self.objects.get(key).await? else { return Ok(None) };
        let opened = self.store.cipher(tenant_id).await?.open_bytes(key, stored);
        opened.map(Some).map_err(|error| aigronova_platform::error::internal(&format!("object {key}: {error}")))
    }

    /// An image's bytes, or its thumbnail, audited as a read of health data.
    async fn image_object(
        &self,
        request: Request<proto::GetImageRequest>,
        thumbnail: bool,
    ) -> Result<Response<HttpBody>, Status> {
        let caller = auth::caller(&request)?.clone();
        let patient_id = PatientId::parse("patientId", &request.get_ref().patient_id)?;
        let id = PatientId::parse("id", &request.get_ref().id)?.to_string();
        let event = AuditEvent::new(
            &caller,
            crate::SERVICE_NAME,
            EventKind::SensitiveRead,
            if thumbnail { "health.GetImageThumbnail" } else { "health.GetImage" },
            &format!("patient:{patient_id}"),
            serde_json::json!({"imageId": id}),
        );
        let shown = |image: &ImageRecord| match thumbnail && !image.has_thumbnail {
            true => Err(aigronova_platform::Error::NotFound("thumbnail (only PNG and JPEG images have one)".into())),
            false => Ok(()),
        };
        let image = self.store.image(&caller.tenant_id, &patient_id, &id, None, shown).await?;
        let (key, content_type) = if thumbnail {
            (thumbnail_key(&caller.tenant_id, &image.id), "image/png".to_owned())
        } else {
            (image_key(&caller.tenant_id, &image.id), image.media_type)
        };
        let Some(data) = self.get_sealed(&caller.tenant_id, &key).await? else {
            // A deletion came between the record's read and the object's: the image is gone.
            self.store.image(&caller.tenant_id, &patient_id, &id, None, |_| Ok(())).await?;
            return Err(aigronova_platform::error::internal(&format!("image {} has no object at {key}", image.id)));
        };
        // Audited once the bytes are in hand and only while the image is still on record, before
        // they are sent: a read that shows nothing writes no event.
        self.store.image(&caller.tenant_id, &patient_id, &id, Some(&event), |_| Ok(())).await?;
        self.outbox.wake();
        Ok(Response::new(HttpBody { content_type, data, extensions: Vec::new() }))
    }
}

/// The audit subject of a data-subject operation: the patient ids, never the CPF.
fn subject_of(ids: &[String]) -> String {
    if ids.is_empty() {
        "patient:none".into()
    } else {
        ids.iter().map(|id| format!("patient:{id}")).collect::<Vec<_>>().join(",")
    }
}
