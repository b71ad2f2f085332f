//! Transactions through a router (SRV `src/mongo/s/transaction_router.cpp`): the router
//! remembers, per session and `txnNumber`, which shards joined the transaction; a shard's
//! first statement carries `startTransaction: true` (and the transaction's `readConcern`),
//! later ones do not. The first shard that reports a write becomes the recovery shard named
//! by `recoveryToken: {recoveryShardId}` in every `ok: 1` reply (`{}` while read-only).
//! `commitTransaction` with one participant is forwarded to it; with several, the router
//! runs the two-phase commit a coordinator would (`prepareTransaction` on each participant,
//! then `commitTransaction` with the largest prepare timestamp).

use std::collections::HashMap;

use bson::{doc, Bson, Document};

use crate::commands::Ctx;

/// Per-session transaction state of one router.
#[derive(Debug, Default)]
pub(crate) struct Txns {
    sessions: parking_lot::Mutex<HashMap<Vec<u8>, TxnState>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct TxnState {
    pub(crate) txn_number: i64,
    /// Shards in the order they joined.
    pub(crate) participants: Vec<String>,
    /// Shards that wrote.
    pub(crate) writers: Vec<String>,
    /// The first writer.
    pub(crate) recovery: Option<String>,
    /// The transaction's `readConcern` (sent with each participant's first statement).
    read_concern: Option<Document>,
}

fn key(lsid: &Document) -> Vec<u8> {
    match lsid.get("id") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(other) => other.to_string().into_bytes(),
        None => Vec::new(),
    }
}

/// `body` (a command the router makes up, e.g. a lookup `find`) as a statement of the
/// client's transaction when the client's command is one.
pub(crate) fn in_client_transaction(ctx: &Ctx<'_>, mut body: Document) -> Document {
    if let (Some(lsid), Some(txn), true) = (&ctx.lsid, ctx.txn_number, in_transaction(ctx)) {
        body.insert("lsid", lsid.clone());
        body.insert("txnNumber", txn);
        body.insert("autocommit", false);
    }
    body
}

/// Whether the command is a statement of a multi-document transaction.
pub(crate) fn in_transaction(ctx: &Ctx<'_>) -> bool {
    ctx.lsid.is_some() && ctx.txn_number.is_some() && ctx.autocommit == Some(false)
}

impl Txns {
    /// Starts (on `startTransaction`) or continues the transaction of the command's session.
    pub(crate) fn begin_statement(&self, ctx: &Ctx<'_>) {
        let (Some(lsid), Some(txn)) = (&ctx.lsid, ctx.txn_number) else {
            return;
        };
        if !in_transaction(ctx) {
            return;
        }
        let mut sessions = self.sessions.lock();
        let st = sessions.entry(key(lsid)).or_default();
        if ctx.start_transaction || st.txn_number != txn {
            *st = TxnState {
                txn_number: txn,
                read_concern: ctx.read_concern.clone(),
                ..TxnState::default()
            };
        }
    }

    /// Adjusts the forwarded `body` for shard `shard`: the transaction fields, with
    /// `startTransaction` (and the read concern) only on the shard's first statement.
    pub(crate) fn for_participant(&self, ctx: &Ctx<'_>, shard: &str, body: &mut Document) {
        let (Some(lsid), true) = (&ctx.lsid, in_transaction(ctx)) else {
            return;
        };
        body.remove("startTransaction");
        body.remove("readConcern");
        let mut sessions = self.sessions.lock();
        let st = sessions.entry(key(lsid)).or_default();
        if !st.participants.iter().any(|p| p == shard) {
            st.participants.push(shard.to_string());
            body.insert("startTransaction", true);
            if let Some(rc) = &st.read_concern {
                body.insert("readConcern", rc.clone());
            }
        }
    }

    /// Records a successful write by `shard`.
    pub(crate) fn wrote(&self, ctx: &Ctx<'_>, shard: &str) {
        let (Some(lsid), true) = (&ctx.lsid, in_transaction(ctx)) else {
            return;
        };
        let mut sessions = self.sessions.lock();
        let st = sessions.entry(key(lsid)).or_default();
        if !st.writers.iter().any(|w| w == shard) {
            st.writers.push(shard.to_string());
        }
        if st.recovery.is_none() {
            st.recovery = Some(shard.to_string());
        }
    }

    /// The state of the command's session, if it has a transaction with this `txnNumber`.
    pub(crate) fn state(&self, ctx: &Ctx<'_>) -> Option<TxnState> {
        let lsid = ctx.lsid.as_ref()?;
        let st = self.sessions.lock().get(&key(lsid)).cloned()?;
        (Some(st.txn_number) == ctx.txn_number).then_some(st)
    }

    /// `recoveryToken` for a reply (SRV `TransactionRouter::Router::appendRecoveryToken`).
    pub(crate) fn recovery_token(&self, ctx: &Ctx<'_>) -> Document {
        match self.state(ctx).and_then(|s| s.recovery) {
            Some(shard) => doc! {"recoveryShardId": shard},
            None => Document::new(),
        }
    }
}
