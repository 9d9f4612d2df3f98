//! The conversation-log events of issue 23, as `ChatBatch` operations: edit, delete, react
//! (each rewrites its target text message and appends an event at the next seq), mute (not a
//! seq event), rename, and the `system` lines of group changes. Like a send, every event is
//! applied inside the writer's batch, so it is logged, committed, acked and fanned out with it,
//! and `sync` replays it by seq. Only the tables `ChatBatch` holds are touched.

use super::*;
use crate::model::{MessageKind, Reaction, SystemEvent};

const NOT_A_MESSAGE: ChatError = ChatError::Missing("no message with this seq");
const AN_EVENT: ChatError =
    ChatError::Missing("this seq is an event (edit, delete, reaction or system), not a message");
const DELETED: ChatError = ChatError::Forbidden("message deleted");

impl ChatBatch<'_> {
    /// `mentions` reduced to the members of `conv` other than `sender`, each once, in order.
    pub(super) fn member_mentions(
        &mut self,
        conv: u64,
        sender: UserId,
        mentions: &[UserId],
    ) -> Result<Vec<UserId>> {
        if mentions.is_empty() {
            return Ok(Vec::new());
        }
        let members = self.member_ids(conv)?;
        let mut out: Vec<UserId> = Vec::new();
        for u in mentions {
            if *u != sender && members.binary_search(u).is_ok() && !out.contains(u) {
                out.push(*u);
            }
        }
        Ok(out)
    }

    fn account(&self, id: UserId) -> Option<crate::model::User> {
        let raw = self.users.get(id.0).ok().flatten()?;
        decode_user(id.0, raw.value()).ok()
    }

    /// The account name of `id` ("" if unreadable), as messages carry it.
    pub(super) fn user_name(&self, id: UserId) -> String {
        self.account(id).map(|u| u.name).unwrap_or_default()
    }

    /// The name people see for `id`: the display name, else the account name.
    pub(super) fn display_name(&self, id: UserId) -> String {
        self.account(id)
            .map(|u| u.display_name.unwrap_or(u.name))
            .unwrap_or_default()
    }

    fn is_admin(&self, id: UserId) -> bool {
        self.account(id).is_some_and(|u| u.admin && !u.disabled)
    }

    /// Appends `extra` (an event by `actor`, asked for with `client_id`, "" if none) to `conv`
    /// at the next seq and stores the conversation record. `activity`: the event moves the
    /// conversation up the list (system lines do; edits, deletions and reactions do not).
    #[allow(clippy::too_many_arguments)]
    fn append_event(
        &mut self,
        conv: u64,
        rec: &mut ConvRecord,
        actor: UserId,
        actor_name: &str,
        client_id: &str,
        extra: MessageExtra,
        now_ms: u64,
        activity: bool,
    ) -> Result<StoredMessage> {
        rec.last_seq += 1;
        let time_ms = now_ms.max(rec.last_ms);
        if activity {
            rec.last_ms = time_ms;
        }
        let m = StoredMessage {
            conversation: ConversationId(conv),
            seq: rec.last_seq,
            sender: actor,
            sender_name: actor_name.to_string(),
            time_ms,
            client_id: client_id.to_string(),
            text: String::new(),
            reply_to: None,
            unreadable: false,
            attachments: Vec::new(),
            extra,
        };
        self.messages
            .insert((conv, m.seq), messages::encode(&m).as_slice())?;
        self.event_seqs.insert((conv, m.seq), ())?;
        self.put_conv(conv, rec)?;
        Ok(m)
    }

    /// Appends a `system` line by `actor`.
    pub(super) fn append_system(
        &mut self,
        conv: u64,
        rec: &mut ConvRecord,
        actor: UserId,
        event: SystemEvent,
        now_ms: u64,
    ) -> Result<StoredMessage> {
        let name = self.user_name(actor);
        let extra = MessageExtra {
            kind: MessageKind::System,
            system: Some(event),
            ..MessageExtra::default()
        };
        self.append_event(conv, rec, actor, &name, "", extra, now_ms, true)
    }

    /// The text message `seq` of `conv` for a member `actor` to act on, with the conversation.
    fn text_target(
        &mut self,
        actor: UserId,
        conv: ConversationId,
        seq: u64,
    ) -> Op<(ConvRecord, StoredMessage)> {
        if !self.is_member(conv.0, actor)? {
            return Ok(Err(ChatError::NotFound));
        }
        let Some(rec) = self.conv(conv.0)? else {
            return Ok(Err(ChatError::NotFound));
        };
        if seq == 0 || seq > rec.last_seq {
            return Ok(Err(NOT_A_MESSAGE));
        }
        let Some(raw) = self
            .messages
            .get((conv.0, seq))?
            .map(|v| v.value().to_vec())
        else {
            return Ok(Err(NOT_A_MESSAGE));
        };
        match messages::decode(conv.0, seq, &raw) {
            Ok(f) if f.kind == messages::KIND_LOST => {
                return Ok(Err(ChatError::Missing("the message at this seq was lost")))
            }
            Ok(f) if f.extra.kind != MessageKind::Text => return Ok(Err(AN_EVENT)),
            Ok(_) => {}
            Err(_) => {
                return Ok(Err(ChatError::Missing(
                    "the message at this seq cannot be read",
                )))
            }
        }
        let m = read_message(&self.users, conv.0, seq, &raw);
        Ok(Ok((rec, m)))
    }

    fn put_message(&mut self, m: &StoredMessage) -> Result<()> {
        self.messages
            .insert((m.conversation.0, m.seq), messages::encode(m).as_slice())?;
        Ok(())
    }

    fn outcome(&mut self, conv: u64, message: StoredMessage) -> Op<SendOutcome> {
        let members = self.member_ids(conv)?;
        Ok(Ok(SendOutcome {
            message,
            duplicate: false,
            created: false,
            members,
        }))
    }

    /// The sender replaces the text (and mentions) of their message `seq`; the `edit` event
    /// carries the new text as served (it stores none itself).
    #[allow(clippy::too_many_arguments)]
    pub fn edit(
        &mut self,
        actor: UserId,
        actor_name: &str,
        client_id: &str,
        conv: ConversationId,
        seq: u64,
        text: &str,
        mentions: &[UserId],
        now_ms: u64,
    ) -> Op<SendOutcome> {
        let (mut rec, mut target) = match self.text_target(actor, conv, seq)? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if target.sender != actor {
            return Ok(Err(ChatError::Forbidden(
                "you can only edit your own messages",
            )));
        }
        if target.extra.deleted {
            return Ok(Err(DELETED));
        }
        let mentions = self.member_mentions(conv.0, actor, mentions)?;
        for u in &target.extra.mentions {
            self.mentions.remove((*u, conv.0, seq))?;
        }
        for u in &mentions {
            self.mentions.insert((u.0, conv.0, seq), ())?;
        }
        let mentions: Vec<u64> = mentions.iter().map(|u| u.0).collect();
        target.text = text.to_string();
        target.extra.edited = true;
        target.extra.mentions = mentions.clone();
        self.put_message(&target)?;
        let extra = MessageExtra {
            kind: MessageKind::Edit,
            target: Some(seq),
            ..MessageExtra::default()
        };
        let mut event = self.append_event(
            conv.0, &mut rec, actor, actor_name, client_id, extra, now_ms, false,
        )?;
        event.text = target.text;
        event.extra.mentions = mentions;
        self.outcome(conv.0, event)
    }

    #[allow(clippy::too_many_arguments)]
    /// Deletes message `seq`: its text, mentions, reactions and attachment references are
    /// removed from the database; a `delete` event follows. The sender may; in a group also
    /// the owner and server admins.
    pub fn delete(
        &mut self,
        actor: UserId,
        actor_name: &str,
        client_id: &str,
        conv: ConversationId,
        seq: u64,
        now_ms: u64,
    ) -> Op<SendOutcome> {
        let (mut rec, mut target) = match self.text_target(actor, conv, seq)? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if target.extra.deleted {
            return Ok(Err(DELETED));
        }
        if target.sender != actor {
            let moderator = rec.kind == ConversationKind::Group
                && (rec.owner == actor.0 || self.is_admin(actor));
            if !moderator {
                return Ok(Err(ChatError::Forbidden(
                    "you can only delete your own messages (in a group, the owner and admins may delete any)",
                )));
            }
        }
        for u in &target.extra.mentions {
            self.mentions.remove((*u, conv.0, seq))?;
        }
        self.files.detach(conv.0, seq)?;
        target.text.clear();
        target.attachments.clear();
        target.extra.deleted = true;
        target.extra.mentions.clear();
        target.extra.reactions.clear();
        self.put_message(&target)?;
        let extra = MessageExtra {
            kind: MessageKind::Delete,
            target: Some(seq),
            ..MessageExtra::default()
        };
        let event = self.append_event(
            conv.0, &mut rec, actor, actor_name, client_id, extra, now_ms, false,
        )?;
        self.outcome(conv.0, event)
    }

    #[allow(clippy::too_many_arguments)]
    /// Toggles `actor`'s `emoji` (checked by the frame: one grapheme cluster) on message `seq`.
    pub fn react(
        &mut self,
        actor: UserId,
        actor_name: &str,
        client_id: &str,
        conv: ConversationId,
        seq: u64,
        emoji: &str,
        now_ms: u64,
    ) -> Op<SendOutcome> {
        let (mut rec, mut target) = match self.text_target(actor, conv, seq)? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if target.extra.deleted {
            return Ok(Err(DELETED));
        }
        let reactions = &mut target.extra.reactions;
        let added = match reactions.iter().position(|r| r.emoji == emoji) {
            Some(i) => match reactions[i].users.iter().position(|u| *u == actor.0) {
                Some(j) => {
                    reactions[i].users.remove(j);
                    if reactions[i].users.is_empty() {
                        reactions.remove(i);
                    }
                    false
                }
                None => {
                    reactions[i].users.push(actor.0);
                    true
                }
            },
            None if reactions.len() >= MAX_REACTION_KINDS => {
                return Ok(Err(ChatError::Invalid(
                    "this message has too many different reactions",
                )))
            }
            None => {
                reactions.push(Reaction {
                    emoji: emoji.to_string(),
                    users: vec![actor.0],
                });
                true
            }
        };
        self.put_message(&target)?;
        let extra = MessageExtra {
            kind: MessageKind::Reaction,
            target: Some(seq),
            emoji: Some(emoji.to_string()),
            added,
            ..MessageExtra::default()
        };
        let event = self.append_event(
            conv.0, &mut rec, actor, actor_name, client_id, extra, now_ms, false,
        )?;
        self.outcome(conv.0, event)
    }

    /// Mutes or unmutes `conv` for `user` (a member).
    pub fn mute(&mut self, user: UserId, conv: ConversationId, muted: bool) -> Op<()> {
        if !self.is_member(conv.0, user)? {
            return Ok(Err(ChatError::NotFound));
        }
        if muted {
            self.mutes.insert((user.0, conv.0), ())?;
        } else {
            self.mutes.remove((user.0, conv.0))?;
        }
        Ok(Ok(()))
    }

    /// The owner gives a group a new title (checked by the frame); a `system` line says so.
    pub fn rename_group(
        &mut self,
        actor: UserId,
        actor_name: &str,
        client_id: &str,
        conv: ConversationId,
        title: &str,
        now_ms: u64,
    ) -> Op<SendOutcome> {
        let mut rec = match self.group_for(actor, conv)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if rec.owner != actor.0 {
            return Ok(Err(ChatError::Forbidden(
                "only the group owner may rename the group",
            )));
        }
        rec.title = title.to_string();
        let extra = MessageExtra {
            kind: MessageKind::System,
            system: Some(SystemEvent {
                action: SystemAction::Renamed,
                users: Vec::new(),
                names: Vec::new(),
                title: Some(title.to_string()),
            }),
            ..MessageExtra::default()
        };
        let event = self.append_event(
            conv.0, &mut rec, actor, actor_name, client_id, extra, now_ms, true,
        )?;
        self.outcome(conv.0, event)
    }
}
