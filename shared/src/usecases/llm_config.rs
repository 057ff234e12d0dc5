//! LLM configs: validating and saving one (admins' requests and start-up share these), and
//! the `PARLEY_LLM_*` quick-start config.

use crate::auth::Keys;
use crate::domain::{FieldErrors, check_line, check_text};
use crate::error::StoreError;
use crate::ids::LlmConfigId;
use crate::llm::{HostPolicy, Provider};
use crate::store::llm_configs::{self, ConfigFields, LlmConfig};
use crate::{Config, Db, crypto};
use serde::{Deserialize, Deserializer};

/// The context window of a config that does not say.
pub const DEFAULT_CONTEXT_WINDOW: i64 = 8192;

/// A config to create, or the fields to change (an admin's PATCH): an absent field stays
/// as it is, and `null` clears a nullable one (`api_key: null` removes the key). Its `Debug`
/// output hides the key.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConfigRequest)]
pub struct ConfigChanges {
    /// 1 to 100 characters, not blank, one line.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// `openai`, `openai_compatible` or `anthropic`.
    #[schema(pattern = r"^(openai|openai_compatible|anthropic)$")]
    pub provider: Option<String>,
    /// The provider's model name: 1 to 200 characters, not blank, one line.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub model: Option<String>,
    /// The API root, `http://` or `https://` (required for `openai_compatible`); never a
    /// link-local or cloud-metadata address, nor a private one when
    /// `PARLEY_LLM_ALLOW_PRIVATE_HOSTS=false`. `null` or blank: the provider's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = r"^\s*(https?://\S+)?\s*$")]
    pub base_url: Option<Option<String>>,
    /// In clear text; stored sealed, never answered.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, write_only)]
    pub api_key: Option<Option<String>>,
    /// 0 to 2 (0 to 1 for `anthropic`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 2)]
    pub temperature: Option<Option<f64>>,
    /// 1 to 1,000,000 completion tokens.
    #[serde(default, deserialize_with = "crate::domain::numbers::present_integer")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000)]
    pub max_tokens: Option<Option<i64>>,
    /// 256 to 10,000,000 tokens.
    #[serde(default, deserialize_with = "crate::domain::numbers::optional_integer")]
    #[schema(minimum = 256, maximum = 10000000)]
    pub context_window: Option<i64>,
    /// Line breaks and tabs, no other control characters.
    #[schema(pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub system_prompt: Option<String>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
}

/// A config to create: as [`ConfigChanges`], with `name`, `provider` and `model` required.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewConfigRequest)]
pub struct NewConfig {
    /// 1 to 100 characters, not blank, one line.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// `openai`, `openai_compatible` or `anthropic`.
    #[schema(pattern = r"^(openai|openai_compatible|anthropic)$")]
    pub provider: String,
    /// The provider's model name: 1 to 200 characters, not blank, one line.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub model: String,
    /// The API root, `http://` or `https://` (required for `openai_compatible`); never a
    /// link-local or cloud-metadata address, nor a private one when
    /// `PARLEY_LLM_ALLOW_PRIVATE_HOSTS=false`. `null` or blank: the provider's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = r"^\s*(https?://\S+)?\s*$")]
    pub base_url: Option<Option<String>>,
    /// In clear text; stored sealed, never answered.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, write_only)]
    pub api_key: Option<Option<String>>,
    /// 0 to 2 (0 to 1 for `anthropic`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 2)]
    pub temperature: Option<Option<f64>>,
    /// 1 to 1,000,000 completion tokens.
    #[serde(default, deserialize_with = "crate::domain::numbers::present_integer")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000)]
    pub max_tokens: Option<Option<i64>>,
    /// 256 to 10,000,000 tokens.
    #[serde(default, deserialize_with = "crate::domain::numbers::optional_integer")]
    #[schema(minimum = 256, maximum = 10000000)]
    pub context_window: Option<i64>,
    /// Line breaks and tabs, no other control characters.
    #[schema(pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub system_prompt: Option<String>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
}

impl From<NewConfig> for ConfigChanges {
    fn from(c: NewConfig) -> Self {
        Self {
            name: Some(c.name),
            provider: Some(c.provider),
            model: Some(c.model),
            base_url: c.base_url,
            api_key: c.api_key,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            context_window: c.context_window,
            system_prompt: c.system_prompt,
            is_default: c.is_default,
            enabled: c.enabled,
        }
    }
}

/// A field that is present, `null` or not: `Some(None)` for `null`, `None` when absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl std::fmt::Debug for ConfigChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigChanges")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|k| k.as_ref().map(|_| "[redacted]")))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("context_window", &self.context_window)
            .field("system_prompt", &self.system_prompt)
            .field("is_default", &self.is_default)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// Why changes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Invalid(FieldErrors),
    #[error(transparent)]
    Other(anyhow::Error),
}

/// Applies `req` over `base` (the current config, or [`defaults`]) and validates the result.
/// `hosts` decides which base URLs are allowed.
pub fn merge(
    keys: &Keys,
    hosts: HostPolicy,
    base: ConfigFields,
    req: ConfigChanges,
) -> Result<ConfigFields, ConfigError> {
    let mut errors = FieldErrors::default();
    let mut f = base;
    // The stored key was given for one endpoint: it is not sent anywhere else unless the
    // admin gives it again.
    let endpoint_changed = req.base_url.as_ref().is_some_and(|u| u.as_deref() != f.base_url.as_deref())
        || req.provider.as_ref().is_some_and(|p| *p != f.provider);
    if endpoint_changed && req.api_key.is_none() {
        f.api_key_enc = None;
    }
    if let Some(name) = req.name {
        if name.chars().count() > 100 {
            errors.add("name", "must be 1 to 100 characters");
        }
        errors.check("name", check_line(&name));
        f.name = name.trim().to_owned();
    }
    if let Some(p) = req.provider {
        f.provider = p;
    }
    if let Some(m) = req.model {
        if m.chars().count() > 200 {
            errors.add("model", "must be at most 200 characters");
        }
        errors.check("model", check_line(&m));
        f.model = m.trim().to_owned();
    }
    if let Some(Some(url)) = &req.base_url {
        errors.check("base_url", check_line(url));
    }
    if let Some(url) = req.base_url {
        f.base_url = url.map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty());
    }
    if let Some(key) = req.api_key {
        f.api_key_enc = match key.filter(|k| !k.is_empty()) {
            Some(k) => Some(crypto::encrypt(&keys.encryption, &k).map_err(ConfigError::Other)?),
            None => None,
        };
    }
    if let Some(t) = req.temperature {
        f.temperature = t;
    }
    if let Some(t) = req.max_tokens {
        f.max_tokens = t;
    }
    if let Some(c) = req.context_window {
        f.context_window = c;
    }
    if let Some(s) = req.system_prompt {
        f.system_prompt = s;
    }
    if let Some(d) = req.is_default {
        f.is_default = d;
    }
    if let Some(e) = req.enabled {
        f.enabled = e;
    }
    if f.name.is_empty() {
        errors.add("name", "must be 1 to 100 characters");
    }
    match Provider::parse(&f.provider) {
        None => errors.add("provider", "must be openai, openai_compatible or anthropic"),
        Some(Provider::OpenaiCompatible) if f.base_url.is_none() => {
            errors.add("base_url", "is required for openai_compatible")
        }
        Some(_) => {}
    }
    if let Some(url) = &f.base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.add("base_url", "must be an http:// or https:// URL");
    } else if let Some(url) = &f.base_url
        && let Err(reason) = hosts.check_url(url)
    {
        errors.add("base_url", reason);
    }
    if f.model.is_empty() {
        errors.add("model", "is required");
    }
    errors.check("system_prompt", check_text(&f.system_prompt));
    // Anthropic's Messages API takes at most 1; OpenAI-style APIs at most 2.
    let max_temperature = if f.provider == "anthropic" { 1.0 } else { 2.0 };
    if f.temperature.is_some_and(|t| !(0.0..=max_temperature).contains(&t)) {
        errors.add("temperature", format!("must be between 0 and {max_temperature} for this provider"));
    }
    if f.max_tokens.is_some_and(|t| !(1..=1_000_000).contains(&t)) {
        errors.add("max_tokens", "must be between 1 and 1000000");
    }
    if !(256..=10_000_000).contains(&f.context_window) {
        errors.add("context_window", "must be between 256 and 10000000");
    }
    errors.finish().map_err(ConfigError::Invalid)?;
    Ok(f)
}

/// What a new config starts from.
pub fn defaults() -> ConfigFields {
    ConfigFields {
        name: String::new(),
        provider: String::new(),
        model: String::new(),
        base_url: None,
        api_key_enc: None,
        temperature: None,
        max_tokens: None,
        context_window: DEFAULT_CONTEXT_WINDOW,
        system_prompt: String::new(),
        is_default: false,
        enabled: true,
    }
}

/// Writes a config; a new default unsets the old one in the same transaction.
pub async fn save(db: &Db, id: Option<LlmConfigId>, fields: &ConfigFields) -> Result<LlmConfig, StoreError> {
    let mut tx = db.begin_write().await?;
    let config = match id {
        Some(id) => llm_configs::update(&mut *tx, id, fields).await?,
        None => llm_configs::insert(&mut *tx, fields).await?,
    };
    if config.is_default {
        llm_configs::clear_other_defaults(&mut *tx, config.id).await?;
    }
    tx.commit().await?;
    Ok(config)
}

/// Creates the `PARLEY_LLM_*` quick-start config (named "default") if it does not exist.
pub async fn bootstrap(db: &Db, keys: &Keys, config: &Config) -> anyhow::Result<()> {
    let Some(b) = &config.llm_bootstrap else { return Ok(()) };
    if llm_configs::by_name(&db.pool, "default").await?.is_some() {
        return Ok(());
    }
    let changes = ConfigChanges {
        name: Some("default".into()),
        provider: Some(b.provider.clone()),
        model: Some(b.model.clone()),
        base_url: Some(b.base_url.clone()),
        api_key: Some(b.api_key.as_ref().map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned())),
        is_default: Some(true),
        ..ConfigChanges::default()
    };
    let hosts = HostPolicy { allow_private: config.llm_allow_private_hosts };
    let fields = merge(keys, hosts, defaults(), changes).map_err(|e| anyhow::anyhow!("PARLEY_LLM_* settings: {e}"))?;
    match save(db, None, &fields).await {
        // Another process made it meanwhile.
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => anyhow::bail!("creating the default LLM config: {e}"),
    }
    tracing::info!(provider = %b.provider, model = %b.model, "default LLM config created");
    Ok(())
}
