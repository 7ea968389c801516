//! Helpers for tests of the daemon's interfaces: a `pgfork serve` child
//! process spoken to over HTTP, and `pgfork mcp` spoken to over stdio
//! with newline-delimited JSON-RPC, as an agent client launches it.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestHome, wait_until};

/// A running `pgfork serve` on a free loopback port, without the proxy,
/// stopped on drop (declare it after its [`TestHome`], so that it goes
/// first).
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A fresh admin token.
    pub token: String,
    /// The HTTP client, for requests without the token.
    pub http: Client,
    /// What it wrote to stderr so far, by line.
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Starts `pgfork serve` on `h` with `extra` options, after rotating
    /// the API token (the new one is [`Serve::token`]).
    pub fn start(h: &TestHome, extra: &[&str]) -> Serve {
        Serve::try_start(h, "off", extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Serve::start`], with the policy proxy on `proxy_listen`
    /// (`ADDR:PORT`, or `off`); the error says why it did not start.
    pub fn try_start(h: &TestHome, proxy_listen: &str, extra: &[&str]) -> Result<Serve, String> {
        let rotated = h.run(&["--json", "token", "rotate"]);
        let token = serde_json::from_slice::<Value>(&rotated.stdout)
            .ok()
            .and_then(|v| v["api_token"].as_str().map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "token rotate failed ({}): {}{}",
                    rotated.status,
                    String::from_utf8_lossy(&rotated.stdout),
                    String::from_utf8_lossy(&rotated.stderr)
                )
            })?;
        let mut cmd = h.command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--proxy-listen",
            proxy_listen,
        ]);
        cmd.args(extra).stderr(Stdio::piped()).stdout(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start pgfork serve: {e}"))?;
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // With -v, log lines may come first; so may the proxy's own
        // "listening on" line.
        let mut seen = Vec::new();
        let url = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("serve did not start: {}", seen.join("\n")));
                }
            };
            if let Some(rest) = line.split("serve: listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            seen.push(line);
        };
        let log = Arc::new(Mutex::new(seen));
        // Keep draining stderr so the daemon never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let http = Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .expect("http client");
        Ok(Serve {
            child,
            url,
            token,
            http,
            log,
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` of the daemon (its proxy included), reaped at once.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The lines it wrote to stderr so far (log lines need `-v`).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A request to `path` with the token.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Sends and returns (status, JSON body or Null).
    pub fn send(&self, req: RequestBuilder) -> (StatusCode, Value) {
        let resp: Response = req.send().expect("request");
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(Method::GET, path))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(Method::POST, path).json(&body))
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(Method::PATCH, path).json(&body))
    }

    /// `GET /metrics`: status and text.
    pub fn metrics(&self) -> (StatusCode, String) {
        let resp = self.req(Method::GET, "/metrics").send().expect("metrics");
        (resp.status(), resp.text().expect("metrics text"))
    }

    /// The value of one sample line of the metrics, or 0.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .1
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Already reaped (killed): its pid may belong to another process now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if !wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Requests to a running `serve` with another identity's token.
pub struct As<'a> {
    /// The daemon.
    pub serve: &'a Serve,
    /// The bearer token (an agent's, or another admin's).
    pub token: String,
}

impl As<'_> {
    /// Sends a request with this identity's token.
    pub fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .serve
            .http
            .request(method, format!("{}{path}", self.serve.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.serve.send(req)
    }
    /// `GET path`.
    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None)
    }
    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body))
    }
    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None)
    }
}

/// `pgfork mcp` over stdio.
pub struct Mcp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Mcp {
    /// Starts `pgfork mcp` on `h` and completes the MCP handshake.
    pub fn start(h: &TestHome) -> Mcp {
        Mcp::spawn(h.command(&["mcp"]))
    }

    /// Starts `pgfork mcp --agent NAME` with the agent's token in
    /// `PGFORK_TOKEN`, as an agent's client launches it.
    pub fn start_as(h: &TestHome, agent: &str, token: &str) -> Mcp {
        let mut cmd = h.command(&["mcp", "--agent", agent]);
        cmd.env("PGFORK_TOKEN", token);
        Mcp::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> Mcp {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgfork mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut mcp = Mcp {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = mcp.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "pgfork-test", "version": "0" }
            }),
        );
        assert!(init["result"]["serverInfo"].is_object(), "{init:#}");
        mcp.write(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        mcp
    }

    fn write(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").expect("write to pgfork mcp");
        self.stdin.flush().expect("flush");
    }

    /// Sends a request and returns its response (skipping notifications).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read pgfork mcp");
            assert!(n > 0, "pgfork mcp closed its output");
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    /// Calls a tool; returns (is_error, structured content).
    pub fn call(&mut self, tool: &str, arguments: Value) -> (bool, Value) {
        let response = self.request(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        );
        let result = &response["result"];
        assert!(result.is_object(), "{tool}: no result: {response:#}");
        (
            result["isError"].as_bool().unwrap_or(false),
            result["structuredContent"].clone(),
        )
    }

    /// Calls a tool that must succeed; returns its structured content.
    pub fn ok(&mut self, tool: &str, arguments: Value) -> Value {
        let (is_error, content) = self.call(tool, arguments.clone());
        assert!(!is_error, "{tool} {arguments} failed: {content:#}");
        content
    }

    /// Calls a tool that must fail; returns (code, message).
    pub fn refused(&mut self, tool: &str, arguments: Value) -> (String, String) {
        let (is_error, content) = self.call(tool, arguments.clone());
        assert!(is_error, "{tool} {arguments} must fail: {content:#}");
        (
            content["error"]["code"].as_str().unwrap_or("").to_string(),
            content["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
