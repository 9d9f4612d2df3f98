//! Conversation-log event frames (issue 23): `edit`, `delete`, `react`, `rename_group` (seq
//! events) and `mute` (a per-user setting). Each becomes a `Change` for the writer, which
//! checks who may, commits, acks (`ack` with the event's seq; `mute` without) and fans out.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `frame` is one of the frames above (anything else is ignored).
    pub(super) async fn event(&mut self, r: Option<u64>, frame: ClientFrame) -> Step {
        let users = |ids: Vec<u64>| ids.into_iter().map(UserId).collect();
        let change = match frame {
            ClientFrame::Edit {
                conversation,
                seq,
                text,
                mentions,
                client_id,
            } => Change::Edit {
                conversation: ConversationId(conversation),
                seq,
                text,
                mentions: users(mentions),
                client_id,
            },
            ClientFrame::Delete {
                conversation,
                seq,
                client_id,
            } => Change::Delete {
                conversation: ConversationId(conversation),
                seq,
                client_id,
            },
            ClientFrame::React {
                conversation,
                seq,
                emoji,
                client_id,
            } => Change::React {
                conversation: ConversationId(conversation),
                seq,
                emoji,
                client_id,
            },
            ClientFrame::Mute {
                conversation,
                muted,
            } => Change::Mute {
                conversation: ConversationId(conversation),
                muted,
            },
            ClientFrame::RenameGroup {
                conversation,
                title,
                client_id,
            } => Change::RenameGroup {
                conversation: ConversationId(conversation),
                title: title.trim().to_string(),
                client_id,
            },
            _ => return Ok(()),
        };
        self.submit(r, change).await
    }
}
