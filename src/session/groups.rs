//! Group frames: `members` (read through `App::db`, membership checked by the store, with
//! online state from the hub), and `create_group`, `add_members`, `remove_member`, `leave`,
//! each submitted to the writer, which checks the owner rules, commits, acks and fans out.

use super::*;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn members(&mut self, r: Option<u64>, conversation: u64) -> Step {
        let user = self.user.id;
        let conv = ConversationId(conversation);
        match self.app.db(move |s| s.members_of(user, conv)).await {
            Ok(Some(list)) => {
                let hub = &self.app.hub;
                let members = list
                    .iter()
                    .map(|m| proto::Member::from_info(m, hub.is_online(m.id)))
                    .collect();
                self.send_frame(&ServerFrame::Members {
                    reference: r,
                    conversation,
                    members,
                })
                .await
            }
            Ok(None) => self.fail(r, not_found()).await,
            Err(e) => self.internal(r, &e).await,
        }
    }

    pub(super) async fn create_group(
        &mut self,
        r: Option<u64>,
        title: String,
        members: Vec<u64>,
    ) -> Step {
        let title = title.trim().to_string();
        let members = members.into_iter().map(UserId).collect();
        self.submit(r, Change::CreateGroup { title, members }).await
    }

    pub(super) async fn add_members(
        &mut self,
        r: Option<u64>,
        conversation: u64,
        members: Vec<u64>,
    ) -> Step {
        let members = members.into_iter().map(UserId).collect();
        self.submit(
            r,
            Change::AddMembers {
                conversation: ConversationId(conversation),
                members,
            },
        )
        .await
    }

    pub(super) async fn remove_member(
        &mut self,
        r: Option<u64>,
        conversation: u64,
        target: u64,
    ) -> Step {
        self.submit(
            r,
            Change::RemoveMember {
                conversation: ConversationId(conversation),
                user: UserId(target),
            },
        )
        .await
    }

    pub(super) async fn leave(&mut self, r: Option<u64>, conversation: u64) -> Step {
        let user = self.user.id;
        self.submit(
            r,
            Change::RemoveMember {
                conversation: ConversationId(conversation),
                user,
            },
        )
        .await
    }
}
