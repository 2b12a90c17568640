//! `get leases`: NAME HOLDER AGE.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::coordination::v1::Lease;

impl TableRow for Lease {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Holder", "The identity of the holder of a current lease."),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let holder = self
            .spec
            .as_ref()
            .map(|s| s.holder_identity.clone())
            .unwrap_or_default();
        vec![meta.name, holder, age(&meta.creation_timestamp, now)]
    }
}
