//! Calls to the platform's services straight over gRPC, past the gateway, with an internal token
//! as the gateway would mint: the reference for what the gateway adds.

use std::{future::Future, pin::Pin, sync::Arc};

use aigronova_e2e::TestApp;
use aigronova_platform::auth::{Caller, TokenSigner, attach_token};
use aigronova_proto::aigronova::governance::v1::{GetPublicKeyRequest, audit_log_client::AuditLogClient};
use tonic::transport::Channel;

use crate::common::repeat;

/// The internal signing key the platform of a benchmark runs with, so that the benchmark can mint
/// tokens its services accept.
pub(crate) struct Internal {
    signing_key: String,
}

impl Internal {
    pub(crate) fn new() -> Self {
        Self { signing_key: TokenSigner::generate().to_base64() }
    }

    /// Makes the platform sign and verify internal tokens with this key.
    pub(crate) fn configure(&self, config: &mut aigronova_cli::AppConfig) {
        config.internal_auth.signing_key = Some(self.signing_key.clone());
        config.internal_auth.verifying_key = None;
    }

    /// Tokens for `tenant` with `scopes`, minted and renewed as the gateway's are.
    pub(crate) fn tokens(&self, tenant: &str, scopes: &[&str]) -> Tokens {
        let signer = TokenSigner::from_base64(&self.signing_key).expect("the benchmark's signing key");
        let caller = Caller {
            tenant_id: tenant.to_owned(),
            subject: "bench".into(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        };
        Tokens(Arc::new((signer, caller)))
    }
}

/// One caller's internal tokens: the same token while it is fresh, a new one before it expires,
/// so that runs longer than a token's lifetime keep being accepted.
#[derive(Clone)]
pub(crate) struct Tokens(Arc<(TokenSigner, Caller)>);

impl Tokens {
    /// `message` with the caller's current token in its metadata.
    pub(crate) fn sign<T>(&self, message: T) -> tonic::Request<T> {
        let (signer, caller) = &*self.0;
        let mut request = tonic::Request::new(message);
        attach_token(request.metadata_mut(), &signer.mint_reusable(caller));
        request
    }
}

/// A connection to `service`'s gRPC port.
pub(crate) async fn connect(app: &TestApp, service: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr(service)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub(crate) type Call = Pin<Box<dyn Future<Output = bool> + Send>>;

/// `AuditLog.GetPublicKey` straight to ai-governance: the trivial RPC of the gateway's cost.
pub(crate) async fn get_public_key(app: &TestApp, tokens: Tokens) -> impl Fn() -> Call + Clone + Send + Sync + 'static {
    let client = AuditLogClient::new(connect(app, aigronova_ai_governance::SERVICE_NAME).await);
    move || {
        let mut client = client.clone();
        let request = tokens.sign(GetPublicKeyRequest::default());
        Box::pin(async move { client.get_public_key(request).await.is_ok() })
    }
}

/// The public path of `AuditLog.GetPublicKey`.
pub(crate) const GET_PUBLIC_KEY_PATH: &str = "/v1/governance/audit/public-key";

/// A GET of `url` through the gateway with API key `key`, its answer read whole.
pub(crate) fn gateway_get(
    client: reqwest::Client,
    url: &str,
    key: &Arc<String>,
) -> impl Fn() -> Call + Clone + Send + Sync + 'static + use<> {
    repeat(client, url, Some(key.as_str()), None)
}
