//! The built-in browser terminal (`/ui/terminal/{id}`) in headless Chromium from Debian's
//! packages, driven by chromedriver over W3C WebDriver: the page connects with the key
//! from its URL fragment, a typed command runs in the sandbox, its output is on the
//! page. A screenshot is kept in target/test-artifacts/.

mod common;

use common::{eventually, spawn_app};
use serde_json::{json, Value};
use std::time::Duration;

/// A chromedriver on a free port, and one browser session on it.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: std::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(20), || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                http.get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        assert!(up.is_some(), "chromedriver answers");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,700"]}}}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a browser session: {created}"))
            .to_string();
        Browser {
            http,
            base,
            session,
            driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `script` until its text contains `needle`.
    async fn wait_for(&self, script: &str, needle: &str) -> String {
        let found = eventually(Duration::from_secs(30), || async {
            let text = self.script(script).await.as_str()?.to_string();
            text.contains(needle).then_some(text)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no {needle:?} from {script}: {:?}",
                futures_util::FutureExt::now_or_never(self.script(script))
            )
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_terminal_runs_a_typed_command_and_shows_its_output() {
    let app = spawn_app().await;
    let sb = app.sandbox(json!({})).await;
    let browser = Browser::start().await;
    let page = format!(
        "{}/ui/terminal/{}#key={}&session=web",
        app.base, sb.id, app.key
    );
    browser
        .call(reqwest::Method::POST, "/url", Some(json!({"url": page})))
        .await;
    browser
        .wait_for(
            "return document.getElementById('status').textContent",
            "connected · session web",
        )
        .await;
    // The key left the address bar once used.
    let url = browser.script("return location.href").await;
    assert!(!url.as_str().unwrap().contains(&app.key), "{url}");
    let element = browser
        .call(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": ".xterm-helper-textarea"})),
        )
        .await;
    let id = element
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .expect("the terminal's input element")
        .to_string();
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": "printf '\\033[31mred-%s\\033[0m\\n' $((40+2))\n"})),
        )
        .await;
    let screen = browser
        .wait_for("return window.berthScreen()", "red-42")
        .await;
    assert!(
        screen.contains("printf"),
        "the typed command is echoed: {screen}"
    );
    // Rendered, in colour: the DOM renderer gives each red character the class of
    // colour 1 (it draws on the next animation frame, after the buffer has the text).
    browser
        .wait_for(
            "return Array.from(document.querySelectorAll('.xterm-rows .xterm-fg-1')).map(s => s.textContent).join('')",
            "red-42",
        )
        .await;
    // And drawn in a colour other than the plain text's (xterm.js's theme is a style
    // element: the page's Content-Security-Policy must let it apply).
    let colours = browser
        .script(
            "var red = document.querySelector('.xterm-rows .xterm-fg-1'); \
             var plain = document.querySelector('.xterm-rows span:not([class])'); \
             return [getComputedStyle(red).color, getComputedStyle(plain).color]",
        )
        .await;
    assert_ne!(colours[0], colours[1], "{colours}");
    // It ran in the sandbox: the session is there.
    let list: Value = app
        .client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{}/terminals", sb.id),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["terminals"][0]["name"], "web");
    let shot = browser
        .call(reqwest::Method::GET, "/screenshot", None)
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot.as_str().unwrap(),
    )
    .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("terminal-page.png"), png).unwrap();
    browser.call(reqwest::Method::DELETE, "", None).await;
    app.cleanup().await;
}
