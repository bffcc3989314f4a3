//! `AnthropicClient` against the simulated provider speaking the Messages format over HTTP
//! (`brace_sim::SimServer`): answers, tool calls, every failure kind, stream faults.

mod anthropic_support;

use std::time::Duration;

use anthropic_support::sim::{self, sim};
use brace_providers::anthropic::AnthropicClient;
use brace_providers::provider::{ApiKey, ClientConfig};
use brace_sim::Behavior;

fn client(base: String) -> AnthropicClient {
    AnthropicClient::new(
        ClientConfig::new("anthropic", base)
            .with_api_key(ApiKey::new("sk-ant-test-key"))
            .with_timeout(Duration::from_secs(5))
            .with_stream_idle_timeout(Duration::from_secs(2)),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn answers_whole_streamed_and_with_tools() {
    let server = sim(Behavior::succeed()).await;
    sim::answers_whole_streamed_and_with_tools(&server, &client(server.base_url())).await;
}

#[tokio::test(start_paused = true)]
async fn every_scripted_failure_comes_back_as_its_kind() {
    let server = sim(Behavior::succeed()).await;
    sim::every_failure_kind(&server, &client(server.base_url()), "anthropic", false).await;
}

#[tokio::test(start_paused = true)]
async fn stream_faults_end_streams_with_the_right_kind() {
    let server = sim(Behavior::succeed()).await;
    sim::stream_faults(&server, &client(server.base_url())).await;
}
