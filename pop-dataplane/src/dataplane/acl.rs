//! The source filter's maps: an LPM trie per family keyed by (interface slot, source
//! prefix), written entry by entry and read back on take-over.

use anyhow::Context as _;
use aya::maps::{LpmTrie, lpm_trie::Key};
use ipnet::IpNet;
use pop_dataplane_common::{
    acl::{AclEntry, AclKeyV4, AclKeyV6, SLOT_BITS},
    maps,
};

use super::Dataplane;
use crate::control::acl::{AclEntries, AclKey};

impl Dataplane {
    /// Sets (or, with `None`, deletes) one ACL entry.
    pub(super) fn set_acl_entry(
        &mut self,
        key: &AclKey,
        entry: Option<&AclEntry>,
    ) -> anyhow::Result<()> {
        let result = match acl_key(key) {
            AclMapKey::V4(k) => self.set_lpm(maps::ACL_V4, &k, entry),
            AclMapKey::V6(k) => self.set_lpm(maps::ACL_V6, &k, entry),
        };
        result.with_context(|| format!("the ACL entry for {} on slot {}", key.src, key.slot))
    }

    fn set_lpm<K: aya::Pod>(
        &mut self,
        name: &str,
        key: &Key<K>,
        entry: Option<&AclEntry>,
    ) -> anyhow::Result<()> {
        let mut map: LpmTrie<_, K, AclEntry> = LpmTrie::try_from(self.map_mut(name)?)?;
        let result = match entry {
            Some(entry) => map.insert(key, entry, 0),
            None => map.remove(key),
        };
        match result {
            Ok(()) => Ok(()),
            // Deleting what is not there is done.
            Err(aya::maps::MapError::KeyNotFound) if entry.is_none() => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// What the ACL maps hold (a taken-over dataplane's entries).
    pub(super) fn read_acl(&self) -> anyhow::Result<AclEntries> {
        let mut held = AclEntries::new();
        let v4: LpmTrie<_, AclKeyV4, AclEntry> = LpmTrie::try_from(self.map(maps::ACL_V4)?)?;
        for item in v4.iter() {
            let (key, entry) = item?;
            let data = key.data();
            held.insert(
                from_acl_key(data.slot, data.src.into(), key.prefix_len())?,
                entry,
            );
        }
        let v6: LpmTrie<_, AclKeyV6, AclEntry> = LpmTrie::try_from(self.map(maps::ACL_V6)?)?;
        for item in v6.iter() {
            let (key, entry) = item?;
            let data = key.data();
            held.insert(
                from_acl_key(data.slot, data.src.into(), key.prefix_len())?,
                entry,
            );
        }
        Ok(held)
    }
}

enum AclMapKey {
    V4(Key<AclKeyV4>),
    V6(Key<AclKeyV6>),
}

/// The LPM key of an entry: the slot's bits, then the source prefix's.
fn acl_key(key: &AclKey) -> AclMapKey {
    let slot = key.slot.to_be_bytes();
    match key.src {
        IpNet::V4(src) => AclMapKey::V4(Key::new(
            SLOT_BITS + u32::from(src.prefix_len()),
            AclKeyV4 {
                slot,
                src: src.network().octets(),
            },
        )),
        IpNet::V6(src) => AclMapKey::V6(Key::new(
            SLOT_BITS + u32::from(src.prefix_len()),
            AclKeyV6 {
                slot,
                src: src.network().octets(),
            },
        )),
    }
}

/// The entry a map key stands for: the slot's bits, then the source prefix's.
fn from_acl_key(slot: [u8; 4], src: std::net::IpAddr, prefix_len: u32) -> anyhow::Result<AclKey> {
    let len = prefix_len
        .checked_sub(SLOT_BITS)
        .and_then(|len| u8::try_from(len).ok())
        .context("an ACL key shorter than its slot")?;
    Ok(AclKey {
        slot: u32::from_be_bytes(slot),
        src: IpNet::new(src, len)?,
    })
}
