//! Headless Chromium driven over the W3C WebDriver protocol (Debian's chromium and
//! chromium-driver), with axe-core for the accessibility checks. A few requests over reqwest
//! are all WebDriver needs, so no browser-automation crate (and no second HTTP stack) comes in.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Chrome {
    _driver: Child,
    _profile: tempfile::TempDir,
    http: reqwest::Client,
    session: String,
    pub axe: Option<String>,
}

/// Where chromium and its driver are, when both are installed.
fn installed() -> Option<(String, String)> {
    let find = |names: &[&str]| names.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string());
    Some((
        find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"])?,
        find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?,
    ))
}

fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

impl Chrome {
    /// A fresh headless browser; `None` (said plainly) when Chromium is not installed, which
    /// fails the run under CI=true.
    pub async fn start() -> Option<Chrome> {
        let Some((chromium, chromedriver)) = installed() else {
            assert!(!ci(), "Chromium and ChromeDriver (Debian: chromium chromium-driver) are required under CI=true");
            eprintln!(
                "SKIPPED: the browser tests need Debian's chromium and chromium-driver; ./scripts/test installs them"
            );
            return None;
        };
        let axe = std::env::var("AGORA_AXE_JS").ok().and_then(|path| std::fs::read_to_string(path).ok());
        if axe.is_none() {
            assert!(!ci(), "axe-core is required under CI=true (AGORA_AXE_JS, set by ./scripts/test)");
        }
        let port = super::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        agora_eventstore::testing::eventually(20, "chromedriver ready", || {
            let http = http.clone();
            let url = format!("{base}/status");
            async move {
                let status: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile folder");
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1280,1000", "--lang=da", format!("--user-data-dir={}", profile.path().display())]
                }
            }}
        });
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_string();
        Some(Chrome { _driver: driver, _profile: profile, http, session: format!("{base}/session/{session}"), axe })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("webdriver answers").json().await.expect("json");
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("webdriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn find(&self, css: &str) -> String {
        let mut request = self.http.post(format!("{}/element", self.session));
        request = request.json(&json!({ "using": "css selector", "value": css }));
        let found: Value = request.send().await.expect("webdriver answers").json().await.expect("json");
        match found["value"][ELEMENT].as_str() {
            Some(id) => id.to_string(),
            None => panic!("no element {css} ({found}) on {}:\n{}", self.url().await, self.source().await),
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    /// Clicks something that loads a page, and waits for the new page.
    pub async fn click_to_load(&self, css: &str) {
        self.mark_page().await;
        self.click(css).await;
        self.wait_for_new_page().await;
    }

    /// Presses a key that loads a page (Enter on a link or button), and waits for the new page.
    pub async fn press_to_load(&self, key: &str) {
        self.mark_page().await;
        self.press(key).await;
        self.wait_for_new_page().await;
    }

    async fn mark_page(&self) {
        self.run("document.documentElement.dataset.agoraOld = '1';", json!([])).await;
    }

    async fn wait_for_new_page(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let loaded = self
                .run(
                    "return !document.documentElement.dataset.agoraOld && document.readyState === 'complete';",
                    json!([]),
                )
                .await;
            if loaded == true {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no new page loaded on {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Presses one key (a WebDriver key code such as "\u{E004}" for Tab) on what has focus.
    pub async fn press(&self, key: &str) {
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
        ]}]});
        self.call(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    /// Types text into what has focus, key by key.
    pub async fn keys(&self, text: &str) {
        let mut keys = Vec::new();
        for c in text.chars() {
            keys.push(json!({ "type": "keyDown", "value": c.to_string() }));
            keys.push(json!({ "type": "keyUp", "value": c.to_string() }));
        }
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": keys }]});
        self.call(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    /// Presses Tab until the element with focus matches `css`; the number of presses.
    pub async fn tab_to(&self, css: &str) -> usize {
        for presses in 1..=60 {
            self.press("\u{E004}").await;
            let focused = self
                .run("return document.activeElement && document.activeElement.matches(arguments[0]);", json!([css]))
                .await;
            if focused == true {
                return presses;
            }
        }
        panic!("{css} is not reachable with the Tab key");
    }

    /// Resizes the window (a phone is 390 × 844).
    pub async fn window_size(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).expect("a PNG");
        std::fs::write(path, bytes).expect("screenshot written");
    }

    pub async fn cookie(&self, name: &str) -> Option<String> {
        let cookies = self.call(reqwest::Method::GET, "/cookie", None).await;
        cookies.as_array()?.iter().find(|c| c["name"] == name).and_then(|c| c["value"].as_str()).map(str::to_string)
    }

    pub async fn delete_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// The WCAG 2.1 A and AA violations axe-core finds on the page, as "rule: element" lines
    /// (empty when axe is not installed outside CI).
    pub async fn accessibility_violations(&self) -> Vec<String> {
        let Some(axe) = &self.axe else { return Vec::new() };
        self.run(&format!("{axe}\nreturn true;"), json!([])).await;
        let script = "const done = arguments[arguments.length - 1];
            axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
              .then(r => done(r.violations.flatMap(v => v.nodes.map(n => v.id + ': ' + n.target.join(' ') + ' ' + (n.failureSummary || '')))))
              .catch(e => done(['axe failed: ' + e]));";
        let found =
            self.call(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": [] }))).await;
        found.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
