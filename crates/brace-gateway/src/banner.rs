//! The start-up banner: which configuration was loaded, what it serves, and a request to
//! try it with.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{GatewayConfig, ProviderKind};

/// Where the configuration came from.
#[derive(Debug, Clone, Copy)]
pub enum ConfigSource<'a> {
    /// A YAML file.
    File(&'a Path),
    /// The embedded demo configuration.
    Demo,
}

/// The banner printed when the gateway starts listening on `addr`: the configuration's
/// source, its providers (by priority) and routes, and [`curl_hint`].
pub fn banner(addr: SocketAddr, source: ConfigSource<'_>, config: &GatewayConfig) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "brace gateway listening on http://{addr}");
    match source {
        ConfigSource::File(path) => {
            let _ = writeln!(out, "config: {}", path.display());
        }
        ConfigSource::Demo => {
            let _ = writeln!(out, "config: embedded demo config: simulated providers");
        }
    }
    let mut providers: Vec<_> = config.providers.iter().collect();
    providers.sort_by_key(|provider| provider.priority);
    let _ = writeln!(out, "providers (by priority):");
    let width = providers
        .iter()
        .map(|provider| provider.name.len())
        .max()
        .unwrap_or(0);
    for provider in &providers {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<17}  model {}",
            provider.name,
            kind_name(provider.kind()),
            provider.model.as_deref().unwrap_or("as requested"),
        );
    }
    if config.routes.is_empty() {
        let _ = writeln!(
            out,
            "routes: none (every model is sent to the providers by priority)"
        );
    } else {
        let _ = writeln!(out, "routes:");
        for route in &config.routes {
            let targets: Vec<&str> = route
                .providers
                .iter()
                .map(|target| target.name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {} -> {}{}",
                route.pattern,
                targets.join(", "),
                if route.continuation {
                    " (continues broken streams)"
                } else {
                    ""
                }
            );
        }
    }
    out.push_str(&curl_hint(addr, config));
    out
}

/// Two commands to try the gateway at `addr` with: a chat completion for a model the
/// configuration serves ([`hint_model`]), and the health and circuit endpoints.
pub fn curl_hint(addr: SocketAddr, config: &GatewayConfig) -> String {
    let model = serde_json::Value::from(hint_model(config));
    let body = format!(r#"{{"model":{model},"messages":[{{"role":"user","content":"Hello"}}]}}"#);
    // Inside single quotes, the shell takes everything but a single quote as it is.
    let body = body.replace('\'', r"'\''");
    format!(
        "try:\n  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{body}'\n  curl -s http://{addr}/v1/health; curl -s http://{addr}/v1/circuits\nlive status page: http://{addr}/status\n"
    )
}

/// A model name the configuration really serves: the first route's pattern (a glob with
/// its `*` dropped, if that still matches), else the first provider's model by priority
/// (requests for a model no route matches go to the providers by priority, each asked
/// for its own model).
pub fn hint_model(config: &GatewayConfig) -> String {
    for route in &config.routes {
        let name = route.pattern.replace('*', "");
        if !name.is_empty() && route.matches(&name) {
            return name;
        }
    }
    config
        .providers
        .iter()
        .filter(|provider| provider.model.is_some())
        .min_by_key(|provider| provider.priority)
        .and_then(|provider| provider.model.clone())
        .unwrap_or_else(|| "default".to_owned())
}

fn kind_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Azure => "azure",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::OpenaiCompatible => "openai-compatible",
        ProviderKind::Simulated => "simulated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn the_demo_banner_names_its_config_providers_and_a_served_model() {
        let config = GatewayConfig::demo();
        let text = banner(addr(), ConfigSource::Demo, &config);
        assert!(
            text.starts_with("brace gateway listening on http://127.0.0.1:8080\n"),
            "{text}"
        );
        assert!(text.contains("config: embedded demo config: simulated providers"));
        let primary = text.find("sim-primary").unwrap();
        let local = text.find("sim-local").unwrap();
        assert!(primary < local, "by priority: {text}");
        assert!(text.contains("simulated"), "{text}");
        assert!(text.contains("routes: none"), "{text}");
        assert!(
            text.contains(
                r#"-d '{"model":"sim-large","messages":[{"role":"user","content":"Hello"}]}'"#
            ),
            "{text}"
        );
    }

    #[test]
    fn the_hint_names_a_routed_model_when_routes_exist() {
        let yaml = "
providers:
  - {name: fast, kind: simulated, model: small, priority: 2}
  - {name: big, kind: simulated, model: large, priority: 1}
routes:
  - match: 'gpt-4*'
    providers: [{name: big}]
  - match: fast
    providers: [{name: fast}]
";
        let config = GatewayConfig::from_yaml(yaml).unwrap();
        assert_eq!(hint_model(&config), "gpt-4");
        let text = banner(
            addr(),
            ConfigSource::File(Path::new("/etc/brace.yaml")),
            &config,
        );
        assert!(text.contains("config: /etc/brace.yaml"), "{text}");
        assert!(text.contains("gpt-4* -> big"), "{text}");
        assert!(text.contains(r#""model":"gpt-4""#), "{text}");

        let only_star = GatewayConfig::from_yaml(
            "providers: [{name: a, kind: simulated, model: m-a}]\nroutes: [{match: '*', providers: [{name: a}]}]\n",
        )
        .unwrap();
        assert_eq!(hint_model(&only_star), "m-a");
    }

    #[test]
    fn a_quote_in_the_model_is_escaped_for_the_shell() {
        let config =
            GatewayConfig::from_yaml("providers: [{name: a, kind: simulated, model: \"it's\"}]\n")
                .unwrap();
        assert!(curl_hint(addr(), &config).contains(r#""model":"it'\''s""#));
    }
}
