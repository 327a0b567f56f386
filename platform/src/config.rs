//! Layered configuration: defaults, then a TOML file, then `AIGRONOVA__SECTION__KEY`
//! environment variables. Every process loads its typed config through [`load`] and validates
//! it before it starts anything.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The prefix of configuration environment variables; `__` separates nesting levels, e.g.
/// `AIGRONOVA__GATEWAY__HTTP_ADDR=0.0.0.0:8080`.
pub const ENV_PREFIX: &str = "AIGRONOVA__";

/// `url` as a configuration error may quote it: a user name and password in it (`redis://:secret@host`)
/// become `***`, and a query (`?password=…`, `?sslpassword=…`) is left out, since the error is
/// printed and logged.
pub fn redacted(url: &str) -> String {
    // Up to the last `@`, wherever it is: a password may hold `/`, `?` or `#`, and an error
    // message that hides a little more loses nothing. An `@` after the first `?` or `#` may be
    // the query's own (`?user=app@corp&password=…`): then all after the scheme is hidden.
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let query = url[start..].find(['?', '#']).map(|at| start + at);
    match (url[start..].rfind('@').map(|at| start + at), query) {
        (Some(at), Some(query)) if at > query => format!("{}***", &url[..start]),
        (Some(at), _) => {
            let rest = &url[at..];
            match rest.find(['?', '#']) {
                Some(cut) => format!("{}***{}?***", &url[..start], &rest[..cut]),
                None => format!("{}***{rest}", &url[..start]),
            }
        }
        (None, Some(query)) => format!("{}?***", &url[..query]),
        (None, None) => url.to_owned(),
    }
}

/// Checks that `url`, the value of the setting `field`, is a plaintext `http://` URL with a host,
/// as the services' gRPC clients speak (inside the cluster; a service mesh adds TLS): an
/// `https://` one would be spoken to in plaintext all the same, so it is refused.
pub fn plaintext_grpc_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let host = url.strip_prefix("http://").map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(ConfigError(format!(
            "{field} must be a plaintext http:// URL with a host (gRPC inside the cluster is spoken without TLS; \
             a service mesh adds it), got {:?}",
            redacted(url)
        ))),
    }
}

/// A configuration that is wrong; the process refuses to start (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Each error as `section.key: what is wrong (in the file or the environment)`, the key as it is
/// written in a TOML file.
impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        let messages: Vec<String> = error
            .into_iter()
            .map(|error| {
                let key = error.path.iter().map(|part| part.to_lowercase()).collect::<Vec<_>>().join(".");
                let origin = match &error.metadata {
                    Some(metadata) => match &metadata.source {
                        Some(source) => format!(" (in {source} {})", metadata.name),
                        None => format!(" (in {})", metadata.name),
                    },
                    None => String::new(),
                };
                if key.is_empty() {
                    format!("{}{origin}", error.kind)
                } else {
                    format!("{key}: {}{origin}", error.kind)
                }
            })
            .collect();
        Self(messages.join("; "))
    }
}

/// A configuration section that can check itself.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from its defaults, the optional TOML `file`, then the environment, and validates it.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError(format!("config file {} does not exist", file.display())));
        }
        // A directory (a mounted ConfigMap, say) would read as no file at all: the defaults.
        if !file.is_file() {
            return Err(ConfigError(format!(
                "config file {} is not a file: name the TOML file itself",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file(file));
    }
    let config: T = figment.merge(Env::prefixed(ENV_PREFIX).split("__")).extract()?;
    config.validate()?;
    Ok(config)
}

/// Where a service finds its models and the ONNX Runtime library.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Folder holding `<name>/<version>/{model.onnx,manifest.json}`.
    pub models_dir: PathBuf,
    /// Path of `libonnxruntime.so` (1.31 or newer). Empty: the `ORT_DYLIB_PATH` variable.
    pub ort_dylib_path: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one inference call.
    pub intra_threads: usize,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { models_dir: PathBuf::from("models"), ort_dylib_path: None, intra_threads: 1 }
    }
}

impl Validate for InferenceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.intra_threads == 0 {
            return Err(ConfigError("inference.intra_threads must be at least 1".into()));
        }
        Ok(())
    }
}

/// Logs and traces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A `tracing` filter, e.g. `info` or `aigronova_gateway=debug,info`.
    pub log_filter: String,
    /// `json` (one JSON object a line) or `pretty`.
    pub log_format: LogFormat,
    /// OTLP gRPC endpoint of the trace collector (e.g. Jaeger's `http://jaeger:4317`); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Where a domain service run with `aigronova serve` answers `GET /metrics` (Prometheus text,
    /// plain HTTP, e.g. `0.0.0.0:9464`); unset: nowhere. The gateway serves its own `/metrics`.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info,sqlx::postgres::notice=warn".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            metrics_addr: None,
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "telemetry.otlp_endpoint must be an http:// or https:// URL, got {:?}",
                redacted(endpoint)
            )));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map_err(|error| ConfigError(format!("telemetry.log_filter: {error}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_quoted_without_its_credentials() {
        let cases = [
            ("redis://:secret@127.0.0.1:6379", "redis://***@127.0.0.1:6379"),
            ("http://user:secret@host/path", "http://***@host/path"),
            ("ftp://u:p@ss@h?q=1", "ftp://***@h?***"),
            ("postgresql://h/db?password=secret&sslmode=require", "postgresql://h/db?***"),
            ("postgres://h/db#secret", "postgres://h/db?***"),
            ("postgresql://db/app?user=app@corp&password=hunter2", "postgresql://***"),
            // A `#` before the `@` may be a password's or a fragment's: all is hidden.
            ("redis://:p#ss@h", "redis://***"),
            ("http://u:a/b@h", "http://***@h"),
            ("user:secret@host", "***@host"),
            ("http://127.0.0.1:50061", "http://127.0.0.1:50061"),
            ("", ""),
        ];
        for (url, expected) in cases {
            assert_eq!(redacted(url), expected);
        }
    }

    #[test]
    fn a_grpc_url_of_the_services_is_plaintext_http_with_a_host() {
        for good in ["http://ai-governance:50070", "http://127.0.0.1:50061/", "http://h"] {
            assert!(plaintext_grpc_url("audit.governance_url", good).is_ok(), "{good}");
        }
        for bad in ["https://ai-governance:50070", "ai-governance:50070", "http://", "http:///x", "grpc://h:1"] {
            let error = plaintext_grpc_url("audit.governance_url", bad).unwrap_err().to_string();
            assert!(error.contains("audit.governance_url must be a plaintext http:// URL"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_as_a_file_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aigronova.toml");
        std::fs::write(&file, "intra_threads = \"x\"\n").unwrap();
        let error = load::<InferenceConfig>(Some(&file)).unwrap_err().to_string();
        assert!(error.starts_with("invalid configuration: intra_threads: invalid type: found string \"x\""), "{error}");
        assert!(error.contains("aigronova.toml"), "{error}");
        assert!(!error.contains("default."), "{error}");
    }
}
