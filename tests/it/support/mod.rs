//! Test support: `Server` runs the real chatd binary on 127.0.0.1 with port 0 and reads the
//! address it logged; `http` sends one request with hyper's client and collects the reply.

pub mod ws;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::TokioIo;

pub const BIN: &str = env!("CARGO_BIN_EXE_chatd");

/// A running chatd process. Killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts chatd on `data_dir` with extra flags and waits for its "listening on" line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_command(Command::new(BIN), data_dir, extra)
    }

    /// Like `start`, for another chatd binary: `cmd` runs it (e.g. under qemu-user) and the
    /// serve flags are appended.
    pub fn start_command(mut cmd: Command, data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = cmd
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "info",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chatd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the address is handed over, so a test that asserts on the log
                // right after `start` sees the start-up line.
                {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                let at = ["listening on http://", "listening on https://"]
                    .iter()
                    .find_map(|p| line.find(p).map(|i| i + p.len()));
                if let Some(i) = at {
                    // The address ends at the first character that cannot be part of one (a
                    // space in text logs, a quote in JSON logs).
                    let addr: String = line[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "chatd did not start; log:\n{}",
                    log.lock().unwrap().as_str()
                );
            }
        };
        Server { child, addr, log }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing `needle`; panics after 10 s.
    pub fn wait_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (HUP, TERM, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// kill -9, like a power cut from the process's point of view.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        self.child.wait().expect("wait")
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http(self.addr, "GET", path, headers, None).await
    }

    /// The value of a plain sample (`name value`) on /metrics; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let r = self.get("/metrics", &[]).await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// A request with a JSON body (`None`: no body) and, if given, a session cookie.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut h = Vec::new();
        if let Some(c) = cookie {
            h.push(("cookie", c));
        }
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        http(
            self.addr,
            method,
            path,
            &h,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        http(self.addr, "POST", path, &h, Some(body.as_bytes().to_vec())).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the chatd binary with arguments and optional standard input; returns its output.
pub fn chatd(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatd");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait chatd")
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
    /// `chatd_session=<token>` from Set-Cookie, ready to send back as a Cookie header.
    pub fn session_cookie(&self) -> String {
        self.cookie("chatd_session").expect("a session cookie")
    }

    /// `name=<value>` from the Set-Cookie headers, ready to send back as a Cookie header.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// A JSON POST from the source address `from` (any 127.0.0.0/8 address reaches the server).
pub async fn post_json_from(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind((from, 0).into())
        .expect("bind the source address");
    let stream = sock.connect(addr).await.expect("connect");
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    let host = addr.to_string();
    http_on(
        stream,
        &host,
        "POST",
        path,
        &h,
        Some(body.as_bytes().to_vec()),
    )
    .await
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    http_on(stream, &addr.to_string(), method, path, headers, body).await
}

/// One HTTP/1.1 request over an established stream (plain TCP or TLS), with `Host: host`.
pub async fn http_on<I>(
    io: I,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let res = sender.send_request(req).await.expect("send");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A JSON credentials body.
pub fn creds(name: &str, password: &str) -> String {
    serde_json::json!({ "name": name, "password": password }).to_string()
}
