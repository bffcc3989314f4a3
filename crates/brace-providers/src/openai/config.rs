//! [`OpenAiConfig`]: a client configuration and the OpenAI flavour it speaks.

use serde::Deserialize;

use crate::provider::{ApiKey, ClientConfig};

/// OpenAI's API base URL (the version included, as the official SDKs expect).
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The environment variable [`OpenAiConfig::openai_from_env`] reads the key from.
pub const OPENAI_API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The environment variable [`OpenAiConfig::azure_from_env`] reads the key from.
pub const AZURE_API_KEY_ENV: &str = "AZURE_OPENAI_API_KEY";
/// The Azure OpenAI `api-version` used when none is configured (the latest GA version).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

fn default_api_version() -> String {
    DEFAULT_AZURE_API_VERSION.to_owned()
}

/// Which OpenAI-style API a server speaks.
///
/// In a configuration file it is the `api` field next to the client's fields:
/// `api: openai` (with optional `organization`, `project`), `api: azure` (with optional
/// `api_version`), or `api: compatible`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "api", rename_all = "snake_case")]
pub enum OpenAiApi {
    /// OpenAI itself: `POST {base}/chat/completions`, `Authorization: Bearer KEY`, and the
    /// `OpenAI-Organization` / `OpenAI-Project` headers when set.
    #[serde(rename = "openai")]
    OpenAi {
        /// Sent as `OpenAI-Organization`.
        #[serde(default)]
        organization: Option<String>,
        /// Sent as `OpenAI-Project`.
        #[serde(default)]
        project: Option<String>,
    },
    /// Azure OpenAI: `POST {endpoint}/openai/deployments/{deployment}/chat/completions?
    /// api-version=…`, the key in `api-key`. The deployment is the provider model the
    /// requested one resolves to ([`ClientConfig::resolve_model`]).
    Azure {
        /// The `api-version` query parameter.
        #[serde(default = "default_api_version")]
        api_version: String,
    },
    /// An OpenAI-compatible server (Ollama, llama.cpp, vLLM, LM Studio):
    /// `POST {base}/chat/completions`, `Authorization: Bearer KEY` only if a key is set.
    Compatible,
}

impl Default for OpenAiApi {
    fn default() -> Self {
        Self::OpenAi {
            organization: None,
            project: None,
        }
    }
}

/// How to reach one OpenAI-style provider.
///
/// ```
/// use brace_providers::openai::{OpenAiApi, OpenAiConfig};
///
/// let config: OpenAiConfig = serde_json::from_str(r#"{
///     "name": "azure-east",
///     "api": "azure",
///     "api_version": "2024-10-21",
///     "base_url": "https://east.openai.azure.com",
///     "api_key_env": "AZURE_OPENAI_API_KEY",
///     "models": {"gpt-4o": "gpt4o-prod"},
///     "timeout": "30s"
/// }"#).unwrap();
/// assert_eq!(config.api, OpenAiApi::Azure { api_version: "2024-10-21".into() });
/// assert_eq!(config.client.resolve_model("gpt-4o"), "gpt4o-prod");
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "ConfigFile")]
pub struct OpenAiConfig {
    /// Name, base URL, key, models, timeouts, extra headers.
    pub client: ClientConfig,
    /// The flavour of the API (`api` in a file; `openai` if absent).
    pub api: OpenAiApi,
}

/// What a configuration file holds: the client's fields and the flavour's, side by side.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(flatten)]
    client: ClientConfig,
    #[serde(default)]
    api: ApiName,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default = "default_api_version")]
    api_version: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum ApiName {
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    Azure,
    Compatible,
}

impl From<ConfigFile> for OpenAiConfig {
    fn from(file: ConfigFile) -> Self {
        let api = match file.api {
            ApiName::OpenAi => OpenAiApi::OpenAi {
                organization: file.organization,
                project: file.project,
            },
            ApiName::Azure => OpenAiApi::Azure {
                api_version: file.api_version,
            },
            ApiName::Compatible => OpenAiApi::Compatible,
        };
        Self::new(file.client, api)
    }
}

impl OpenAiConfig {
    /// A configuration from its parts.
    pub fn new(client: ClientConfig, api: OpenAiApi) -> Self {
        Self { client, api }
    }

    /// OpenAI with `key`: provider `openai` at [`DEFAULT_BASE_URL`].
    pub fn openai(key: ApiKey) -> Self {
        Self::new(
            ClientConfig::new("openai", DEFAULT_BASE_URL).with_api_key(key),
            OpenAiApi::default(),
        )
    }

    /// OpenAI with the key read from [`OPENAI_API_KEY_ENV`] when the client is built.
    pub fn openai_from_env() -> Self {
        Self::new(
            ClientConfig::new("openai", DEFAULT_BASE_URL).with_api_key_env(OPENAI_API_KEY_ENV),
            OpenAiApi::default(),
        )
    }

    /// Azure OpenAI at `endpoint` (`https://NAME.openai.azure.com`), provider
    /// `azure-openai`. Map requested models to deployments with
    /// [`ClientConfig::with_model`] (or set a default deployment with
    /// [`ClientConfig::with_default_model`]).
    pub fn azure(endpoint: impl Into<String>, key: ApiKey, api_version: impl Into<String>) -> Self {
        Self::new(
            ClientConfig::new("azure-openai", endpoint).with_api_key(key),
            OpenAiApi::Azure {
                api_version: api_version.into(),
            },
        )
    }

    /// Azure OpenAI with the key read from [`AZURE_API_KEY_ENV`] when the client is built,
    /// and [`DEFAULT_AZURE_API_VERSION`].
    pub fn azure_from_env(endpoint: impl Into<String>) -> Self {
        Self::new(
            ClientConfig::new("azure-openai", endpoint).with_api_key_env(AZURE_API_KEY_ENV),
            OpenAiApi::Azure {
                api_version: default_api_version(),
            },
        )
    }

    /// An OpenAI-compatible server called `name` at `base_url` (such as
    /// `http://127.0.0.1:11434/v1` for Ollama), with no key (add one with
    /// [`ClientConfig::with_api_key`] if the server wants it).
    pub fn compatible(name: impl Into<std::sync::Arc<str>>, base_url: impl Into<String>) -> Self {
        Self::new(ClientConfig::new(name, base_url), OpenAiApi::Compatible)
    }

    /// Sets the `OpenAI-Organization` header (OpenAI only; ignored by the other flavours).
    #[must_use]
    pub fn with_organization(mut self, organization: impl Into<String>) -> Self {
        if let OpenAiApi::OpenAi {
            organization: slot, ..
        } = &mut self.api
        {
            *slot = Some(organization.into());
        }
        self
    }

    /// Sets the `OpenAI-Project` header (OpenAI only; ignored by the other flavours).
    #[must_use]
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        if let OpenAiApi::OpenAi { project: slot, .. } = &mut self.api {
            *slot = Some(project.into());
        }
        self
    }

    /// Changes the client part (`|c| c.with_timeout(…)`).
    #[must_use]
    pub fn map_client(mut self, f: impl FnOnce(ClientConfig) -> ClientConfig) -> Self {
        self.client = f(self.client);
        self
    }
}
