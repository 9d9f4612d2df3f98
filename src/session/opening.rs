//! Opening a session: `open` (credential lookup, per-user slot, hub registration and the
//! welcome read in one store-reader job), `abandon` for an upgrade that failed, the `welcome`
//! frame, and presence announcements to the user's contacts. It reads through `App::db` and
//! sends through the hub; it never touches redb.

use super::*;

/// Looks up the credential, takes a per-user slot, registers the session with the hub and reads
/// the welcome, all in one job on a store reader. On `Ready` the caller either runs the
/// session (`run`) or gives it up (`abandon`).
pub async fn open(app: &Arc<App>, token_hash: [u8; 32]) -> Result<Open, crate::store::StoreError> {
    let l = &app.config.limits;
    let (tx, rx) = mpsc::channel(l.outbox_frames);
    let flags = Arc::new(SessionFlags {
        token_hash,
        ..SessionFlags::default()
    });
    let id = app.hub.next_session_id();
    let hub = app.hub.clone();
    let (per_user, max, group_max) = (
        l.max_connections_per_user,
        l.conversations_max,
        l.broadcast_group_max,
    );
    let opened = app
        .db(move |s| {
            let Some(user) = s.session_user(&token_hash, model::now_ms())? else {
                return Ok(Err(Open::NoSession));
            };
            let Some(slot) = hub.reserve(user.id, per_user) else {
                return Ok(Err(Open::TooMany));
            };
            let handle = SessionHandle {
                id,
                user: user.id,
                tx,
                flags,
            };
            // The first session of a user announces them online; the contacts for that come
            // from the same read as the welcome's conversation list.
            let first = hub.register(handle.clone());
            let registered = Registered {
                hub: hub.clone(),
                user: user.id,
                id,
                left: false,
            };
            let read = if first {
                s.welcome_view(user.id, max, group_max)
                    .map(|(c, k)| (c, Some(k)))
            } else {
                s.conversations_of(user.id, max).map(|c| (c, None))
            };
            // On an error `registered` is dropped here, which unregisters.
            let (conversations, contacts) = read?;
            Ok(Ok((
                user,
                handle,
                registered,
                slot,
                conversations,
                contacts,
            )))
        })
        .await?;
    Ok(match opened {
        Err(refused) => refused,
        Ok((user, handle, registered, slot, conversations, contacts)) => {
            Open::Ready(Box::new(Opened {
                user,
                handle,
                registered,
                rx,
                slot,
                contacts,
                conversations,
            }))
        }
    })
}

/// Undoes `open` for a session that will not run (the upgrade failed).
pub fn abandon(app: &Arc<App>, opened: Opened) {
    let user = opened.user.id;
    if opened.registered.leave() {
        announce_presence(app.clone(), user);
    }
}

/// Tells the user's contacts whether the user is online now. Reads the current state when it
/// runs, so quick connect/disconnect flaps cannot leave a stale answer last.
pub(super) fn announce_presence(app: Arc<App>, user: UserId) {
    tokio::spawn(async move {
        let max = app.config.limits.broadcast_group_max;
        match app.db(move |s| s.contacts(user, max)).await {
            Ok(contacts) => send_presence(&app, user, &contacts),
            Err(e) => tracing::error!("presence of {user}: {e}"),
        }
    });
}

pub(super) fn send_presence(app: &App, user: UserId, contacts: &[UserId]) {
    let online = app.hub.is_online(user);
    let frame = Outbound::Frame(encode(&ServerFrame::Presence {
        user: user.0,
        online,
    }));
    app.hub.send_to_users(contacts, &frame, None);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn welcome(&mut self) -> Step {
        let user = self.user.id;
        let max = self.app.config.limits.conversations_max;
        let (conversations, contacts) = self.welcome.take().unwrap_or_default();
        if let Some(contacts) = contacts {
            send_presence(&self.app, user, &contacts);
        }
        // The first sync can start from these instead of reading them again: anything newer
        // reaches this session live as a gap and is caught up from the store.
        if conversations.len() < max {
            self.welcome_seqs = Some(conversations.iter().map(|c| (c.id, c.last_seq)).collect());
        }
        let l = &self.app.config.limits;
        let frame = ServerFrame::Welcome {
            protocol: proto::PROTOCOL_VERSION,
            server: crate::VERSION,
            user: proto::UserRef::of(&self.user),
            epoch: format!("{:016x}", self.app.store.epoch()),
            limits: proto::ClientLimits {
                max_message_bytes: l.max_message_bytes,
                max_message_chars: l.max_message_chars,
                max_frame_bytes: l.max_frame_bytes,
                history_limit: l.history_max,
                ping_interval_ms: l.ping_interval.as_millis() as u64,
                idle_timeout_ms: l.idle_timeout.as_millis() as u64,
            },
            conversations: self.wire_conversations(&conversations),
        };
        self.send_frame(&frame).await
    }

    pub(super) fn wire_conversations(
        &self,
        list: &[model::ConversationSummary],
    ) -> Vec<proto::Conversation> {
        let hub = &self.app.hub;
        list.iter()
            .map(|c| proto::Conversation::from_summary(c, |id| hub.is_online(UserId(id))))
            .collect()
    }
}
