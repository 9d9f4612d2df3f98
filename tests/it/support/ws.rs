//! A WebSocket test client speaking chatd's protocol (docs/PROTOCOL.md) with a real
//! tokio-tungstenite client, plus helpers to make users.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{creds, Server};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A registered user: session cookie and id.
pub struct TestUser {
    pub id: u64,
    pub name: String,
    pub cookie: String,
}

/// Registers `name` (password "password-1") and returns its cookie and id.
pub async fn user(srv: &Server, name: &str) -> TestUser {
    let r = srv
        .post_json("/api/register", &creds(name, "password-1"), &[])
        .await;
    assert_eq!(r.status, 201, "register {name}: {:?}", r.body);
    TestUser {
        id: r.json()["user"]["id"].as_u64().unwrap(),
        name: name.to_string(),
        cookie: r.session_cookie(),
    }
}

/// Logs `name` in with `password` and returns its cookie and id.
pub async fn login(srv: &Server, name: &str, password: &str) -> TestUser {
    let r = srv
        .post_json("/api/login", &creds(name, password), &[])
        .await;
    assert_eq!(r.status, 200, "login {name}: {:?}", r.body);
    TestUser {
        id: r.json()["user"]["id"].as_u64().unwrap(),
        name: name.to_string(),
        cookie: r.session_cookie(),
    }
}

/// The outcome of an upgrade attempt: a socket or the HTTP status it was refused with.
pub async fn try_connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// A connected client that has read its `welcome`.
pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
}

impl Client {
    /// Connects with the user's cookie and reads `welcome` (does not sync).
    pub async fn connect(srv: &Server, u: &TestUser) -> Client {
        let ws = try_connect(srv.addr, &[("cookie", &u.cookie)])
            .await
            .expect("upgrade refused");
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }

    /// Connects and syncs with no cursors; waits for `synced`.
    pub async fn connect_synced(srv: &Server, u: &TestUser) -> Client {
        let mut c = Client::connect(srv, u).await;
        c.send(json!({"type": "sync"})).await;
        c.recv_type("synced").await;
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Next JSON text frame (pings are answered by tungstenite and skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read error");
            match m {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame: {other:?}"),
            }
        }
    }

    /// Next frame of `type` t, skipping presence/typing/read/conversation noise of other types.
    pub async fn recv_type(&mut self, t: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == t {
                return v;
            }
            if v["type"] == "error" && t != "error" {
                panic!("expected {t}, got error: {v}");
            }
        }
    }

    /// Asserts no frame of type `t` arrives within `d`.
    pub async fn expect_no(&mut self, t: &str, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(s)))) => {
                    let v: Value = serde_json::from_str(s.as_str()).unwrap();
                    assert_ne!(v["type"], t, "unexpected {v}");
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
            }
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn recv_close(&mut self) -> u16 {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match m {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("read error before close: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Sends a text message and waits for its ack; returns the ack.
    pub async fn say(&mut self, target: Value, client_id: &str, text: &str) -> Value {
        let mut f = json!({"type": "send", "client_id": client_id, "text": text});
        for (k, v) in target.as_object().unwrap() {
            f[k] = v.clone();
        }
        self.send(f).await;
        let ack = self.recv_type("ack").await;
        assert_eq!(ack["client_id"], client_id);
        ack
    }
}

/// Connects like `Client::connect`, but on a socket whose kernel receive buffer is about
/// `rcvbuf` bytes, so a client that stops reading backs the server up quickly.
pub async fn connect_small_rcvbuf(srv: &Server, u: &TestUser, rcvbuf: u32) -> Client {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    let stream = sock.connect(srv.addr).await.expect("connect");
    let mut req = format!("ws://{}/ws", srv.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", u.cookie.parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    Client::from_ws(ws).await
}

/// A conversation id no test ever creates (the store numbers conversations from 1).
pub const NO_SUCH_CONVERSATION: u64 = 987_654_321;

/// A fresh `ref` for a request (unique within the test binary).
pub fn next_ref() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static REFS: AtomicU64 = AtomicU64::new(1_000);
    REFS.fetch_add(1, Ordering::Relaxed)
}

/// Wall-clock milliseconds since the Unix epoch (the server's clock: same machine).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Returns once the wall clock is past `ms`, so the server's next timestamp is larger than a
/// timestamp it already handed out (activity ordering is by millisecond).
pub async fn wait_clock_past(ms: u64) {
    while now_ms() <= ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Client {
    /// Wraps an upgraded socket and reads its `welcome`.
    pub async fn from_ws(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }

    /// Sends `v` with a fresh `ref` and returns the frame that carries that ref (a reply or an
    /// error), plus every frame that arrived before it.
    pub async fn request_collect(&mut self, mut v: Value) -> (Value, Vec<Value>) {
        let r = next_ref();
        v["ref"] = json!(r);
        self.send(v).await;
        let mut before = Vec::new();
        loop {
            let f = self.recv().await;
            if f["ref"] == r {
                return (f, before);
            }
            before.push(f);
        }
    }

    /// Sends `v` with a fresh `ref` and returns the reply (or error) carrying it.
    pub async fn request(&mut self, v: Value) -> Value {
        self.request_collect(v).await.0
    }

    /// Sends `v` with a fresh `ref`; the reply must be an error, which is returned.
    pub async fn request_err(&mut self, v: Value) -> Value {
        let desc = v.to_string();
        let e = self.request(v).await;
        assert_eq!(e["type"], "error", "expected an error for {desc}, got {e}");
        e
    }

    /// A round trip through the message writer and this session's outbox: `leave` of a
    /// conversation that does not exist is queued behind every write op this session submitted
    /// before, and its error is queued in the outbox behind everything the writer delivered to
    /// this session before. Returns the frames that arrived before the error.
    pub async fn writer_barrier(&mut self) -> Vec<Value> {
        let (e, before) = self
            .request_collect(json!({"type": "leave", "conversation": NO_SUCH_CONVERSATION}))
            .await;
        assert_eq!(e["code"], "not_found", "{e}");
        before
    }

    /// Reads frames until one of type `t`; returns it and the frames before it.
    pub async fn recv_until(&mut self, t: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let f = self.recv().await;
            if f["type"] == t {
                return (f, before);
            }
            before.push(f);
        }
    }

    /// Closes with a close handshake and waits until the server has answered (or gone).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The `type`s of some frames, for assertions and messages.
pub fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// One string field (`text`, `client_id`, ...) of each message in a `history` or `messages`
/// frame, in order.
pub fn message_fields<'a>(frame: &'a Value, field: &str) -> Vec<&'a str> {
    frame["messages"]
        .as_array()
        .expect("a frame with messages")
        .iter()
        .map(|m| m[field].as_str().expect("a string field"))
        .collect()
}
