//! HealthQuantum over real gRPC: each test starts the service on `127.0.0.1:0` with a fresh
//! database, calls it with the generated client and a token minted like the gateway's, and runs
//! once on SQLite and once on PostgreSQL.
//!
//! PostgreSQL comes from `AIGRONOVA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates and drops its own database
//! there. The model needs ONNX Runtime: set `ORT_DYLIB_PATH` to `libonnxruntime.so`.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use aigronova_healthquantum::{Config, HealthQuantumService};
use aigronova_platform::{
    Shutdown,
    auth::{self, Caller, TokenSigner},
    config::InferenceConfig,
    error::FIELD_METADATA_KEY,
    inference::{Manifest, read_manifest},
    storage::Database,
};
use aigronova_proto::aigronova::health::v1::{
    AssessRiskRequest, Assessment, CreatePatientRequest, GetPatientRequest, ListPatientsRequest, Patient,
    UpdatePatientRequest, health_quantum_client::HealthQuantumClient,
};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Status, transport::Channel};

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TENANT_A: &str = "tenant-a";
const TENANT_B: &str = "tenant-b";
const MODEL: &str = "breast-cancer";
const READ_WRITE: &[&str] = &["health:read", "health:write"];
const WRITE_ONLY: &[&str] = &["health:write"];

#[derive(Clone, Copy, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

/// Runs each listed test once per engine, as `sqlite::<test>` and `postgres::<test>`.
macro_rules! on_both_engines {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Engine::Sqlite).await;
            })+
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Engine::Postgres).await;
            })+
        }
    };
}

on_both_engines!(
    a_call_without_a_token_is_unauthenticated,
    a_call_with_a_token_signed_by_another_key_is_unauthenticated,
    a_created_patient_reads_back_the_same,
    a_tenant_cannot_read_or_assess_another_tenants_patient,
    an_unknown_patient_is_not_found,
    an_empty_or_malformed_patient_id_is_an_invalid_id,
    invalid_patient_fields_are_refused_by_name_and_nothing_is_stored,
    assessing_risk_returns_a_probability_the_model_version_and_a_risk_band,
    invalid_feature_vectors_are_refused_by_name_and_no_assessment_is_stored,
    an_empty_or_unknown_model_is_an_invalid_model,
    assessing_an_unknown_patient_is_not_found_and_nothing_is_stored,
    reading_a_patient_audits_exactly_the_fields_shown,
    an_update_shows_the_fields_it_did_not_set_only_to_a_caller_who_may_read_them,
    a_cpf_registered_in_the_tenant_is_refused_and_nothing_is_stored,
    two_registrations_of_one_cpf_at_once_store_one_patient,
);

async fn a_call_without_a_token_is_unauthenticated(engine: Engine) {
    let app = spawn_app(engine).await;
    let mut client = app.client.clone();

    let created = client.create_patient(Request::new(maria())).await;
    let read = client.get_patient(Request::new(GetPatientRequest { id: uuid::Uuid::now_v7().to_string() })).await;

    assert_eq!(created.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(read.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(app.count("patients").await, 0);
    app.stop().await;
}

async fn a_call_with_a_token_signed_by_another_key_is_unauthenticated(engine: Engine) {
    let app = spawn_app(engine).await;
    let mut request = Request::new(maria());
    auth::attach_token(request.metadata_mut(), &TokenSigner::generate().mint(&caller(TENANT_A)));

    let error = app.client.clone().create_patient(request).await.unwrap_err();

    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(app.count("patients").await, 0);
    app.stop().await;
}

async fn a_created_patient_reads_back_the_same(engine: Engine) {
    let app = spawn_app(engine).await;

    let created = app.create_patient(TENANT_A, maria()).await.unwrap();
    let read = app.get_patient(TENANT_A, &created.id).await.unwrap();

    assert_eq!(read, created);
    assert!(uuid::Uuid::parse_str(&created.id).is_ok());
    assert_eq!(created.name, "Maria da Silva");
    assert_eq!(created.cpf, "12345678909");
    assert_eq!(created.birth_date, "1980-02-29");
    let created_at = created.create_time.expect("create_time is set");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - created_at.seconds).abs() < 60, "create_time {created_at:?} is now");
    app.stop().await;
}

async fn a_tenant_cannot_read_or_assess_another_tenants_patient(engine: Engine) {
    let app = spawn_app(engine).await;
    let patient = app.create_patient(TENANT_B, maria()).await.unwrap();

    let read = app.get_patient(TENANT_A, &patient.id).await;
    let assessed = app.assess_risk(TENANT_A, &patient.id, MODEL, app.valid_features()).await;

    assert_eq!(read.unwrap_err().code(), Code::NotFound);
    assert_eq!(assessed.unwrap_err().code(), Code::NotFound);
    assert_eq!(app.get_patient(TENANT_B, &patient.id).await.unwrap(), patient);
    assert_eq!(app.count("assessments").await, 0);
    app.stop().await;
}

async fn an_unknown_patient_is_not_found(engine: Engine) {
    let app = spawn_app(engine).await;

    let error = app.get_patient(TENANT_A, &uuid::Uuid::now_v7().to_string()).await.unwrap_err();

    assert_eq!(error.code(), Code::NotFound);
    app.stop().await;
}

async fn an_empty_or_malformed_patient_id_is_an_invalid_id(engine: Engine) {
    let app = spawn_app(engine).await;

    for id in ["", "   ", "42", "not-a-uuid", "'; DROP TABLE patients; --"] {
        let error = app.get_patient(TENANT_A, id).await.unwrap_err();
        assert_invalid(&error, "id", id);
    }
    app.stop().await;
}

async fn invalid_patient_fields_are_refused_by_name_and_nothing_is_stored(engine: Engine) {
    let app = spawn_app(engine).await;
    let with = |edit: fn(&mut CreatePatientRequest)| {
        let mut request = maria();
        edit(&mut request);
        request
    };
    let cases = [
        ("an empty name", with(|r| r.name = "  ".into()), "name"),
        ("a name of 201 characters", with(|r| r.name = "a".repeat(201)), "name"),
        ("a name with a control character", with(|r| r.name = "Maria\u{7}".into()), "name"),
        ("an empty CPF", with(|r| r.cpf = String::new()), "cpf"),
        ("a CPF with a wrong check digit", with(|r| r.cpf = "123.456.789-08".into()), "cpf"),
        ("a CPF of one repeated digit", with(|r| r.cpf = "11111111111".into()), "cpf"),
        ("a CPF of 10 digits", with(|r| r.cpf = "1234567890".into()), "cpf"),
        ("an empty birth date", with(|r| r.birth_date = String::new()), "birthDate"),
        ("the 29th of February of a common year", with(|r| r.birth_date = "1981-02-29".into()), "birthDate"),
        ("a birth date in the future", with(|r| r.birth_date = "2999-01-01".into()), "birthDate"),
        ("a birth date before 1900", with(|r| r.birth_date = "1899-12-31".into()), "birthDate"),
        ("a Brazilian-style date", with(|r| r.birth_date = "29/02/1980".into()), "birthDate"),
    ];

    for (case, request, field) in cases {
        let error = app.create_patient(TENANT_A, request).await.unwrap_err();
        assert_invalid(&error, field, case);
    }
    assert_eq!(app.count("patients").await, 0);
    app.stop().await;
}

async fn assessing_risk_returns_a_probability_the_model_version_and_a_risk_band(engine: Engine) {
    let app = spawn_app(engine).await;
    let patient = app.create_patient(TENANT_A, maria()).await.unwrap();

    let assessment = app.assess_risk(TENANT_A, &patient.id, MODEL, app.valid_features()).await.unwrap();

    assert!(uuid::Uuid::parse_str(&assessment.id).is_ok());
    assert_eq!(assessment.patient_id, patient.id);
    assert_eq!(assessment.model, MODEL);
    assert_eq!(assessment.model_version, "1");
    let probability = assessment.probability.expect("a classifier's probability");
    assert!((0.0..=1.0).contains(&probability), "probability {probability}");
    let expected_band = app
        .manifest
        .risk_bands
        .iter()
        .find(|band| probability < band.upper)
        .or(app.manifest.risk_bands.last())
        .map(|band| band.name.as_str());
    assert_eq!(Some(assessment.risk_band.as_str()), expected_band);
    assert!(["low", "moderate", "high"].contains(&assessment.risk_band.as_str()));
    assert!(assessment.create_time.is_some());

    let (tenant, version, features): (String, String, String) =
        sqlx::query_as("SELECT tenant_id, model_version, features FROM assessments WHERE id = $1")
            .bind(assessment.id.as_str())
            .fetch_one(app.database.pool())
            .await
            .unwrap();
    assert_eq!((tenant.as_str(), version.as_str()), (TENANT_A, "1"));
    // The inputs are health data: sealed, no feature's name in clear.
    assert!(features.starts_with("v1:"), "sealed: {features}");
    for name in app.valid_features().keys() {
        assert!(!features.contains(name.as_str()), "{name:?} in clear: {features}");
    }
    app.stop().await;
}

async fn invalid_feature_vectors_are_refused_by_name_and_no_assessment_is_stored(engine: Engine) {
    let app = spawn_app(engine).await;
    let patient = app.create_patient(TENANT_A, maria()).await.unwrap();
    let feature = |index: usize| app.manifest.features[index].clone();
    let (above, below) = (feature(3), feature(4));
    let cases = [
        ("a missing feature", Edit::Remove(feature(0).name)),
        ("an extra feature", Edit::Set("shoe size".into(), 42.0)),
        ("NaN", Edit::Set(feature(1).name, f64::NAN)),
        ("infinity", Edit::Set(feature(2).name, f64::INFINITY)),
        ("minus infinity", Edit::Set(feature(2).name, f64::NEG_INFINITY)),
        ("a value above the range", Edit::Set(above.name, above.max + 1.0)),
        ("a value below the range", Edit::Set(below.name, below.min - 1.0)),
    ];

    for (case, edit) in cases {
        let mut features = app.valid_features();
        let field = format!("features.{}", edit.apply(&mut features));
        let error = app.assess_risk(TENANT_A, &patient.id, MODEL, features).await.unwrap_err();
        assert_invalid(&error, &field, case);
    }
    assert_eq!(app.count("assessments").await, 0);
    app.stop().await;
}

async fn an_empty_or_unknown_model_is_an_invalid_model(engine: Engine) {
    let app = spawn_app(engine).await;
    let patient = app.create_patient(TENANT_A, maria()).await.unwrap();

    for model in ["", "  ", "diabetes", "breast-cancer/../x"] {
        let error = app.assess_risk(TENANT_A, &patient.id, model, app.valid_features()).await.unwrap_err();
        assert_invalid(&error, "model", model);
    }
    assert_eq!(app.count("assessments").await, 0);
    app.stop().await;
}

async fn assessing_an_unknown_patient_is_not_found_and_nothing_is_stored(engine: Engine) {
    let app = spawn_app(engine).await;

    let unknown = app.assess_risk(TENANT_A, &uuid::Uuid::now_v7().to_string(), MODEL, app.valid_features()).await;
    let malformed = app.assess_risk(TENANT_A, "nope", MODEL, app.valid_features()).await;

    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    assert_invalid(&malformed.unwrap_err(), "patientId", "a malformed patient id");
    assert_eq!(app.count("assessments").await, 0);
    app.stop().await;
}

async fn reading_a_patient_audits_exactly_the_fields_shown(engine: Engine) {
    let app = spawn_app(engine).await;
    let reachable =
        CreatePatientRequest { email: "maria@exemplo.com.br".into(), phone: "+55 11 91234-5678".into(), ..maria() };
    let with_contacts = app.create_patient(TENANT_A, reachable).await.unwrap();
    let without = CreatePatientRequest { name: "João Lima".into(), cpf: "529.982.247-25".into(), ..maria() };
    let without = app.create_patient(TENANT_A, without).await.unwrap();

    for (patient, expected) in [
        (&with_contacts, json!(["name", "cpf", "birthDate", "email", "phone"])),
        (&without, json!(["name", "cpf", "birthDate"])),
    ] {
        let shown = app.get_patient(TENANT_A, &patient.id).await.unwrap();
        let reads = app.audit_events("sensitive_read", "health.GetPatient", &patient.id).await;
        assert_eq!(reads.len(), 1, "{reads:?}");
        assert_eq!(reads[0]["details"]["fields"], expected, "the fields of {shown:?}");
    }

    // A page names the fields shown of any of its patients.
    for (name_prefix, expected) in
        [("João", json!(["name", "cpf", "birthDate"])), ("", json!(["name", "cpf", "birthDate", "email", "phone"]))]
    {
        let message = ListPatientsRequest { name_prefix: name_prefix.into(), ..ListPatientsRequest::default() };
        let page = app.client.clone().list_patients(app.request(TENANT_A, message)).await.unwrap().into_inner();
        let listed = page.patients.iter().map(|patient| format!("patient:{}", patient.id)).collect::<Vec<_>>();
        let read = app
            .outbox_events()
            .await
            .into_iter()
            .filter(|event| event["action"] == "health.ListPatients")
            .find(|event| event["subject"] == listed.join(","))
            .unwrap_or_else(|| panic!("no read of {listed:?} audited"));
        assert_eq!(read["details"]["fields"], expected, "a page of {listed:?}");
    }
    app.stop().await;
}

async fn an_update_shows_the_fields_it_did_not_set_only_to_a_caller_who_may_read_them(engine: Engine) {
    let app = spawn_app(engine).await;
    let reachable =
        CreatePatientRequest { email: "maria@exemplo.com.br".into(), phone: "+55 11 91234-5678".into(), ..maria() };
    let created = app.create_patient(TENANT_A, reachable).await.unwrap();
    let change = |edit: fn(&mut UpdatePatientRequest)| {
        let mut request = UpdatePatientRequest { id: created.id.clone(), ..UpdatePatientRequest::default() };
        edit(&mut request);
        request
    };

    // A caller who may only write sees what it sent, and nothing else.
    let cleared = app.update_patient_as(TENANT_A, WRITE_ONLY, change(|r| r.email = Some(String::new()))).await.unwrap();
    let personal = |patient: &Patient| {
        [
            patient.name.clone(),
            patient.cpf.clone(),
            patient.birth_date.clone(),
            patient.email.clone(),
            patient.phone.clone(),
        ]
    };
    assert_eq!(personal(&cleared), ["", "", "", "", ""].map(String::from));
    assert_eq!(cleared.id, created.id);
    assert!(cleared.update_time.is_some());
    let renamed = app.update_patient_as(TENANT_A, WRITE_ONLY, change(|r| r.name = Some(" Maria Souza ".into()))).await;
    assert_eq!(personal(&renamed.unwrap()), ["Maria Souza", "", "", "", ""].map(String::from));
    assert_eq!(app.audit_events("sensitive_read", "health.UpdatePatient", &created.id).await, Vec::<Value>::new());

    // A caller who may read sees the whole record, and that read is audited with the change.
    let phoned = change(|r| r.phone = Some("+55 11 3333-4444".into()));
    let shown = app.update_patient_as(TENANT_A, READ_WRITE, phoned).await.unwrap();
    assert_eq!(
        personal(&shown),
        ["Maria Souza", "12345678909", "1980-02-29", "", "+55 11 3333-4444"].map(String::from)
    );
    let reads = app.audit_events("sensitive_read", "health.UpdatePatient", &created.id).await;
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0]["details"]["fields"], json!(["name", "cpf", "birthDate"]), "what the caller did not send");
    let changes = app.audit_events("personal_data_change", "health.UpdatePatient", &created.id).await;
    let changed: Vec<&Value> = changes.iter().map(|event| &event["details"]["fields"]).collect();
    assert_eq!(changed, [&json!(["email"]), &json!(["name"]), &json!(["phone"])]);
    app.stop().await;
}

async fn a_cpf_registered_in_the_tenant_is_refused_and_nothing_is_stored(engine: Engine) {
    let app = spawn_app(engine).await;
    let registered = app.create_patient(TENANT_A, maria()).await.unwrap();

    let twin = CreatePatientRequest { name: "Maria Souza".into(), cpf: "12345678909".into(), ..maria() };
    let error = app.create_patient(TENANT_A, twin.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    assert_eq!(error.message(), "cpf: a patient with this CPF is already registered");
    assert_eq!(error.metadata().get(aigronova_platform::error::FIELD_METADATA_KEY).unwrap(), "cpf");
    assert!(!error.message().contains(&registered.id), "the other patient is not named");
    assert_eq!(app.count("patients").await, 1);
    // Another tenant has a register of its own.
    app.create_patient(TENANT_B, twin).await.unwrap();

    // A change to the CPF of another patient is refused, with every other change it carries.
    let joao = CreatePatientRequest { name: "João Lima".into(), cpf: "529.982.247-25".into(), ..maria() };
    let joao = app.create_patient(TENANT_A, joao).await.unwrap();
    let taking = UpdatePatientRequest {
        id: joao.id.clone(),
        name: Some("João Lima Neto".into()),
        cpf: Some("123.456.789-09".into()),
        ..UpdatePatientRequest::default()
    };
    let error = app.update_patient_as(TENANT_A, READ_WRITE, taking).await.unwrap_err();
    assert_eq!(
        (error.code(), error.message()),
        (Code::AlreadyExists, "cpf: a patient with this CPF is already registered")
    );
    assert_eq!(app.count("audit_outbox").await, 5, "three registrations, and the two refusals' reads");
    // Each refusal told that the person with that CPF is a patient: a read of the registered one.
    for action in ["health.CreatePatient", "health.UpdatePatient"] {
        let reads = app.audit_events("sensitive_read", action, &registered.id).await;
        assert_eq!(reads.len(), 1, "{action}: {reads:?}");
        assert_eq!(reads[0]["details"], json!({"refused": "cpf already registered", "fields": ["cpf"]}));
    }
    assert_eq!(app.get_patient(TENANT_A, &joao.id).await.unwrap(), joao, "unchanged");
    app.stop().await;
}

async fn two_registrations_of_one_cpf_at_once_store_one_patient(engine: Engine) {
    let app = spawn_app(engine).await;
    let cpfs = ["111.222.333-96", "222.333.444-05", "333.444.555-08", "444.555.666-19", "987.654.321-00"];

    for cpf in cpfs {
        let request = || CreatePatientRequest { cpf: cpf.into(), ..maria() };
        let (first, second) =
            tokio::join!(app.create_patient(TENANT_A, request()), app.create_patient(TENANT_A, request()));
        let code = |result: Result<Patient, Status>| result.map_or_else(|status| status.code(), |_| Code::Ok);
        let codes = (code(first), code(second));
        assert!(matches!(codes, (Code::Ok, Code::AlreadyExists) | (Code::AlreadyExists, Code::Ok)), "{cpf}: {codes:?}");
    }
    assert_eq!(app.count("patients").await, i64::try_from(cpfs.len()).unwrap());
    app.stop().await;
}

/// A change to a valid feature vector.
enum Edit {
    Remove(String),
    Set(String, f64),
}

impl Edit {
    /// Applies the change and returns the name of the feature it touched.
    fn apply(self, features: &mut HashMap<String, f64>) -> String {
        match self {
            Self::Remove(name) => {
                features.remove(&name);
                name
            }
            Self::Set(name, value) => {
                features.insert(name.clone(), value);
                name
            }
        }
    }
}

/// A running service and what a test needs to call and inspect it.
struct TestApp {
    client: HealthQuantumClient<Channel>,
    signer: TokenSigner,
    database: Database,
    manifest: Manifest,
    shutdown: Shutdown,
    server: JoinHandle<anyhow::Result<()>>,
    postgres: Option<TestDatabase>,
    _data_dir: tempfile::TempDir,
}

async fn spawn_app(engine: Engine) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let postgres = match engine {
        Engine::Sqlite => None,
        Engine::Postgres => Some(TestDatabase::create().await),
    };
    let database_url = match &postgres {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}", data_dir.path().join("healthquantum.db").display()),
    };
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        database_url,
        master_key: None,
        master_key_file: data_dir.path().join("master.key"),
        objects_url: format!("file://{}", data_dir.path().join("objects").display()),
    };
    let models_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let manifest = read_manifest(&models_dir.join(MODEL).join("1")).unwrap();
    let inference = InferenceConfig { models_dir, ort_dylib_path: None, intra_threads: 1 };
    let signer = TokenSigner::generate();

    let service = HealthQuantumService::build(&config, &inference, signer.verifier(), Default::default())
        .await
        .unwrap_or_else(|error| panic!("the service builds (is ORT_DYLIB_PATH set?): {error:#}"));
    let addr = service.local_addr();
    let database = service.database().clone();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let client = HealthQuantumClient::new(channel);

    TestApp { client, signer, database, manifest, shutdown, server, postgres, _data_dir: data_dir }
}

impl TestApp {
    fn request<T>(&self, tenant: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        auth::attach_token(request.metadata_mut(), &self.signer.mint(&caller(tenant)));
        request
    }

    /// A request of a caller of `tenant` holding `scopes`.
    fn request_as<T>(&self, tenant: &str, scopes: &[&str], message: T) -> Request<T> {
        let caller = Caller { scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(), ..caller(tenant) };
        let mut request = Request::new(message);
        auth::attach_token(request.metadata_mut(), &self.signer.mint(&caller));
        request
    }

    async fn update_patient_as(
        &self,
        tenant: &str,
        scopes: &[&str],
        message: UpdatePatientRequest,
    ) -> Result<Patient, Status> {
        Ok(self.client.clone().update_patient(self.request_as(tenant, scopes, message)).await?.into_inner())
    }

    /// The audit events of `kind` and `action` about the patient `id`, oldest first. No relay
    /// runs here: every event the service wrote waits in its outbox.
    /// Every event waiting in the outbox, oldest first.
    async fn outbox_events(&self) -> Vec<Value> {
        let stored: Vec<String> = sqlx::query_scalar("SELECT event FROM audit_outbox ORDER BY created_at, event_id")
            .fetch_all(self.database.pool())
            .await
            .unwrap();
        stored.iter().map(|event| serde_json::from_str::<Value>(event).unwrap()).collect()
    }

    async fn audit_events(&self, kind: &str, action: &str, id: &str) -> Vec<Value> {
        self.outbox_events()
            .await
            .into_iter()
            .filter(|event| event["kind"] == kind && event["action"] == action)
            .filter(|event| event["subject"] == format!("patient:{id}"))
            .collect()
    }

    async fn create_patient(&self, tenant: &str, message: CreatePatientRequest) -> Result<Patient, Status> {
        let response = self.client.clone().create_patient(self.request(tenant, message)).await?;
        Ok(response.into_inner())
    }

    async fn get_patient(&self, tenant: &str, id: &str) -> Result<Patient, Status> {
        let message = GetPatientRequest { id: id.into() };
        Ok(self.client.clone().get_patient(self.request(tenant, message)).await?.into_inner())
    }

    async fn assess_risk(
        &self,
        tenant: &str,
        patient_id: &str,
        model: &str,
        features: HashMap<String, f64>,
    ) -> Result<Assessment, Status> {
        let message = AssessRiskRequest { patient_id: patient_id.into(), model: model.into(), features };
        Ok(self.client.clone().assess_risk(self.request(tenant, message)).await?.into_inner())
    }

    /// Every feature of the model at its training mean.
    fn valid_features(&self) -> HashMap<String, f64> {
        self.manifest.features.iter().map(|feature| (feature.name.clone(), feature.training_mean)).collect()
    }

    /// The rows of `table`, all tenants included.
    async fn count(&self, table: &'static str) -> i64 {
        let sql = match table {
            "patients" => "SELECT COUNT(*) FROM patients",
            "assessments" => "SELECT COUNT(*) FROM assessments",
            "audit_outbox" => "SELECT COUNT(*) FROM audit_outbox",
            other => panic!("no table {other}"),
        };
        sqlx::query_scalar(sql).fetch_one(self.database.pool()).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.server).await.expect("the server stops").unwrap().unwrap();
        if let Some(database) = self.postgres {
            database.drop().await;
        }
    }
}

/// A PostgreSQL database made for one test.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("AIGRONOVA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let name = format!("hq_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&admin_url).await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url }
    }

    async fn drop(mut self) {
        let mut admin = admin_connection(&self.admin_url).await;
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        self.name.clear();
    }
}

/// A test that fails before dropping its database drops it here, from a thread of its own (this
/// may run inside the test's runtime, unwinding from a panic).
impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), std::mem::take(&mut self.name));
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await.ok()
            })
        });
        if !matches!(dropped.join(), Ok(Some(_))) {
            eprintln!("the test's PostgreSQL database was not dropped");
        }
    }
}

async fn admin_connection(admin_url: &str) -> PgConnection {
    let connecting = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(admin_url)).await;
    match connecting {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => postgres_unreachable(admin_url, &error),
        Err(elapsed) => postgres_unreachable(admin_url, &elapsed),
    }
}

fn postgres_unreachable(admin_url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "PostgreSQL is unreachable at {admin_url} ({error}). Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
         or point AIGRONOVA_TEST_POSTGRES_URL at a server where this user may create databases."
    )
}

/// `url` with its database replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let server = match base[authority_start..].find('/') {
        Some(path_start) => &base[..authority_start + path_start],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

fn caller(tenant: &str) -> Caller {
    Caller {
        tenant_id: tenant.into(),
        subject: "test-key".into(),
        scopes: vec!["health:read".into(), "health:write".into()],
    }
}

fn maria() -> CreatePatientRequest {
    CreatePatientRequest {
        name: "  Maria da Silva ".into(),
        cpf: "123.456.789-09".into(),
        birth_date: "1980-02-29".into(),
        ..CreatePatientRequest::default()
    }
}

/// `error` is `invalid_argument` about `field`, in its message and its field metadata.
fn assert_invalid(error: &Status, field: &str, case: &str) {
    assert_eq!(error.code(), Code::InvalidArgument, "{case}: {error:?}");
    assert!(error.message().starts_with(&format!("{field}: ")), "{case}: {:?}", error.message());
    let named = error.metadata().get(FIELD_METADATA_KEY).map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(named.as_deref(), Some(field), "{case}");
}
