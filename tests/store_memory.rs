//! The conformance suite against [`MemoryKeyStore`].

mod common;

use common::conformance::Fixture;
use hapnd_auth::{KeyStore, MemoryKeyStore};

struct Memory(MemoryKeyStore);

impl Fixture for Memory {
    type Store = MemoryKeyStore;

    fn store(&self) -> &MemoryKeyStore {
        &self.0
    }

    async fn dump(&self, tenant: &str) -> String {
        // All the memory store can show of a tenant: its whole records.
        format!("{:?}", self.0.list(tenant).await.unwrap())
    }
}

async fn memory() -> Option<Memory> {
    Some(Memory(MemoryKeyStore::new()))
}

conformance_suite!(memory());
audit_suite!(memory());
expiry_suite!(memory());
