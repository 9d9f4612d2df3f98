//! File metadata: which uploads exist, who uploaded them, which conversations hold a message
//! with them (the download check) and which files each message carries.
//!
//! Three tables, created on open without a schema change (like `accounts::init_tables`):
//! `files` (file id → sealed record), `file_convs` ((file id, conversation) → ()) and
//! `message_files` ((conversation, seq) → sealed list of the message's attachments, copied
//! whole so reading a page of messages is one range scan). The message record itself is not
//! changed. The bytes live on disk under `<data>/files/` (`crate::files`); this module only
//! names the content hash. Attaching happens inside the message writer's batch
//! (`ChatBatch::send` calls `check_attachments` and `attach`), so a message and its
//! attachments commit together.

use std::collections::HashMap;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    TableHandle,
};

use super::codec::{self, Dec, DecodeError, Enc};
use super::{Result, Store};
use crate::model::{file_id_text, Attachment, ConversationId, UserId};

/// file id → sealed record v1: uploader, sha256 (32 bytes as 4 u64), size, created_ms,
/// attached (0/1), width, height (0 = unknown), mime, name.
pub const FILES: TableDefinition<u128, &[u8]> = TableDefinition::new("files");
/// (file id, conversation) → (): the conversation holds a message with this file.
pub const FILE_CONVS: TableDefinition<(u128, u64), ()> = TableDefinition::new("file_convs");
/// (conversation, seq) → sealed list v1 of the message's attachments (count, then per file:
/// id (two u64), size, width, height, mime, name).
pub const MESSAGE_FILES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("message_files");

/// One uploaded file's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub id: u128,
    pub uploader: UserId,
    pub sha256: [u8; 32],
    pub size: u64,
    pub created_ms: u64,
    /// A message holds it (it is never collected).
    pub attached: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub mime: String,
    pub name: String,
}

impl FileRecord {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            id: file_id_text(self.id),
            name: self.name.clone(),
            size: self.size,
            mime: self.mime.clone(),
            width: self.width,
            height: self.height,
        }
    }

    /// The content hash as 64 lowercase hex characters (the blob's file name).
    pub fn sha_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn encode_file(f: &FileRecord) -> Vec<u8> {
    let mut e = Enc::new(1).u64(f.uploader.0);
    for c in f.sha256.chunks(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        e = e.u64(u64::from_le_bytes(a));
    }
    let e = e
        .u64(f.size)
        .u64(f.created_ms)
        .u8(u8::from(f.attached))
        .u64(u64::from(f.width.unwrap_or(0)))
        .u64(u64::from(f.height.unwrap_or(0)))
        .str(&f.mime)
        .str(&f.name);
    codec::seal(&f.id.to_be_bytes(), e.0)
}

fn dim(v: u64) -> Option<u32> {
    u32::try_from(v).ok().filter(|v| *v > 0)
}

fn decode_file(id: u128, raw: &[u8]) -> std::result::Result<FileRecord, DecodeError> {
    let rec = codec::unseal(&id.to_be_bytes(), raw)?;
    let mut d = Dec::new(rec, 1, "file record version")?;
    let uploader = UserId(d.u64()?);
    let mut sha256 = [0u8; 32];
    for c in sha256.chunks_mut(8) {
        c.copy_from_slice(&d.u64()?.to_le_bytes());
    }
    Ok(FileRecord {
        id,
        uploader,
        sha256,
        size: d.u64()?,
        created_ms: d.u64()?,
        attached: d.u8()? != 0,
        width: dim(d.u64()?),
        height: dim(d.u64()?),
        mime: d.str()?.to_string(),
        name: d.str()?.to_string(),
    })
}

fn encode_list(conv: u64, seq: u64, list: &[(u128, &FileRecord)]) -> Vec<u8> {
    let mut e = Enc::new(1).u64(list.len() as u64);
    for (id, f) in list {
        e = e
            .u64((*id >> 64) as u64)
            .u64(*id as u64)
            .u64(f.size)
            .u64(u64::from(f.width.unwrap_or(0)))
            .u64(u64::from(f.height.unwrap_or(0)))
            .str(&f.mime)
            .str(&f.name);
    }
    codec::seal(&codec::key2(conv, seq), e.0)
}

fn decode_list(
    conv: u64,
    seq: u64,
    raw: &[u8],
) -> std::result::Result<Vec<Attachment>, DecodeError> {
    let rec = codec::unseal(&codec::key2(conv, seq), raw)?;
    let mut d = Dec::new(rec, 1, "attachment list version")?;
    let n = d.u64()?;
    let mut out = Vec::new();
    for _ in 0..n.min(1024) {
        let id = (u128::from(d.u64()?) << 64) | u128::from(d.u64()?);
        out.push(Attachment {
            id: file_id_text(id),
            size: d.u64()?,
            width: dim(d.u64()?),
            height: dim(d.u64()?),
            mime: d.str()?.to_string(),
            name: d.str()?.to_string(),
        });
    }
    Ok(out)
}

/// Creates the file tables if missing. Runs in `Store::open`.
pub(super) fn init_tables(db: &Database) -> Result<()> {
    // Only when missing: opening must not write to a database that has them.
    let names: Vec<String> = db
        .begin_read()?
        .list_tables()?
        .map(|t| t.name().to_string())
        .collect();
    if [FILES.name(), FILE_CONVS.name(), MESSAGE_FILES.name()]
        .iter()
        .all(|n| names.iter().any(|have| have == n))
    {
        return Ok(());
    }
    let mut tx = db.begin_write()?;
    tx.set_durability(redb::Durability::Immediate)?;
    tx.open_table(FILES)?;
    tx.open_table(FILE_CONVS)?;
    tx.open_table(MESSAGE_FILES)?;
    tx.commit()?;
    Ok(())
}

/// The file tables of one write transaction (part of `ChatBatch`).
pub struct FileTables<'t> {
    files: Table<'t, u128, &'static [u8]>,
    file_convs: Table<'t, (u128, u64), ()>,
    message_files: Table<'t, (u64, u64), &'static [u8]>,
}

impl<'t> FileTables<'t> {
    pub(super) fn open(tx: &'t redb::WriteTransaction) -> Result<Self> {
        Ok(FileTables {
            files: tx.open_table(FILES)?,
            file_convs: tx.open_table(FILE_CONVS)?,
            message_files: tx.open_table(MESSAGE_FILES)?,
        })
    }

    /// The records of `ids` if `sender` may attach every one of them to a message in `conv`
    /// (`None`: a conversation that does not exist yet): each must exist and be the sender's
    /// own upload or already held by a message of `conv`. `None` when any is not.
    pub(super) fn check_attachments(
        &self,
        sender: UserId,
        conv: Option<u64>,
        ids: &[u128],
    ) -> Result<Option<Vec<FileRecord>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(raw) = self.files.get(*id)? else {
                return Ok(None);
            };
            let Ok(f) = decode_file(*id, raw.value()) else {
                return Ok(None);
            };
            let shared = match conv {
                Some(c) => self.file_convs.get((*id, c))?.is_some(),
                None => false,
            };
            if f.uploader != sender && !shared {
                return Ok(None);
            }
            out.push(f);
        }
        Ok(Some(out))
    }

    /// Records that message `(conv, seq)` carries `files` (checked by `check_attachments`).
    pub(super) fn attach(&mut self, conv: u64, seq: u64, files: &[FileRecord]) -> Result<()> {
        let list: Vec<(u128, &FileRecord)> = files.iter().map(|f| (f.id, f)).collect();
        self.message_files
            .insert((conv, seq), encode_list(conv, seq, &list).as_slice())?;
        for f in files {
            self.file_convs.insert((f.id, conv), ())?;
            if !f.attached {
                let mut f = f.clone();
                f.attached = true;
                self.files.insert(f.id, encode_file(&f).as_slice())?;
            }
        }
        Ok(())
    }

    /// Removes message `(conv, seq)`'s attachments (a deleted message, issue 23): its list,
    /// and each file's `(file, conv)` entry unless another message of `conv` still holds the
    /// file; a file no conversation holds any more is marked unattached, so the collector
    /// removes its bytes like any unattached upload.
    pub(super) fn detach(&mut self, conv: u64, seq: u64) -> Result<()> {
        let Some(raw) = self.message_files.remove((conv, seq))? else {
            return Ok(());
        };
        let list = decode_list(conv, seq, raw.value()).unwrap_or_default();
        drop(raw);
        let mut ids: Vec<u128> = list
            .iter()
            .filter_map(|a| crate::model::parse_file_id(&a.id))
            .collect();
        // Still held by another message of this conversation (forwarded within it)?
        for row in self.message_files.range((conv, 0)..=(conv, u64::MAX))? {
            let (k, v) = row?;
            let (c, s) = k.value();
            if let Ok(other) = decode_list(c, s, v.value()) {
                ids.retain(|id| !other.iter().any(|a| a.id == file_id_text(*id)));
            }
            if ids.is_empty() {
                break;
            }
        }
        for id in ids {
            self.file_convs.remove((id, conv))?;
            let held = self
                .file_convs
                .range((id, 0)..=(id, u64::MAX))?
                .next()
                .is_some();
            if held {
                continue;
            }
            let rec = self.files.get(id)?.map(|v| decode_file(id, v.value()));
            if let Some(Ok(mut f)) = rec {
                f.attached = false;
                self.files.insert(id, encode_file(&f).as_slice())?;
            }
        }
        Ok(())
    }

    /// The attachments of message `(conv, seq)` (empty when none or unreadable).
    pub(super) fn of_message(&self, conv: u64, seq: u64) -> Result<Vec<Attachment>> {
        Ok(match self.message_files.get((conv, seq))? {
            Some(v) => decode_list(conv, seq, v.value()).unwrap_or_default(),
            None => Vec::new(),
        })
    }
}

/// The `message_files` table of a read transaction, for pages of messages.
pub(super) struct MessageFiles {
    table: redb::ReadOnlyTable<(u64, u64), &'static [u8]>,
    /// No message has files: skip the lookups (text-only servers pay nothing).
    empty: bool,
}

impl MessageFiles {
    pub(super) fn open(tx: &redb::ReadTransaction) -> Result<Self> {
        let table = tx.open_table(MESSAGE_FILES)?;
        let empty = table.is_empty()?;
        Ok(MessageFiles { table, empty })
    }

    /// The attachments of message `(conv, seq)`; empty when none or unreadable.
    pub(super) fn of(&self, conv: u64, seq: u64) -> Vec<Attachment> {
        if self.empty {
            return Vec::new();
        }
        match self.table.get((conv, seq)) {
            Ok(Some(v)) => decode_list(conv, seq, v.value()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// The attachments of messages `(conv, from..=to)` from any readable `message_files` table,
/// by seq (one range scan per page of messages).
pub(super) fn attachments_in(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    conv: u64,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, Vec<Attachment>>> {
    let mut out = HashMap::new();
    if from > to {
        return Ok(out);
    }
    for row in table.range((conv, from)..=(conv, to))? {
        let (k, v) = row?;
        let seq = k.value().1;
        if let Ok(list) = decode_list(conv, seq, v.value()) {
            out.insert(seq, list);
        }
    }
    Ok(out)
}

impl Store {
    /// Stores a new upload's metadata (durably: the reply to the upload waits for it).
    pub fn add_file(&self, f: &FileRecord) -> Result<()> {
        let tx = self.write()?;
        tx.open_table(FILES)?
            .insert(f.id, encode_file(f).as_slice())?;
        tx.commit()
    }

    /// The file `id` if `user` may download it: its uploader, or a member of a conversation
    /// that holds a message with it. `None` for an unknown id or no right alike.
    pub fn file_for(&self, user: UserId, id: u128) -> Result<Option<FileRecord>> {
        let tx = self.db.begin_read()?;
        let Some(raw) = tx.open_table(FILES)?.get(id)? else {
            return Ok(None);
        };
        let Ok(f) = decode_file(id, raw.value()) else {
            return Ok(None);
        };
        if f.uploader == user {
            return Ok(Some(f));
        }
        let members = tx.open_table(super::schema::MEMBERS)?;
        for row in tx.open_table(FILE_CONVS)?.range((id, 0)..=(id, u64::MAX))? {
            let conv = row?.0.value().1;
            if members.get((conv, user.0))?.is_some() {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    /// The attachments of one message (for tests and tools).
    pub fn message_attachments(&self, conv: ConversationId, seq: u64) -> Result<Vec<Attachment>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(MESSAGE_FILES)?;
        Ok(attachments_in(&t, conv.0, seq, seq)?
            .remove(&seq)
            .unwrap_or_default())
    }

    /// Every file record (GC, backup, `chatd check`).
    pub fn all_files(&self) -> Result<Vec<FileRecord>> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(FILES)?.iter()? {
            let (k, v) = row?;
            if let Ok(f) = decode_file(k.value(), v.value()) {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// Removes the records of unattached uploads created before `before_ms` (at most `max`,
    /// durably, in one transaction; a file attached meanwhile is kept, as the check runs in
    /// the transaction). Returns the removed records and the content hashes every remaining
    /// record names: a blob whose hash is not among them may go (see `files::sweep`).
    pub fn remove_unattached_files(&self, before_ms: u64, max: usize) -> Result<Swept> {
        let tx = self.write()?;
        let mut out = Swept::default();
        {
            let mut files = tx.open_table(FILES)?;
            let mut doomed = Vec::new();
            for row in files.iter()? {
                let (k, v) = row?;
                let Ok(f) = decode_file(k.value(), v.value()) else {
                    continue;
                };
                if !f.attached && f.created_ms < before_ms && doomed.len() < max {
                    doomed.push(f);
                } else {
                    out.in_use.insert(f.sha256);
                }
            }
            for f in doomed {
                files.remove(f.id)?;
                out.removed.push(f);
            }
        }
        if !out.removed.is_empty() {
            tx.commit()?;
        }
        Ok(out)
    }
}

/// The distinct content hashes named by the file records of the database file `path` (a
/// backup; opened read-only, unchanged). Empty for a database without file tables.
pub fn hashes_in(path: &std::path::Path) -> Result<Vec<[u8; 32]>> {
    let db = redb::ReadOnlyDatabase::open(path)?;
    let tx = db.begin_read()?;
    let table = match tx.open_table(FILES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = std::collections::BTreeSet::new();
    for row in table.iter()? {
        let (k, v) = row?;
        if let Ok(f) = decode_file(k.value(), v.value()) {
            out.insert(f.sha256);
        }
    }
    Ok(out.into_iter().collect())
}

/// What `remove_unattached_files` did.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<FileRecord>,
    /// The content hashes of every record left.
    pub in_use: std::collections::HashSet<[u8; 32]>,
}
