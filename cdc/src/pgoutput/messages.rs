//! One pgoutput message, decoded: the payload of an `XLogData` frame (or the `data` column of
//! `pg_logical_slot_get_binary_changes`) turned into a typed [`Message`].
//!
//! This is the bottom of the decoding stack and knows nothing of relations, types or events:
//! [`super::relations`] remembers what `Relation` and `Type` messages announce, and
//! [`super::events`] turns row messages into change events. Only protocol version 1 is decoded
//! (no streamed transactions, no two-phase commit): that is what the CDC asks Postgres for.
//!
//! Message bytes come from the network, so they are treated as hostile. Every read checks the
//! remaining input first, every length or count read from the wire is validated against what is
//! left before anything is allocated for it, and every failure is a [`DecodeError`], never a
//! panic. Column values are zero-copy [`Bytes`] slices of the input frame; the only allocations
//! of a row message are its column vector (and, for `Relation`/`Type`, the names).
//!
//! Layout reference:
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use bytes::{Buf, Bytes};
use nself_realtime_shared::lsn::Lsn;

/// A decoded pgoutput (protocol version 1) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    /// A logical decoding message (`pg_logical_emit_message`), sent only when asked for.
    Message(LogicalMessage),
}

/// `B`: a transaction starts. Its rows follow, then a [`Commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record: the commit LSN of every event it produces.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: i64,
    pub xid: u32,
}

/// `C`: the transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by Postgres so far (always 0).
    pub flags: u8,
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: what the CDC confirms once the transaction is safe.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: i64,
}

/// `O`: the transaction was replicated into this server from another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `R`: the shape of a table, sent before its first row in a session and again after any change
/// of its definition (ALTER TABLE, replica identity change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Schema name (pgoutput sends an empty string for `pg_catalog`).
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// Published columns in attribute order (dropped and generated columns are not sent).
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: the column is part of the replica identity (the key).
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Part of the replica identity: the primary key under `REPLICA IDENTITY DEFAULT`, the
    /// index's columns under `USING INDEX`, every column under `FULL`.
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// The table's `REPLICA IDENTITY`: which old values an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: the whole old row.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// `Y`: the name of a user-defined type used by a relation that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

/// `I`: a row was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub relation_id: u32,
    pub new: Tuple,
}

/// `U`: a row was updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub relation_id: u32,
    /// The old row (`REPLICA IDENTITY FULL`) or its old key (when the key changed); `None` when
    /// the replica identity sends nothing for this update.
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

/// `D`: a row was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub relation_id: u32,
    pub old: OldTuple,
}

/// The old values an UPDATE or DELETE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the key columns hold values; the others are sent as nulls.
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `T`: one TRUNCATE statement, over one or more tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: `CASCADE`; bit 2: `RESTART IDENTITY`.
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

impl Truncate {
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// `M`: a message emitted with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// The values of one row, one per published column, in column order.
pub type Tuple = Vec<TupleValue>;

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value the UPDATE did not change, so Postgres did not send it.
    UnchangedToast,
    /// `t`: the value in the type's text output format (the session's encoding, UTF-8 for us).
    Text(Bytes),
    /// `b`: the value in the type's binary format (only sent when asked for; we never ask).
    Binary(Bytes),
}

/// Input that is not a valid pgoutput version 1 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message tag {tag:#04x} ({})", char::from(*tag).escape_default())]
    UnknownTag { tag: u8 },
    #[error("truncated {message} message: {field} needs {needed} bytes, {remaining} left")]
    Truncated {
        message: &'static str,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{message} message: {field} is not NUL-terminated")]
    UnterminatedString {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message} message: {field} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
    },
    #[error("{message} message: invalid {field} {value}")]
    Invalid {
        message: &'static str,
        field: &'static str,
        value: i64,
    },
    #[error("{message} message: {count} unexpected bytes after its end")]
    TrailingBytes { message: &'static str, count: usize },
}

impl Message {
    /// Decodes one whole message. Trailing bytes are an error: protocol version 1 messages have
    /// an exact length, so leftovers mean the input is not what we think it is.
    pub fn decode(mut buf: Bytes) -> Result<Message, DecodeError> {
        if buf.is_empty() {
            return Err(DecodeError::Empty);
        }
        let tag = buf.get_u8();
        let message = match tag {
            b'B' => "Begin",
            b'C' => "Commit",
            b'O' => "Origin",
            b'R' => "Relation",
            b'Y' => "Type",
            b'I' => "Insert",
            b'U' => "Update",
            b'D' => "Delete",
            b'T' => "Truncate",
            b'M' => "Message",
            _ => return Err(DecodeError::UnknownTag { tag }),
        };
        let mut r = Reader { buf, message };
        let decoded = match tag {
            b'B' => Message::Begin(Begin {
                final_lsn: Lsn(r.u64("final LSN")?),
                timestamp: r.i64("commit timestamp")?,
                xid: r.u32("xid")?,
            }),
            b'C' => Message::Commit(Commit {
                flags: r.u8("flags")?,
                commit_lsn: Lsn(r.u64("commit LSN")?),
                end_lsn: Lsn(r.u64("end LSN")?),
                timestamp: r.i64("commit timestamp")?,
            }),
            b'O' => Message::Origin(Origin {
                commit_lsn: Lsn(r.u64("origin commit LSN")?),
                name: r.string("origin name")?,
            }),
            b'R' => Message::Relation(r.relation()?),
            b'Y' => Message::Type(TypeMessage {
                oid: r.u32("type oid")?,
                namespace: r.string("type namespace")?,
                name: r.string("type name")?,
            }),
            b'I' => {
                let relation_id = r.u32("relation id")?;
                r.expect_marker(b'N', "new tuple marker")?;
                Message::Insert(Insert {
                    relation_id,
                    new: r.tuple()?,
                })
            }
            b'U' => {
                let relation_id = r.u32("relation id")?;
                let old = match r.u8("tuple marker")? {
                    b'N' => None,
                    marker => {
                        let old = r.old_tuple(marker)?;
                        r.expect_marker(b'N', "new tuple marker")?;
                        Some(old)
                    }
                };
                Message::Update(Update {
                    relation_id,
                    old,
                    new: r.tuple()?,
                })
            }
            b'D' => {
                let relation_id = r.u32("relation id")?;
                let marker = r.u8("old tuple marker")?;
                Message::Delete(Delete {
                    relation_id,
                    old: r.old_tuple(marker)?,
                })
            }
            b'T' => r.truncate()?,
            _ => Message::Message(LogicalMessage {
                transactional: r.u8("flags")? & 1 != 0,
                lsn: Lsn(r.u64("message LSN")?),
                prefix: r.string("prefix")?,
                content: {
                    let len = r.length("content length")?;
                    r.take(len, "content")?
                },
            }),
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::TrailingBytes {
                message,
                count: r.buf.len(),
            });
        }
        Ok(decoded)
    }

    /// Decodes a message held in a borrowed slice (copies it once).
    pub fn decode_slice(buf: &[u8]) -> Result<Message, DecodeError> {
        Message::decode(Bytes::copy_from_slice(buf))
    }
}

/// Checked big-endian reads over the rest of one message.
struct Reader {
    buf: Bytes,
    message: &'static str,
}

impl Reader {
    fn need(&self, needed: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < needed {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                needed,
                remaining: self.buf.len(),
            });
        }
        Ok(())
    }

    fn invalid(&self, field: &'static str, value: i64) -> DecodeError {
        DecodeError::Invalid {
            message: self.message,
            field,
            value,
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_i16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_i32())
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_u64())
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(8, field)?;
        Ok(self.buf.get_i64())
    }

    /// An Int32 byte length, which must be non-negative and fit in what is left.
    fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let len = self.i32(field)?;
        let len = usize::try_from(len).map_err(|_| self.invalid(field, len.into()))?;
        self.need(len, field)?;
        Ok(len)
    }

    /// A count of items each at least `min_item_bytes` long: validated against the remaining
    /// input so a hostile count cannot make us reserve memory the message does not back.
    fn count(
        &self,
        count: i64,
        min_item_bytes: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(count).map_err(|_| self.invalid(field, count))?;
        self.need(n.saturating_mul(min_item_bytes), field)?;
        Ok(n)
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(len, field)?;
        Ok(self.buf.split_to(len))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                message: self.message,
                field,
            })?;
        let text = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| DecodeError::InvalidUtf8 {
                message: self.message,
                field,
            })?
            .to_owned();
        self.buf.advance(end + 1);
        Ok(text)
    }

    fn expect_marker(&mut self, expected: u8, field: &'static str) -> Result<(), DecodeError> {
        let found = self.u8(field)?;
        if found != expected {
            return Err(self.invalid(field, found.into()));
        }
        Ok(())
    }

    fn old_tuple(&mut self, marker: u8) -> Result<OldTuple, DecodeError> {
        match marker {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            other => Err(self.invalid("old tuple marker", other.into())),
        }
    }

    /// TupleData: Int16 column count, then per column a kind byte and, for `t`/`b`, an Int32
    /// length and the bytes.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16("column count")?;
        let n = self.count(n.into(), 1, "column count")?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let value = match self.u8("column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.length("text value length")?;
                    TupleValue::Text(self.take(len, "text value")?)
                }
                b'b' => {
                    let len = self.length("binary value length")?;
                    TupleValue::Binary(self.take(len, "binary value")?)
                }
                other => return Err(self.invalid("column kind", other.into())),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let id = self.u32("relation id")?;
        let namespace = self.string("namespace")?;
        let name = self.string("relation name")?;
        let replica_identity = match self.u8("replica identity")? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            other => return Err(self.invalid("replica identity", other.into())),
        };
        let n = self.i16("column count")?;
        // flags (1) + name (at least its NUL) + type oid (4) + typmod (4)
        let n = self.count(n.into(), 10, "column count")?;
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            columns.push(RelationColumn {
                flags: self.u8("column flags")?,
                name: self.string("column name")?,
                type_oid: self.u32("column type oid")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn truncate(&mut self) -> Result<Message, DecodeError> {
        let n = self.u32("relation count")?;
        let options = self.u8("options")?;
        let n = self.count(n.into(), 4, "relation count")?;
        let mut relation_ids = Vec::with_capacity(n);
        for _ in 0..n {
            relation_ids.push(self.u32("relation id")?);
        }
        Ok(Message::Truncate(Truncate {
            options,
            relation_ids,
        }))
    }
}

/// Builders of wire-format messages, for tests here and in sibling modules.
#[cfg(test)]
pub(crate) mod wire {
    pub fn begin(final_lsn: u64, timestamp: i64, xid: u32) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend_from_slice(&final_lsn.to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&xid.to_be_bytes());
        b
    }

    pub fn commit(commit_lsn: u64, end_lsn: u64, timestamp: i64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend_from_slice(&commit_lsn.to_be_bytes());
        b.extend_from_slice(&end_lsn.to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(s.as_bytes());
        b.push(0);
    }

    /// `columns`: (key?, name, type oid).
    pub fn relation(
        id: u32,
        ns: &str,
        name: &str,
        ident: u8,
        columns: &[(bool, &str, u32)],
    ) -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend_from_slice(&id.to_be_bytes());
        string(&mut b, ns);
        string(&mut b, name);
        b.push(ident);
        b.extend_from_slice(&(columns.len() as i16).to_be_bytes());
        for (key, col, oid) in columns {
            b.push(u8::from(*key));
            string(&mut b, col);
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
        }
        b
    }

    pub fn type_message(oid: u32, ns: &str, name: &str) -> Vec<u8> {
        let mut b = vec![b'Y'];
        b.extend_from_slice(&oid.to_be_bytes());
        string(&mut b, ns);
        string(&mut b, name);
        b
    }

    /// A tuple: `None` = null, `Some(None)` = unchanged TOAST, `Some(Some(text))`.
    pub fn tuple(b: &mut Vec<u8>, values: &[Option<Option<&str>>]) {
        b.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(None) => b.push(b'u'),
                Some(Some(text)) => {
                    b.push(b't');
                    b.extend_from_slice(&(text.len() as i32).to_be_bytes());
                    b.extend_from_slice(text.as_bytes());
                }
            }
        }
    }

    pub fn insert(rel: u32, new: &[Option<Option<&str>>]) -> Vec<u8> {
        let mut b = vec![b'I'];
        b.extend_from_slice(&rel.to_be_bytes());
        b.push(b'N');
        tuple(&mut b, new);
        b
    }

    pub fn update(
        rel: u32,
        old: Option<(u8, &[Option<Option<&str>>])>,
        new: &[Option<Option<&str>>],
    ) -> Vec<u8> {
        let mut b = vec![b'U'];
        b.extend_from_slice(&rel.to_be_bytes());
        if let Some((marker, old)) = old {
            b.push(marker);
            tuple(&mut b, old);
        }
        b.push(b'N');
        tuple(&mut b, new);
        b
    }

    pub fn delete(rel: u32, marker: u8, old: &[Option<Option<&str>>]) -> Vec<u8> {
        let mut b = vec![b'D'];
        b.extend_from_slice(&rel.to_be_bytes());
        b.push(marker);
        tuple(&mut b, old);
        b
    }

    pub fn truncate(options: u8, rels: &[u32]) -> Vec<u8> {
        let mut b = vec![b'T'];
        b.extend_from_slice(&(rels.len() as u32).to_be_bytes());
        b.push(options);
        for r in rels {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn decodes_begin_and_commit() {
        assert_eq!(
            Message::decode_slice(&begin(0x16B3748, 823_602_923_123_456, 742)).unwrap(),
            Message::Begin(Begin {
                final_lsn: Lsn(0x16B3748),
                timestamp: 823_602_923_123_456,
                xid: 742
            })
        );
        assert_eq!(
            Message::decode_slice(&commit(10, 20, -5)).unwrap(),
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                timestamp: -5
            })
        );
    }

    #[test]
    fn decodes_relation_and_type() {
        let msg = relation(
            16390,
            "public",
            "users",
            b'f',
            &[(true, "id", 23), (false, "näme", 25)],
        );
        let Message::Relation(rel) = Message::decode_slice(&msg).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.id, 16390);
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "users")
        );
        assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].is_key() && !rel.columns[1].is_key());
        assert_eq!(rel.columns[1].name, "näme");
        assert_eq!(rel.columns[1].type_oid, 25);
        assert_eq!(rel.columns[1].type_modifier, -1);
        assert_eq!(
            Message::decode_slice(&type_message(16400, "public", "mood")).unwrap(),
            Message::Type(TypeMessage {
                oid: 16400,
                namespace: "public".into(),
                name: "mood".into()
            })
        );
    }

    #[test]
    fn decodes_row_messages() {
        let msg = insert(7, &[Some(Some("1")), None, Some(None), Some(Some(""))]);
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Insert(Insert {
                relation_id: 7,
                new: vec![
                    text("1"),
                    TupleValue::Null,
                    TupleValue::UnchangedToast,
                    text("")
                ]
            })
        );
        let msg = update(
            7,
            Some((b'K', &[Some(Some("1")), None])),
            &[Some(Some("2")), Some(None)],
        );
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Update(Update {
                relation_id: 7,
                old: Some(OldTuple::Key(vec![text("1"), TupleValue::Null])),
                new: vec![text("2"), TupleValue::UnchangedToast]
            })
        );
        let msg = update(7, None, &[Some(Some("2"))]);
        let Message::Update(u) = Message::decode_slice(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(u.old, None);
        let msg = delete(7, b'O', &[Some(Some("x"))]);
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Delete(Delete {
                relation_id: 7,
                old: OldTuple::Full(vec![text("x")])
            })
        );
        let Message::Truncate(t) = Message::decode_slice(&truncate(3, &[1, 2])).unwrap() else {
            panic!()
        };
        assert!(t.cascade() && t.restart_identity());
        assert_eq!(t.relation_ids, vec![1, 2]);
    }

    #[test]
    fn decodes_binary_values_origin_and_logical_messages() {
        let mut msg = vec![b'I', 0, 0, 0, 7, b'N', 0, 1, b'b', 0, 0, 0, 2, 0xde, 0xad];
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Insert(Insert {
                relation_id: 7,
                new: vec![TupleValue::Binary(Bytes::from_static(&[0xde, 0xad]))]
            })
        );
        msg = vec![b'O'];
        msg.extend_from_slice(&5u64.to_be_bytes());
        msg.extend_from_slice(b"node1\0");
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Origin(Origin {
                commit_lsn: Lsn(5),
                name: "node1".into()
            })
        );
        msg = vec![b'M', 1];
        msg.extend_from_slice(&9u64.to_be_bytes());
        msg.extend_from_slice(b"app\0");
        msg.extend_from_slice(&3i32.to_be_bytes());
        msg.extend_from_slice(b"hi!");
        assert_eq!(
            Message::decode_slice(&msg).unwrap(),
            Message::Message(LogicalMessage {
                transactional: true,
                lsn: Lsn(9),
                prefix: "app".into(),
                content: Bytes::from_static(b"hi!")
            })
        );
    }

    #[test]
    fn every_truncation_of_valid_messages_is_an_error() {
        let messages = [
            begin(1, 2, 3),
            commit(1, 2, 3),
            relation(
                1,
                "public",
                "t",
                b'd',
                &[(true, "id", 23), (false, "v", 25)],
            ),
            type_message(16400, "public", "mood"),
            insert(1, &[Some(Some("hello")), None, Some(None)]),
            update(1, Some((b'O', &[Some(Some("a"))])), &[Some(Some("b"))]),
            delete(1, b'K', &[Some(Some("a"))]),
            truncate(0, &[1, 2, 3]),
        ];
        for msg in messages {
            assert!(Message::decode_slice(&msg).is_ok());
            for len in 0..msg.len() {
                assert!(
                    Message::decode_slice(&msg[..len]).is_err(),
                    "prefix {len} of {msg:?} decoded"
                );
            }
            let mut longer = msg.clone();
            longer.push(0);
            assert!(matches!(
                Message::decode_slice(&longer),
                Err(DecodeError::TrailingBytes { count: 1, .. })
            ));
        }
    }

    #[test]
    fn hostile_lengths_and_counts_are_refused_before_allocating() {
        // A column count of 32767 with nothing behind it.
        let msg = [b'I', 0, 0, 0, 1, b'N', 0x7f, 0xff];
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Truncated {
                field: "column count",
                ..
            })
        ));
        // A negative column count.
        let msg = [b'I', 0, 0, 0, 1, b'N', 0xff, 0xff];
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Invalid {
                field: "column count",
                value: -1,
                ..
            })
        ));
        // A 2 GB text value length.
        let msg = [
            b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0x7f, 0xff, 0xff, 0xff, b'x',
        ];
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Truncated {
                needed: 0x7fff_ffff,
                ..
            })
        ));
        // A negative text length.
        let msg = [b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0xff, 0xff, 0xff, 0xfe];
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Invalid { value: -2, .. })
        ));
        // A truncate of 4 billion relations.
        let msg = [b'T', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1];
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Truncated { .. })
        ));
        // A relation claiming many columns.
        let mut msg = relation(1, "s", "t", b'd', &[]);
        let at = msg.len() - 2;
        msg[at..].copy_from_slice(&1000i16.to_be_bytes());
        assert!(matches!(
            Message::decode_slice(&msg),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(Message::decode_slice(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Message::decode_slice(b"Z"),
            Err(DecodeError::UnknownTag { tag: b'Z' })
        );
        // Streaming messages are not protocol version 1.
        assert!(Message::decode_slice(b"S\0\0\0\x01\x01").is_err());
        // Bad markers and kinds.
        assert!(Message::decode_slice(&[b'I', 0, 0, 0, 1, b'X', 0, 0]).is_err());
        assert!(Message::decode_slice(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'q']).is_err());
        assert!(Message::decode_slice(&[b'D', 0, 0, 0, 1, b'N', 0, 0]).is_err());
        assert!(Message::decode_slice(&[b'U', 0, 0, 0, 1, b'K', 0, 0, b'K', 0, 0]).is_err());
        let mut bad_ident = relation(1, "s", "t", b'd', &[]);
        let at = bad_ident.len() - 3;
        bad_ident[at] = b'z';
        assert!(Message::decode_slice(&bad_ident).is_err());
        // Names must be NUL-terminated UTF-8.
        assert!(matches!(
            Message::decode_slice(b"Y\0\0\0\x01public"),
            Err(DecodeError::UnterminatedString { .. })
        ));
        assert!(matches!(
            Message::decode_slice(b"Y\0\0\0\x01\xff\xfe\0t\0"),
            Err(DecodeError::InvalidUtf8 { .. })
        ));
        let err = Message::decode_slice(b"\x07").unwrap_err().to_string();
        assert!(err.contains("0x07"), "{err}");
    }
}
