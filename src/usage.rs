//! Where "last used" is recorded: write-behind, batched, bounded, off the hit path.
//!
//! A key in use is reloaded from the store at least once per cache TTL, so noting a use
//! whenever the store returns an active key dates every key's last use to within one TTL
//! without touching the hit path. Uses are merged per key and written in batches every
//! interval by one background task; when more distinct keys are pending than the bound,
//! the surplus is dropped (and counted) rather than queued without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::store::{KeyId, LastUsed};

pub(crate) struct UsageRecorder {
    pending: Mutex<HashMap<KeyId, SystemTime>>,
    bound: usize,
    pub(crate) interval: Duration,
    started: AtomicBool,
    dropped: AtomicU64,
}

impl UsageRecorder {
    pub(crate) fn new(interval: Duration, bound: usize) -> Self {
        UsageRecorder {
            pending: Mutex::new(HashMap::new()),
            bound,
            interval,
            started: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Notes a use; returns true the first time, when the caller should start the flusher.
    pub(crate) fn note(&self, id: &KeyId, at: SystemTime) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = pending.get_mut(id) {
            *seen = (*seen).max(at);
        } else if pending.len() < self.bound {
            pending.insert(id.clone(), at);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(pending);
        !self.started.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn take(&self) -> Vec<LastUsed> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .drain()
            .map(|(id, at)| LastUsed { id, at })
            .collect()
    }

    /// Puts a batch back after a failed write, so a store outage loses nothing it can keep.
    pub(crate) fn restore(&self, batch: Vec<LastUsed>) {
        for used in batch {
            self.note(&used.id, used.at);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
