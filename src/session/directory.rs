//! Directory frames: `conversations` (the user's conversation list with unread counts and
//! online state) and `users` (the user directory search). Both read through `App::db`; the hub
//! supplies presence. Nothing here writes.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn conversations(&mut self, r: Option<u64>) -> Step {
        let user = self.user.id;
        let max = self.app.config.limits.conversations_max;
        match self.app.db(move |s| s.conversations_of(user, max)).await {
            Ok(list) => {
                let conversations = self.wire_conversations(&list);
                self.send_frame(&ServerFrame::Conversations {
                    reference: r,
                    conversations,
                })
                .await
            }
            Err(e) => self.internal(r, &e).await,
        }
    }

    pub(super) async fn users(
        &mut self,
        r: Option<u64>,
        query: String,
        limit: Option<u32>,
    ) -> Step {
        let limit = limit.unwrap_or(50);
        match self
            .app
            .db(move |s| s.search_users(&query, limit as usize))
            .await
        {
            Ok(list) => {
                let hub = &self.app.hub;
                let users = list
                    .into_iter()
                    .map(|u| proto::DirectoryUser {
                        id: u.id.0,
                        color: u.color_name(),
                        online: hub.is_online(u.id),
                        display_name: u.display_name,
                        name: u.name,
                    })
                    .collect();
                self.send_frame(&ServerFrame::Users {
                    reference: r,
                    users,
                })
                .await
            }
            Err(e) => self.internal(r, &e).await,
        }
    }
}
