//! Schema registry client (Confluent-compatible API) with a cache: each distinct schema is
//! registered once per subject per process, so producing an event never calls the registry.

use std::collections::HashMap;

use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::config::RegistryConfig;
use crate::error::{Error, Result};

pub struct Registry {
    settings: SrSettings,
    url: String,
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
    b.build()
        .map_err(|e| Error::permanent(format!("schema registry {}: bad settings: {e}", cfg.url)))
}

impl Registry {
    pub fn new(cfg: &RegistryConfig) -> Result<Self> {
        Ok(Registry {
            settings: settings(cfg)?,
            url: cfg.url.clone(),
            cache: HashMap::new(),
        })
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    pub async fn register(&mut self, subject: &str, schema: &str) -> Result<u32> {
        match self.try_register(subject, schema).await? {
            Ok(id) => Ok(id),
            Err(text) => Err(Error::permanent(format!(
                "schema registry {}: subject {subject} refused the new schema as incompatible ({text}); \
                 the table's change is not compatible under the subject's compatibility level: \
                 relax it (PUT /config/{subject}) or use a new topic prefix",
                self.url
            ))),
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
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        let reg = match post_schema(&self.settings, subject.to_owned(), supplied).await {
            Ok(reg) => reg,
            Err(e) => {
                let text = e.to_string();
                return if text.contains("409") || text.to_lowercase().contains("incompatible") {
                    Ok(Err(text))
                } else if e.retriable {
                    Err(Error::transient(format!(
                        "schema registry {}: registering subject {subject}: {text}",
                        self.url
                    )))
                } else {
                    Err(Error::permanent(format!(
                        "schema registry {}: registering subject {subject}: {text}",
                        self.url
                    )))
                };
            }
        };
        tracing::info!(subject, id = reg.id, "registered schema");
        self.cache.insert(k, reg.id);
        Ok(Ok(reg.id))
    }
}

/// Checks that the registry answers its Confluent-compatible API (`GET /subjects`).
pub async fn check(cfg: &RegistryConfig) -> Result<()> {
    let settings = settings(cfg)?;
    schema_registry_converter::async_impl::schema_registry::get_all_subjects(&settings)
        .await
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("401") || text.contains("403") {
                Error::permanent(format!(
                    "schema registry {}: refused the credentials (GET /subjects: {text}); set schema_registry.username and schema_registry.password",
                    cfg.url
                ))
            } else {
                Error::permanent(format!(
                    "schema registry {}: no answer from GET /subjects ({text}); check schema_registry.url (Apicurio: .../apis/ccompat/v7)",
                    cfg.url
                ))
            }
        })
}
