//! Dedup ids in the metadata store: reserving them before the append, confirming them after,
//! settling what a crash left, looking them up (under every key's tag when encryption is on)
//! and forgetting expired ones.

use redb::{ReadableDatabase, ReadableTable};

use super::{
    DEDUP, DEDUP_EXPIRY, DEDUP_PENDING, DedupRow, MetaStore, StoredDedupId, decode, encode,
};
use crate::EmbeddedError;

impl MetaStore {
    /// Dedup rows of publisher-given ids, keyed as stored: (stored id, expiry, row bytes).
    pub(super) fn dedup_rows(
        &self,
        rows: &[(String, DedupRow)],
    ) -> Result<Vec<(String, i64, Vec<u8>)>, EmbeddedError> {
        rows.iter()
            .map(|(id, row)| Ok((self.sealing.dedup_key(id), row.expires_ms, encode(row)?)))
            .collect()
    }

    /// Reserves dedup ids (as given by publishers) before their messages are appended (rows
    /// with `pending_from`).
    pub(crate) fn reserve_dedup(
        &self,
        topic: &str,
        rows: &[(String, DedupRow)],
    ) -> Result<(), EmbeddedError> {
        let rows = self.dedup_rows(rows)?;
        self.write(|txn| {
            let mut table = txn.open_table(DEDUP)?;
            let mut expiry = txn.open_table(DEDUP_EXPIRY)?;
            let mut pending = txn.open_table(DEDUP_PENDING)?;
            for (id, expires, bytes) in &rows {
                table.insert((topic, id.as_str()), bytes.as_slice())?;
                expiry.insert((*expires, topic, id.as_str()), ())?;
                pending.insert((topic, id.as_str()), ())?;
            }
            Ok(())
        })
    }

    /// Reservations a crash left unconfirmed: (topic, stored dedup id, row).
    pub(crate) fn pending_dedup(
        &self,
    ) -> Result<Vec<(String, StoredDedupId, DedupRow)>, EmbeddedError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let pending = txn.open_table(DEDUP_PENDING).map_err(EmbeddedError::meta)?;
        let table = txn.open_table(DEDUP).map_err(EmbeddedError::meta)?;
        let mut out = Vec::new();
        for entry in pending.iter().map_err(EmbeddedError::meta)? {
            let (key, _) = entry.map_err(EmbeddedError::meta)?;
            let (topic, id) = key.value();
            if let Some(row) = table.get((topic, id)).map_err(EmbeddedError::meta)? {
                out.push((
                    topic.to_owned(),
                    StoredDedupId(id.to_owned()),
                    decode("dedup", row.value())?,
                ));
            }
        }
        Ok(out)
    }

    /// Settles a reservation after a crash: confirms it at `offset`, or drops it (`None`: the
    /// append never happened, so a retry must store the message).
    pub(crate) fn resolve_dedup(
        &self,
        topic: &str,
        id: &StoredDedupId,
        row: Option<&DedupRow>,
    ) -> Result<(), EmbeddedError> {
        let id = id.0.as_str();
        let bytes = row.map(encode).transpose()?;
        self.write(|txn| {
            let mut table = txn.open_table(DEDUP)?;
            match &bytes {
                Some(bytes) => {
                    table.insert((topic, id), bytes.as_slice())?;
                }
                None => {
                    table.remove((topic, id))?;
                }
            }
            txn.open_table(DEDUP_PENDING)?.remove((topic, id))?;
            Ok(())
        })
    }

    /// The entry of a publisher-given dedup id, under whichever key it was stored (the
    /// current key's tag is tried first; an expired entry under it wins over older ones).
    pub(crate) fn dedup(&self, topic: &str, id: &str) -> Result<Option<DedupRow>, EmbeddedError> {
        // The read lock is held until the transaction ends, so `close` waits for it.
        let db = self.db()?;
        let txn = db.begin_read().map_err(EmbeddedError::meta)?;
        let table = txn.open_table(DEDUP).map_err(EmbeddedError::meta)?;
        for stored in self.sealing.dedup_lookup_keys(id) {
            let value = table
                .get((topic, stored.as_str()))
                .map_err(EmbeddedError::meta)?;
            if let Some(value) = value {
                return decode("dedup", value.value()).map(Some);
            }
        }
        Ok(None)
    }

    /// Deletes dedup entries that expired by `now_ms`; returns how many.
    pub(crate) fn sweep_dedup(&self, now_ms: i64) -> Result<usize, EmbeddedError> {
        self.write_with(false, |txn| {
            let mut expiry = txn.open_table(DEDUP_EXPIRY)?;
            let mut table = txn.open_table(DEDUP)?;
            let mut gone = Vec::new();
            for entry in expiry.range((i64::MIN, "", "")..(now_ms, "", ""))? {
                let (k, _) = entry?;
                let (at, topic, id) = k.value();
                gone.push((at, topic.to_owned(), id.to_owned()));
            }
            for (at, topic, id) in &gone {
                expiry.remove((*at, topic.as_str(), id.as_str()))?;
                // A newer entry for the same id (stored after this one expired) has a later expiry.
                let current = table
                    .get((topic.as_str(), id.as_str()))?
                    .map(|v| decode::<DedupRow>("dedup", v.value()))
                    .transpose()?;
                if current.is_some_and(|row| row.expires_ms <= *at) {
                    table.remove((topic.as_str(), id.as_str()))?;
                }
            }
            Ok(gone.len())
        })
    }
}
