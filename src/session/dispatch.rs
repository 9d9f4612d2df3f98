//! Client frames in: WebSocket message kinds, the per-connection rate limit, decoding into a
//! `proto::ClientFrame`, the frame's own checks, and the one `match` that hands each frame to
//! its handler in `messages`, `groups` or `directory` (or `catchup` for `sync`). Also the
//! shared answers: `submit` (a mutation to the writer, which acks it), `fail` and `internal`
//! (error frames). A bad frame always gets an error frame here, never a silent drop.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn on_ws(&mut self, msg: Message) -> Step {
        self.last_seen = Instant::now();
        match msg {
            Message::Text(text) => self.on_text(text).await,
            Message::Binary(_) => Err(End::Close(1003, "binary frames are not supported")),
            // tungstenite queues the pong; flushing sends it now.
            Message::Ping(_) => self.flush().await,
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => {
                // tungstenite answers the close; flush it out and end.
                let _ = self.flush().await;
                Err(End::Gone)
            }
        }
    }

    pub(super) async fn on_text(&mut self, text: Utf8Bytes) -> Step {
        // Every text frame counts against the rate limit, application pings included.
        let l = &self.app.config.limits;
        if self
            .bucket
            .take(l.frame_burst, l.frame_refill, Instant::now())
            .is_err()
        {
            self.limited_streak += 1;
            if self.limited_streak >= l.flood_close_after {
                return Err(End::Close(1008, "too many frames"));
            }
            // Name the refused request so the client can retry exactly that one.
            let (reference, client_id) = request_names(text.as_str());
            return self
                .send_error(
                    reference,
                    client_id,
                    ErrorCode::RateLimited,
                    "too many frames; this one was not processed",
                )
                .await;
        }
        self.limited_streak = 0;
        if text.as_str() == "ping" {
            return self
                .write(Message::Text(Utf8Bytes::from_static("pong")))
                .await;
        }
        let envelope = match proto::decode(text.as_str()) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .send_error(e.reference, e.client_id, e.code, &e.message)
                    .await;
            }
        };
        // Boxed: request handling needs a large future, and keeping it inline would make every
        // idle connection's task carry that size (measured 4 KB per connection).
        Box::pin(self.on_frame(envelope.reference, envelope.frame)).await
    }

    pub(super) async fn submit(&mut self, reference: Option<u64>, change: Change) -> Step {
        let op = WriteOp {
            actor: self.user.id,
            actor_name: self.user.name.clone(),
            reference,
            origin: self.handle.clone(),
            change,
        };
        if let Err(op) = self.app.writer.submit(op).await {
            let client_id = op.change.client_id().map(str::to_string);
            return self
                .send_error(
                    reference,
                    client_id,
                    ErrorCode::Internal,
                    "the server is shutting down",
                )
                .await;
        }
        Ok(())
    }

    pub(super) async fn on_frame(&mut self, r: Option<u64>, frame: ClientFrame) -> Step {
        let limits = &self.app.config.limits;
        if let Err(bad) = frame.check(
            self.user.id.0,
            limits.max_message_chars,
            limits.max_message_bytes,
            limits.history_max,
        ) {
            let client_id = frame.client_id().map(str::to_string);
            return self.send_error(r, client_id, bad.code, &bad.message).await;
        }
        match frame {
            ClientFrame::Sync { cursors, batch } => {
                self.batch = batch;
                self.start_sync(r, cursors).await
            }
            frame @ ClientFrame::Send { .. } => self.send(r, frame).await,
            ClientFrame::History {
                conversation,
                before,
                around,
                limit,
            } => self.history(r, conversation, before, around, limit).await,
            ClientFrame::Search {
                query,
                conversation,
                before,
                limit,
            } => {
                let limit = limit.map_or(crate::search::DEFAULT_LIMIT, |l| l as usize);
                let req = crate::search::Request {
                    query,
                    conversation,
                    before,
                    limit,
                };
                let reply = crate::search::respond(&self.app, self.user.id, r, req).await;
                self.send_frame(&reply).await
            }
            ClientFrame::Read { conversation, seq } => self.read(r, conversation, seq).await,
            ClientFrame::Typing { conversation } => self.typing(r, conversation).await,
            ClientFrame::Conversations => self.conversations(r).await,
            ClientFrame::Members { conversation } => self.members(r, conversation).await,
            ClientFrame::CreateGroup { title, members } => {
                self.create_group(r, title, members).await
            }
            ClientFrame::AddMembers {
                conversation,
                members,
            } => self.add_members(r, conversation, members).await,
            ClientFrame::RemoveMember { conversation, user } => {
                self.remove_member(r, conversation, user).await
            }
            ClientFrame::Leave { conversation } => self.leave(r, conversation).await,
            ClientFrame::Users { query, limit } => self.users(r, query, limit).await,
            frame @ (ClientFrame::Edit { .. }
            | ClientFrame::Delete { .. }
            | ClientFrame::React { .. }
            | ClientFrame::Mute { .. }
            | ClientFrame::RenameGroup { .. }) => self.event(r, frame).await,
        }
    }

    pub(super) async fn fail(
        &mut self,
        r: Option<u64>,
        (code, msg): (ErrorCode, &'static str),
    ) -> Step {
        self.send_error(r, None, code, msg).await
    }

    pub(super) async fn internal(
        &mut self,
        r: Option<u64>,
        e: &(dyn std::fmt::Display + Sync),
    ) -> Step {
        tracing::error!(user = self.user.id.0, "request failed: {e}");
        self.send_error(r, None, ErrorCode::Internal, "internal error; retry later")
            .await
    }
}

/// The `ref` and `client_id` of a frame, if it is a JSON object that has them.
pub(super) fn request_names(text: &str) -> (Option<u64>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default, rename = "ref")]
        reference: Option<u64>,
        #[serde(default)]
        client_id: Option<String>,
    }
    match serde_json::from_str::<Names>(text) {
        Ok(n) => (n.reference, n.client_id),
        Err(_) => (None, None),
    }
}
