//! Delivery in order: `sync` sets the connection's per-conversation cursors, the outbox items
//! from the writer and hub are admitted only when they are exactly the next seq (a gap makes the
//! conversation pending, a duplicate is skipped), and pending conversations are read back from
//! the store one page at a time. It reads through `App::db` and writes through `connection`.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Handles one outbox item and whatever else is already queued, with one flush.
    pub(super) async fn on_outbound(&mut self, first: Outbound) -> Step {
        let mut item = Some(first);
        let mut n = 0;
        while let Some(out) = item.take() {
            if let Some(text) = self.admit(out) {
                self.feed_text(text).await?;
            }
            n += 1;
            if n < WRITE_BATCH {
                item = self.rx.try_recv().ok();
            }
        }
        self.flush().await
    }

    /// Decides whether an outbox item is written, updating cursors. Returns the text to write.
    pub(super) fn admit(&mut self, out: Outbound) -> Option<Utf8Bytes> {
        match out {
            Outbound::Frame(f) => Some(f),
            Outbound::Message {
                conversation,
                seq,
                frame,
            } => {
                if !self.synced {
                    return None;
                }
                let cursor = self.cursors.entry(conversation).or_insert(0);
                if seq == *cursor + 1 {
                    *cursor = seq;
                    Some(frame)
                } else {
                    if seq > *cursor + 1 {
                        self.pending.insert(conversation);
                    }
                    None
                }
            }
            Outbound::Ack {
                conversation,
                seq,
                frame,
            } => {
                if self.synced {
                    let cursor = self.cursors.entry(conversation).or_insert(0);
                    if seq == *cursor + 1 {
                        *cursor = seq;
                    } else if seq > *cursor + 1 {
                        self.pending.insert(conversation);
                    }
                }
                Some(frame)
            }
            Outbound::Joined {
                conversation,
                last_seq,
                frame,
            } => {
                if self.synced {
                    self.cursors.entry(conversation).or_insert(last_seq);
                }
                Some(frame)
            }
            Outbound::Left {
                conversation,
                frame,
            } => {
                self.cursors.remove(&conversation);
                self.pending.remove(&conversation);
                Some(frame)
            }
        }
    }

    /// Reads and writes one page of missed messages for one pending conversation.
    pub(super) async fn catch_up_page(&mut self) -> Step {
        let Some(&conv) = self.pending.iter().next() else {
            return Ok(());
        };
        let after = self.cursors.get(&conv).copied().unwrap_or(0);
        let page = self.app.config.limits.catchup_page;
        let text_bytes = self.app.config.limits.page_text_bytes;
        let user = self.user.id;
        let batch = self.batch;
        // Encoded on a store reader straight from the database pages, into one buffer: one
        // `message` frame each, or one `messages` frame of those that continue the cursor.
        let read = self
            .app
            .db(move |s| {
                let mut buf = FrameBuf::with_capacity(page, 256);
                let mut next = after + 1;
                if batch {
                    buf.begin_batch(conv);
                }
                let conv_id = ConversationId(conv);
                let more = s.messages_after_map(user, conv_id, after, page, text_bytes, |m| {
                    if !batch {
                        buf.push_message(m);
                    } else if m.seq == next {
                        buf.push_batch_item(m);
                        next += 1;
                    }
                })?;
                Ok(more.map(|(_, more)| (buf.into_frames(), more)))
            })
            .await;
        let (msgs, more) = match read {
            Ok(Some(m)) => m,
            Ok(None) => {
                // No longer a member.
                self.pending.remove(&conv);
                self.cursors.remove(&conv);
                (Vec::new(), false)
            }
            Err(e) => {
                tracing::error!("catch-up of {conv} for {user}: {e}");
                return Err(End::Close(1011, "internal error"));
            }
        };
        for (seq, text) in msgs {
            let cursor = self.cursors.entry(conv).or_insert(0);
            // A `messages` frame is keyed by its last seq (its first continues the cursor).
            if (!batch && seq != *cursor + 1) || seq <= *cursor {
                continue;
            }
            *cursor = seq;
            self.feed_text(text).await?;
        }
        let stuck = more && self.cursors.get(&conv).copied().unwrap_or(0) == after;
        if stuck {
            // The store gives every seq in turn (a marker where it cannot read one), so this
            // is a bug; never loop on it, and never end the catch-up without saying so.
            tracing::error!(
                user = user.0,
                "catch-up of conversation {conv} made no progress after seq {after}; stopped"
            );
            self.pending.remove(&conv);
            self.send_error(
                None,
                None,
                ErrorCode::Internal,
                "cannot read the rest of a conversation; sync again later",
            )
            .await?;
        } else if !more {
            self.pending.remove(&conv);
        }
        if self.pending.is_empty() {
            if let Some(reference) = self.sync_ref.take() {
                self.feed_text(encode(&ServerFrame::Synced { reference }))
                    .await?;
            }
        }
        self.flush().await
    }

    pub(super) async fn start_sync(&mut self, r: Option<u64>, cursors: Vec<proto::Cursor>) -> Step {
        let given: HashMap<u64, u64> = cursors.iter().map(|c| (c.conversation, c.seq)).collect();
        let user = self.user.id;
        let ahead = |last: &[(ConversationId, u64)]| {
            last.iter()
                .filter_map(|&(conv, last_seq)| {
                    let c = given.get(&conv.0).copied()?;
                    (c > last_seq).then_some((conv.0, c, last_seq))
                })
                .min()
        };
        let mut last = self.welcome_seqs.take();
        if last.as_deref().is_some_and(|l| ahead(l).is_some()) {
            // The welcome's seqs may be older than what the client has seen since (on another
            // connection): only the current ones can say a cursor is ahead.
            last = None;
        }
        let last = match last {
            Some(seqs) => seqs,
            None => match self.app.db(move |s| s.last_seqs(user)).await {
                Ok(l) => l,
                Err(e) => return self.internal(r, &e).await,
            },
        };
        // A cursor past the last message is from another history (a restore gave the database
        // a new epoch): syncing from it would skip every message up to it, silently.
        if let Some((conv, cursor, last_seq)) = ahead(&last) {
            return self
                .send_frame(&ServerFrame::cursor_ahead(r, conv, cursor, last_seq))
                .await;
        }
        self.cursors.clear();
        self.pending.clear();
        for (conv, last_seq) in last {
            let c = given.get(&conv.0).copied().unwrap_or(0);
            self.cursors.insert(conv.0, c);
            if last_seq > c {
                self.pending.insert(conv.0);
            }
        }
        self.synced = true;
        if self.pending.is_empty() {
            self.send_frame(&ServerFrame::Synced { reference: r }).await
        } else {
            self.sync_ref = Some(r);
            Ok(())
        }
    }
}
