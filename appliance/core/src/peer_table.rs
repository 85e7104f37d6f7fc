//! The peer table: every configured client, found by public key (handshake
//! initiations), by session index (every other WireGuard message), and by its pool
//! address (cryptokey routing of outbound packets).
//!
//! Generic over the per-peer session state `S` so the indices can be tested without
//! any cryptography. One peer owns one pool address (a /32), so the address index is
//! an exact-match map rather than a longest-prefix trie.

use crate::config::Peer;
use crate::keys::PublicKey;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// WireGuard session indices carry the peer's 24-bit index in their top bits
/// (boringtun shifts the index given to `Tunn::new` left by 8).
pub const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// A slot in the table; stable for the peer's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(usize);

pub struct Entry<S> {
    pub peer: Peer,
    /// The peer's 24-bit index (the high bits of its session indices).
    pub index: u32,
    pub session: S,
}

pub struct PeerTable<S> {
    slots: Vec<Option<Entry<S>>>,
    free: Vec<usize>,
    by_key: HashMap<PublicKey, PeerId>,
    by_addr: HashMap<Ipv4Addr, PeerId>,
    by_index: HashMap<u32, PeerId>,
    next_index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("public key already in the table")]
    DuplicateKey,
    #[error("address {0} already belongs to another peer")]
    DuplicateAddress(Ipv4Addr),
}

impl<S> PeerTable<S> {
    /// `index_seed` picks where index allocation starts, so that indices differ
    /// across restarts (a stale client message then finds no session).
    pub fn new(index_seed: u32) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            by_index: HashMap::new(),
            next_index: index_seed & INDEX_MASK,
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Add a peer; `make` builds its session given the allocated 24-bit index.
    pub fn insert(
        &mut self,
        peer: Peer,
        make: impl FnOnce(u32) -> S,
    ) -> Result<PeerId, InsertError> {
        if self.by_key.contains_key(&peer.public_key) {
            return Err(InsertError::DuplicateKey);
        }
        if self.by_addr.contains_key(&peer.address) {
            return Err(InsertError::DuplicateAddress(peer.address));
        }
        let index = self.allocate_index();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let id = PeerId(slot);
        self.by_key.insert(peer.public_key, id);
        self.by_addr.insert(peer.address, id);
        self.by_index.insert(index, id);
        self.slots[slot] = Some(Entry {
            session: make(index),
            peer,
            index,
        });
        Ok(id)
    }

    fn allocate_index(&mut self) -> u32 {
        // 2^24 indices against at most a few thousand peers: a free one is near.
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index + 1) & INDEX_MASK;
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    pub fn remove(&mut self, id: PeerId) -> Option<Entry<S>> {
        let entry = self.slots.get_mut(id.0)?.take()?;
        self.by_key.remove(&entry.peer.public_key);
        self.by_addr.remove(&entry.peer.address);
        self.by_index.remove(&entry.index);
        self.free.push(id.0);
        Some(entry)
    }

    pub fn get(&self, id: PeerId) -> Option<&Entry<S>> {
        self.slots.get(id.0)?.as_ref()
    }
    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut Entry<S>> {
        self.slots.get_mut(id.0)?.as_mut()
    }
    pub fn by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }
    pub fn by_addr(&self, addr: Ipv4Addr) -> Option<PeerId> {
        self.by_addr.get(&addr).copied()
    }
    /// The peer a received message belongs to, from its receiver index.
    pub fn by_receiver_index(&self, receiver_idx: u32) -> Option<PeerId> {
        self.by_index.get(&(receiver_idx >> 8)).copied()
    }
    /// Change a peer's name and address in place (its session is kept).
    pub fn update(&mut self, id: PeerId, peer: Peer) -> Result<(), InsertError> {
        let entry = self
            .slots
            .get(id.0)
            .and_then(Option::as_ref)
            .expect("valid id");
        if entry.peer.public_key != peer.public_key {
            return Err(InsertError::DuplicateKey);
        }
        if let Some(other) = self.by_addr.get(&peer.address) {
            if *other != id {
                return Err(InsertError::DuplicateAddress(peer.address));
            }
        }
        let old_addr = entry.peer.address;
        self.by_addr.remove(&old_addr);
        self.by_addr.insert(peer.address, id);
        self.slots[id.0].as_mut().expect("valid id").peer = peer;
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &Entry<S>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (PeerId(i), e)))
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PeerId, &mut Entry<S>)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| e.as_mut().map(|e| (PeerId(i), e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use proptest::prelude::*;

    fn peer(k: u8, addr: u8) -> Peer {
        Peer {
            name: format!("p{k}"),
            public_key: PrivateKey::from_bytes([k; 32]).public_key(),
            preshared_key: None,
            address: Ipv4Addr::new(10, 0, 0, addr),
        }
    }

    #[test]
    fn lookups_by_key_address_and_index() {
        let mut t = PeerTable::new(0xfffffe);
        let a = t.insert(peer(1, 250), |i| i).unwrap();
        let b = t.insert(peer(2, 251), |i| i).unwrap();
        assert_eq!(t.get(a).unwrap().index, 0xfffffe);
        assert_eq!(t.get(b).unwrap().index, 0xffffff);
        let c = t.insert(peer(3, 252), |i| i).unwrap();
        assert_eq!(t.get(c).unwrap().index, 0, "indices wrap at 24 bits");
        assert_eq!(t.by_key(&peer(2, 0).public_key), Some(b));
        assert_eq!(t.by_addr(Ipv4Addr::new(10, 0, 0, 250)), Some(a));
        // Session index = peer index << 8 | rotating low byte.
        assert_eq!(t.by_receiver_index((0xffffff << 8) | 0x17), Some(b));
        assert_eq!(t.by_receiver_index(0x1234 << 8), None);
    }

    #[test]
    fn duplicates_rejected_and_removal_frees_everything() {
        let mut t = PeerTable::new(0);
        let a = t.insert(peer(1, 250), |_| ()).unwrap();
        assert_eq!(
            t.insert(peer(1, 251), |_| ()).unwrap_err(),
            InsertError::DuplicateKey
        );
        assert!(matches!(
            t.insert(peer(2, 250), |_| ()),
            Err(InsertError::DuplicateAddress(_))
        ));
        let idx = t.get(a).unwrap().index;
        t.remove(a).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.by_receiver_index(idx << 8), None);
        assert_eq!(t.by_addr(Ipv4Addr::new(10, 0, 0, 250)), None);
        assert!(t.remove(a).is_none());
        t.insert(peer(2, 250), |_| ()).unwrap();
    }

    #[test]
    fn update_moves_address() {
        let mut t = PeerTable::new(0);
        let a = t.insert(peer(1, 250), |_| ()).unwrap();
        t.insert(peer(2, 251), |_| ()).unwrap();
        assert!(t.update(a, peer(1, 251)).is_err());
        t.update(a, peer(1, 252)).unwrap();
        assert_eq!(t.by_addr(Ipv4Addr::new(10, 0, 0, 252)), Some(a));
        assert_eq!(t.by_addr(Ipv4Addr::new(10, 0, 0, 250)), None);
    }

    proptest! {
        // Random inserts and removes against a naive list: every index agrees.
        #[test]
        fn agrees_with_naive_reference(ops in proptest::collection::vec((any::<bool>(), 1u8..40, 1u8..40), 1..200)) {
            let mut t = PeerTable::new(7);
            let mut naive: Vec<(Peer, PeerId)> = Vec::new();
            for (add, k, a) in ops {
                if add {
                    let p = peer(k, a);
                    let clash = naive.iter().any(|(q, _)| q.public_key == p.public_key || q.address == p.address);
                    let r = t.insert(p.clone(), |_| ());
                    prop_assert_eq!(r.is_ok(), !clash);
                    if let Ok(id) = r { naive.push((p, id)); }
                } else if let Some(pos) = naive.iter().position(|(q, _)| q.public_key == peer(k, 0).public_key) {
                    let (_, id) = naive.remove(pos);
                    prop_assert!(t.remove(id).is_some());
                }
                prop_assert_eq!(t.len(), naive.len());
                for (p, id) in &naive {
                    prop_assert_eq!(t.by_key(&p.public_key), Some(*id));
                    prop_assert_eq!(t.by_addr(p.address), Some(*id));
                    let idx = t.get(*id).unwrap().index;
                    prop_assert_eq!(t.by_receiver_index(idx << 8 | 3), Some(*id));
                }
            }
        }
    }
}
