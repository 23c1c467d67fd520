//! Schema registry client (Confluent-compatible API) with a cache: each distinct schema is
//! registered once per subject per process, so producing an event never calls the registry.

use std::collections::HashMap;

use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};

use crate::config::RegistryConfig;
use crate::error::{retry, Code, Error, Result, IN_PLACE};

pub struct Registry {
    settings: SrSettings,
    url: String,
    auth: Option<(String, Option<String>)>,
    /// For the calls schema_registry_converter does not make (versions, compatibility).
    http: reqwest::Client,
    cache: HashMap<(String, String), u32>,
}

/// The client settings for a registry: its URL, basic authentication when configured, a
/// timeout. Every client of the registry (the pipeline, `validate`, `tail`) uses these.
pub fn settings(cfg: &RegistryConfig) -> Result<SrSettings> {
    let mut b = SrSettings::new_builder(cfg.url.clone());
    if let Some(user) = &cfg.username {
        b.set_basic_authorization(user, cfg.password.as_ref().map(|p| p.0.as_str()));
    }
    b.set_timeout(std::time::Duration::from_secs(30));
    b.build_with(http_builder()).map_err(|e| {
        Error::permanent(
            Code::Registry,
            format!("schema registry {}: bad settings: {e}", cfg.url),
        )
        .with_source(e)
    })
}

/// A client builder with the process's one TLS setup: building one loads the system's CA
/// certificates (8% of pgcdc's CPU in a 500,000-event `make bench` drain went to the two
/// clients of its registry), so it is built once and shared.
fn http_builder() -> reqwest::ClientBuilder {
    static TLS: std::sync::OnceLock<Option<native_tls::TlsConnector>> = std::sync::OnceLock::new();
    let builder = reqwest::Client::builder();
    match TLS.get_or_init(|| native_tls::TlsConnector::new().ok()) {
        Some(tls) => builder.tls_backend_preconfigured(tls.clone()),
        // reqwest builds its own then, and says what failed.
        None => builder,
    }
}

impl Registry {
    pub fn new(cfg: &RegistryConfig) -> Result<Self> {
        let http = http_builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| {
                Error::permanent(Code::Registry, format!("schema registry {}: {e}", cfg.url))
                    .with_source(e)
            })?;
        Ok(Registry {
            http,
            settings: settings(cfg)?,
            url: cfg.url.clone(),
            auth: cfg
                .username
                .clone()
                .map(|u| (u, cfg.password.as_ref().map(|p| p.0.clone()))),
            cache: HashMap::new(),
        })
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    pub async fn register(&mut self, subject: &str, schema: &str) -> Result<u32> {
        match self.try_register(subject, schema).await? {
            Ok(id) => Ok(id),
            Err(text) => Err(Error::permanent(Code::RegistryRefused, format!(
                "schema registry {}: subject {subject} refused the new schema as incompatible ({text}); \
                 the table's change is not compatible under the subject's compatibility level: \
                 relax it (PUT /config/{subject}) or use a new topic prefix",
                self.url
            ))),
        }
    }

    /// A request to `path` of the registry's API, with its credentials.
    fn call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, password.as_deref()),
            None => req,
        }
    }

    /// The version of schema `id` under `subject` (`GET /schemas/ids/{id}/versions`), or
    /// None when the registry lists no version of it under `subject`. A registry that does
    /// not answer is retried in place, then the error is the caller's.
    pub async fn version(&self, subject: &str, id: u32) -> Result<Option<u32>> {
        let path = format!("/schemas/ids/{id}/versions");
        let unavailable = |what: String| {
            Error::transient(
                Code::RegistryUnavailable,
                format!("schema registry {}: GET {path}: {what}", self.url),
            )
        };
        let body: serde_json::Value = retry(IN_PLACE, "reading a schema's version", || async {
            let resp = self
                .call(reqwest::Method::GET, &path)
                .send()
                .await
                .map_err(|e| unavailable(e.to_string()).with_source(e))?;
            match resp.status().as_u16() {
                404 => Ok(serde_json::Value::Null),
                200..=299 => resp
                    .json()
                    .await
                    .map_err(|e| unavailable(e.to_string()).with_source(e)),
                s => Err(unavailable(format!("HTTP {s}"))),
            }
        })
        .await?;
        Ok(body.as_array().and_then(|versions| {
            versions
                .iter()
                .find(|v| v["subject"] == subject)
                .and_then(|v| v["version"].as_u64())
                .map(|v| v as u32)
        }))
    }

    /// The id and schema of the newest version under `subject`
    /// (`GET /subjects/{subject}/versions/latest`), None when the subject has none.
    pub async fn latest(&self, subject: &str) -> Result<Option<(u32, serde_json::Value)>> {
        let path = format!("/subjects/{subject}/versions/latest");
        let (status, body) = self.json(reqwest::Method::GET, &path, None).await?;
        match status {
            404 => Ok(None),
            200..=299 => {
                let text = body["schema"].as_str().unwrap_or_default();
                let schema = serde_json::from_str(text)
                    .map_err(|e| self.unavailable(&path, format!("the schema is not JSON: {e}")))?;
                Ok(Some((body["id"].as_u64().unwrap_or(0) as u32, schema)))
            }
            s => Err(self.unavailable(&path, format!("HTTP {s}: {body}"))),
        }
    }

    /// The id of `schema` when it is registered under `subject` (`POST /subjects/{subject}`),
    /// else None.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>> {
        let path = format!("/subjects/{subject}");
        let body = serde_json::json!({ "schema": schema });
        let (status, answer) = self.json(reqwest::Method::POST, &path, Some(body)).await?;
        match status {
            200..=299 => Ok(answer["id"].as_u64().map(|i| i as u32)),
            404 => Ok(None),
            s => Err(self.unavailable(&path, format!("HTTP {s}: {answer}"))),
        }
    }

    /// A JSON request to the registry's API: the status and the JSON answer (null when
    /// there is none).
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut req = self.call(method, path);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unavailable(path, e.to_string()).with_source(e))?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) {
            return Err(Error::permanent(
                Code::RegistryAuth,
                format!(
                    "schema registry {}: HTTP {status} on {path}; set schema_registry.username and schema_registry.password",
                    self.url
                ),
            ));
        }
        Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
    }

    fn unavailable(&self, path: &str, what: String) -> Error {
        Error::transient(
            Code::RegistryUnavailable,
            format!("schema registry {}: {path}: {what}", self.url),
        )
    }

    /// The compatibility level that applies to `subject` (its own, else the registry's), or
    /// "(unknown)" when the registry does not say.
    async fn compatibility(&self, subject: &str) -> String {
        for path in [format!("/config/{subject}"), "/config".to_owned()] {
            let req = self.call(reqwest::Method::GET, &path);
            let Ok(resp) = req.send().await else { break };
            if !resp.status().is_success() {
                continue;
            }
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            if let Some(l) = body["compatibilityLevel"].as_str() {
                return l.to_owned();
            }
        }
        "(unknown)".to_owned()
    }

    /// Whether `subject`'s compatibility level accepts `schema` as its next version, checked
    /// as a registration would be (`POST /compatibility/subjects/{subject}/versions`: every
    /// version a transitive level names; a registry without it is asked about the latest):
    /// None when it does (or the subject does not exist yet), else the registry's reason.
    pub async fn refuses(&self, subject: &str, schema: &str) -> Result<Option<String>> {
        let body = serde_json::json!({ "schema": schema });
        let mut answer = None;
        for path in [
            format!("/compatibility/subjects/{subject}/versions?verbose=true"),
            format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
        ] {
            let (status, a) = self
                .json(reqwest::Method::POST, &path, Some(body.clone()))
                .await?;
            // 404 with a registry error code: no such subject or version (the schema is the
            // first); without one: no such endpoint, ask the next.
            if status == 404 && a["error_code"].as_u64().is_none() {
                continue;
            }
            answer = Some((path, status, a));
            break;
        }
        let Some((path, status, body)) = answer else {
            return Err(self.unavailable(
                &format!("/compatibility/subjects/{subject}"),
                "the registry has no compatibility endpoint".to_owned(),
            ));
        };
        match status {
            200..=299 => {
                if body["is_compatible"].as_bool() == Some(true) {
                    return Ok(None);
                }
                let messages = body["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .filter(|m| !m.is_empty());
                let level = self.compatibility(subject).await;
                Ok(Some(messages.unwrap_or_else(|| {
                    format!("it is not compatible under the subject's compatibility level {level}")
                })))
            }
            404 => Ok(None),
            422 => Ok(Some(format!(
                "the registry refused the schema as invalid: {body}"
            ))),
            s => Err(self.unavailable(&path, format!("HTTP {s}: {body}"))),
        }
    }

    /// Registers `schema`, or gives the registry's reason when the subject's compatibility
    /// level refuses it (HTTP 409), so the caller can fall back to a compatible form.
    pub async fn try_register(
        &mut self,
        subject: &str,
        schema: &str,
    ) -> Result<std::result::Result<u32, String>> {
        let k = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.cache.get(&k) {
            return Ok(Ok(*id));
        }
        let url = &self.url;
        let settings = &self.settings;
        let posted = retry(IN_PLACE, "registering a schema", || async {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
            match post_schema(settings, subject.to_owned(), supplied).await {
                Ok(reg) => Ok(Ok(reg)),
                Err(e) => match refusal(url, subject, e) {
                    Refusal::Incompatible(text) => Ok(Err(text)),
                    Refusal::Error(e) => Err(e),
                },
            }
        })
        .await?;
        let reg = match posted {
            Ok(reg) => reg,
            Err(text) => return Ok(Err(text)),
        };
        tracing::info!(subject, id = reg.id, "registered schema");
        self.cache.insert(k, reg.id);
        Ok(Ok(reg.id))
    }
}

enum Refusal {
    /// The subject's compatibility level refuses the schema (error_code 409).
    Incompatible(String),
    Error(Error),
}

/// The registry's JSON `error_code`, when it sent one (Confluent: 409 incompatible, 42201
/// invalid schema, 40101 unauthorized; Apicurio's ccompat API the same).
fn error_code(e: &SRCError) -> Option<u32> {
    std::error::Error::source(e)?
        .downcast_ref::<RawError>()
        .map(|r| r.error_code)
        .filter(|&c| c != 0)
}

/// Classifies a failed registration by the registry's answer, not its wording.
fn refusal(url: &str, subject: &str, e: SRCError) -> Refusal {
    let text = format!("schema registry {url}: registering subject {subject}: {e}");
    let code = error_code(&e);
    let family = code.map(|c| if c >= 1000 { c / 100 } else { c });
    let err = match family {
        Some(409) => return Refusal::Incompatible(e.to_string()),
        Some(422) => Error::permanent(
            Code::RegistryRefused,
            format!("{text}; the registry refused the schema as invalid"),
        ),
        Some(401 | 403) => Error::permanent(
            Code::RegistryAuth,
            format!("{text}; set schema_registry.username and schema_registry.password"),
        ),
        _ if e.retriable || is_connection(&e) => Error::transient(Code::RegistryUnavailable, text),
        _ => Error::permanent(Code::Registry, text),
    };
    Refusal::Error(err.with_source(e))
}

/// Whether the request never got an answer (refused, reset, timed out).
fn is_connection(e: &SRCError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<reqwest::Error>())
        .is_some_and(|r| r.is_connect() || r.is_timeout() || r.is_request())
}

/// Checks that the registry answers its Confluent-compatible API (`GET /subjects`).
pub async fn check(cfg: &RegistryConfig) -> Result<()> {
    Registry::new(cfg)?.check().await
}

impl Registry {
    /// Checks that the registry answers its Confluent-compatible API (`GET /subjects`), with
    /// this client (building one loads the system's CA certificates: tens of ms of CPU).
    pub async fn check(&self) -> Result<()> {
        let req = self.call(reqwest::Method::GET, "/subjects");
        let no_answer = |what: String| {
            Error::transient(
                Code::RegistryUnavailable,
                format!(
                    "schema registry {}: no answer from GET /subjects ({what}); check schema_registry.url (Apicurio: .../apis/ccompat/v7)",
                    self.url
                ),
            )
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(no_answer(e.to_string()).with_source(e)),
        };
        let status = resp.status();
        match status.as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err(Error::permanent(
                Code::RegistryAuth,
                format!(
                    "schema registry {}: refused the credentials (GET /subjects: HTTP {status}); set schema_registry.username and schema_registry.password",
                    self.url
                ),
            )),
            _ => Err(no_answer(format!("HTTP {status}"))),
        }
    }
}
