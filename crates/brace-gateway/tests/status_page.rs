//! The live status page in a real headless browser: Chromium loads `/status` from a gateway
//! whose primary is dead, runs the page's script (virtual time lets its polling run), and
//! the rendered DOM shows the dead provider's circuit open and the degradation level.
//!
//! Chromium is found through `BRACE_CHROMIUM` (set by `.ci/run`, which installs Debian's
//! `chromium`), else on the `PATH`; without it the test is skipped with a message. With
//! `BRACE_STATUS_SCREENSHOT=path` it also saves a screenshot there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use brace_gateway::{Gateway, GatewayConfig};
use brace_llm::{ChatRequest, Message};

const DEAD_PRIMARY: &str = r"
providers:
  - name: dead
    kind: simulated
    model: m-dead
    priority: 1
    price: {input: 3.0, output: 15.0}
    simulate: {type: fail, kind: server}
  - name: alive
    kind: simulated
    model: m-alive
    priority: 2
    price: {input: 1.0, output: 4.0}
fallback:
  max_retries: 0
health:
  consecutive_failures: 2
  recovery_time: 1h
degradation:
  auto:
    enabled: false
";

/// The browser: `BRACE_CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BRACE_CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "BRACE_CHROMIUM is set to {} but there is nothing there",
            path.display()
        );
        return Some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs the browser headless on `url` with `args`; its stdout.
fn browse(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time runs the page's timers (its polling) without waiting for them.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("chromium starts");
    // A browser that hangs must not hang the test suite.
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().ok();
        panic!("chromium did not finish within two minutes");
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The opening tag of the first element whose attributes contain `marker`.
fn tag_with<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_dead_providers_open_circuit_and_the_level() {
    let Some(browser) = chromium() else {
        eprintln!(
            "skipped: no chromium (install Debian's `chromium`, or set BRACE_CHROMIUM to its path)"
        );
        return;
    };
    let gateway = Gateway::build(GatewayConfig::from_yaml(DEAD_PRIMARY).unwrap()).unwrap();
    // The dead primary fails twice: its circuit opens; the other answers.
    for _ in 0..4 {
        let request = ChatRequest::new("anything", vec![Message::user("hello")]);
        let (response, _) = gateway.call(request).await.unwrap();
        assert_eq!(&*response.meta.provider, "alive");
    }
    gateway.degradation().pin("reduced").unwrap();
    let (listener, addr) = brace_gateway::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(brace_gateway::serve(gateway.clone(), listener, async {
        let _ = stopped.await;
    }));

    let url = format!("http://{addr}/status");
    let profile = std::env::temp_dir().join(format!("brace-chromium-{}", std::process::id()));
    let screenshot = std::env::var_os("BRACE_STATUS_SCREENSHOT").map(PathBuf::from);
    let dom = {
        let (browser, profile, url, screenshot) = (
            browser.clone(),
            profile.clone(),
            url.clone(),
            screenshot.clone(),
        );
        tokio::task::spawn_blocking(move || {
            if let Some(path) = screenshot {
                browse(
                    &browser,
                    &profile,
                    &url,
                    &[
                        "--window-size=1280,900",
                        &format!("--screenshot={}", path.display()),
                    ],
                );
            }
            browse(&browser, &profile, &url, &["--dump-dom"])
        })
        .await
        .unwrap()
    };
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    std::fs::remove_dir_all(&profile).ok();

    // The script ran and rendered what /v1/status said.
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script ran:\n{dom}"
    );
    let dead = tag_with(&dom, "data-provider=\"dead\"").expect("a row for the dead provider");
    assert!(dead.contains("data-circuit=\"open\""), "{dead}");
    assert!(dead.contains("data-healthy=\"false\""), "{dead}");
    let alive = tag_with(&dom, "data-provider=\"alive\"").expect("a row for the other one");
    assert!(alive.contains("data-circuit=\"closed\""), "{alive}");
    let level = tag_with(&dom, "id=\"level\"").expect("the level");
    assert!(level.contains("data-level=\"reduced\""), "{level}");
    assert!(
        dom.contains("reduced (pinned)"),
        "the level is shown as text"
    );
    let status = tag_with(&dom, "id=\"status\"").expect("the overall status");
    assert!(status.contains("data-status=\"degraded\""), "{status}");
    // The circuit's state is written out in the row, not only in an attribute.
    let row_start = dom.find("data-provider=\"dead\"").unwrap();
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
    assert!(row.contains(">open<"), "{row}");
}
