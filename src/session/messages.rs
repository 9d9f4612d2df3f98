//! Message frames: `send` (to a conversation or a user, submitted to the writer, which acks and
//! fans out), `history` (a page of older messages, read through `App::db` after the store checks
//! membership), `read` (the read cursor, through the writer) and `typing` (forwarded through
//! the hub to the other members, throttled per conversation).

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `frame` is a `ClientFrame::Send` (anything else is ignored).
    pub(super) async fn send(&mut self, r: Option<u64>, frame: ClientFrame) -> Step {
        let ClientFrame::Send {
            client_id,
            conversation,
            to,
            text,
            reply_to,
            attachments,
            mentions,
        } = frame
        else {
            return Ok(());
        };
        let limits = &self.app.config.limits;
        let attachments = match crate::files::send_ids(&attachments, limits) {
            Ok(ids) => ids,
            Err(why) => {
                let code = ErrorCode::BadFrame;
                return self.send_error(r, Some(client_id), code, &why).await;
            }
        };
        let target = match (conversation, to) {
            (Some(c), None) => Target::Conversation(ConversationId(c)),
            (None, Some(u)) => Target::User(UserId(u)),
            // `check` refused both and neither.
            _ => return Ok(()),
        };
        self.submit(
            r,
            Change::Send {
                target,
                client_id,
                text,
                reply_to,
                attachments,
                mentions: mentions.into_iter().map(UserId).collect(),
            },
        )
        .await
    }

    pub(super) async fn history(
        &mut self,
        r: Option<u64>,
        conversation: u64,
        before: Option<u64>,
        around: Option<u64>,
        limit: Option<u32>,
    ) -> Step {
        let user = self.user.id;
        let limit = limit.unwrap_or(50);
        let before = before.unwrap_or(u64::MAX);
        let conv = ConversationId(conversation);
        let text_bytes = self.app.config.limits.page_text_bytes;
        let res = self
            .app
            .db(move |s| match around {
                Some(seq) => {
                    crate::search::history_around(s, user, conv, seq, limit as usize, text_bytes)
                }
                None => s.history(user, conv, before, limit as usize, text_bytes),
            })
            .await;
        match res {
            Ok(Some(msgs)) => {
                let complete = msgs.first().is_none_or(|m| m.seq == 1);
                let messages = msgs.iter().map(proto::Message::from_stored).collect();
                self.send_frame(&ServerFrame::History {
                    reference: r,
                    conversation,
                    messages,
                    complete,
                })
                .await
            }
            Ok(None) => self.fail(r, not_found()).await,
            Err(e) => self.internal(r, &e).await,
        }
    }

    pub(super) async fn read(&mut self, r: Option<u64>, conversation: u64, seq: u64) -> Step {
        self.submit(
            r,
            Change::Read {
                conversation: ConversationId(conversation),
                seq,
            },
        )
        .await
    }

    pub(super) async fn typing(&mut self, r: Option<u64>, conversation: u64) -> Step {
        let interval = self.app.config.limits.typing_interval;
        let now = Instant::now();
        if self
            .typing_last
            .get(&conversation)
            .is_some_and(|t| now.duration_since(*t) < interval)
        {
            return Ok(());
        }
        let user = self.user.id;
        let conv = ConversationId(conversation);
        match self.app.db(move |s| s.member_ids_for(user, conv)).await {
            Ok(Some(members)) => {
                // Throttle only what was forwarded, so a non-member is told every time.
                if self.typing_last.len() > 256 {
                    self.typing_last.clear();
                }
                self.typing_last.insert(conversation, now);
                let others: Vec<UserId> = members.into_iter().filter(|m| *m != user).collect();
                let frame = Outbound::Frame(encode(&ServerFrame::Typing {
                    conversation,
                    user: user.0,
                    name: self.user.name.clone(),
                }));
                self.app.hub.send_to_users(&others, &frame, None);
                Ok(())
            }
            Ok(None) => self.fail(r, not_found()).await,
            Err(e) => self.internal(r, &e).await,
        }
    }
}
