//! The loopback addresses of the VMs' IMDS endpoints (per-VM-address mode):
//! every VM gets its own address in `127.64.0.0/10`, and the one IMDS
//! listener tells VMs apart by the address a connection was made to.
//!
//! The range avoids `127.0.0.0/16` (127.0.0.1 and the sandbox's other
//! well-known loopback addresses) and host parts `.0` and `.255`, which some
//! clients refuse as network or broadcast addresses. An address is handed out
//! once: a process of a deleted VM that still holds its old endpoint must not
//! reach a later VM's identities. Only once all ~4 million are used does the
//! pool reuse the addresses of deleted VMs.
//!
//! Which addresses were handed out survives a restart through a persisted
//! high-water mark reserved a block at a time (one store write per
//! [`RESERVE_BLOCK`] VMs, not one per VM): after a restart, allocation
//! resumes above the mark. Pure logic; the service persists the mark.

use std::net::Ipv4Addr;

/// The first address of the range (`127.64.0.0/10`).
const BASE: u32 = u32::from_be_bytes([127, 64, 0, 0]);
/// How many addresses the range holds (a /10).
const SIZE: u32 = 1 << 22;
/// How many addresses one persisted reservation covers.
pub const RESERVE_BLOCK: u32 = 1024;

/// The address at `index` in the range.
fn address(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(BASE + index)
}

/// The index of `a` when it is in the range.
fn index(a: Ipv4Addr) -> Option<u32> {
    u32::from(a).checked_sub(BASE).filter(|i| *i < SIZE)
}

/// True for an address the pool hands out (in the range, host part not
/// `.0` or `.255`).
pub fn is_vm_address(a: Ipv4Addr) -> bool {
    index(a).is_some() && !matches!(a.octets()[3], 0 | 255)
}

/// Hands out VM addresses. The caller serialises use (IMDS's write lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    /// The next index never handed out (`SIZE` once all were).
    next: u32,
    /// Indexes below this may have been handed out (the persisted mark).
    reserved: u32,
    /// Where the search for a freed address resumes once all were handed out.
    reuse: u32,
}

impl AddressPool {
    /// The pool after a restart: above the persisted mark `reserved` and
    /// above every address still `in_use`.
    pub fn resume(reserved: u32, in_use: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        let used = in_use
            .into_iter()
            .filter_map(index)
            .map(|i| i + 1)
            .max()
            .unwrap_or(0);
        let next = reserved.max(used).min(SIZE);
        Self {
            next,
            reserved: next,
            reuse: 0,
        }
    }

    /// The mark to persist before the next address is handed out, when the
    /// current reservation is used up.
    pub fn reservation_needed(&self) -> Option<u32> {
        (self.next < SIZE && self.next >= self.reserved)
            .then(|| (self.next + RESERVE_BLOCK).min(SIZE))
    }

    /// The mark `reserved` is persisted: addresses below it may be handed out.
    pub fn reserved(&mut self, mark: u32) {
        self.reserved = self.reserved.max(mark);
    }

    /// The next address not `in_use`: a fresh one within the persisted
    /// reservation (the caller persists [`Self::reservation_needed`] first),
    /// or, once the range is used up, a freed one. `None` when every address
    /// is in use, or the reservation is used up.
    pub fn take(&mut self, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        while self.next < self.reserved.min(SIZE) {
            let a = address(self.next);
            self.next += 1;
            if is_vm_address(a) && !in_use(a) {
                return Some(a);
            }
        }
        if self.next < SIZE {
            return None;
        }
        for _ in 0..SIZE {
            let a = address(self.reuse);
            self.reuse = (self.reuse + 1) % SIZE;
            if is_vm_address(a) && !in_use(a) {
                return Some(a);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes one address as the service does: reserve, then take.
    fn take(pool: &mut AddressPool, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        if let Some(mark) = pool.reservation_needed() {
            pool.reserved(mark);
        }
        pool.take(in_use)
    }

    #[test]
    fn addresses_start_above_127_64_and_skip_0_and_255() {
        let mut pool = AddressPool::resume(0, []);
        let got: Vec<Ipv4Addr> = (0..256)
            .map(|_| take(&mut pool, |_| false).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(127, 64, 0, 1));
        assert_eq!(got[253], Ipv4Addr::new(127, 64, 0, 254));
        assert_eq!(got[254], Ipv4Addr::new(127, 64, 1, 1));
        assert!(got.iter().all(|a| is_vm_address(*a)));
        assert!(!is_vm_address(Ipv4Addr::LOCALHOST));
        assert!(!is_vm_address(Ipv4Addr::new(127, 64, 3, 0)));
        assert!(
            !is_vm_address(Ipv4Addr::new(127, 128, 0, 1)),
            "past the /10"
        );
        assert!(is_vm_address(Ipv4Addr::new(127, 127, 255, 254)));
    }

    #[test]
    fn nothing_is_handed_out_beyond_the_persisted_reservation() {
        let mut pool = AddressPool::resume(0, []);
        assert_eq!(pool.reservation_needed(), Some(RESERVE_BLOCK));
        assert_eq!(pool.take(|_| false), None, "not reserved yet");
        pool.reserved(RESERVE_BLOCK);
        let mut n = 0;
        // (The last index of the block is a .255, skipped: a take that finds
        // nothing within the reservation says so, and the caller reserves more.)
        while pool.reservation_needed().is_none() {
            n += u32::from(pool.take(|_| false).is_some());
        }
        // Four .0/.255 pairs in 1024 indexes are skipped.
        assert_eq!(n, RESERVE_BLOCK - 8);
        assert_eq!(pool.reservation_needed(), Some(2 * RESERVE_BLOCK));
    }

    /// After a restart no address below the mark is handed out again, even
    /// when the VMs that held them are gone.
    #[test]
    fn a_restart_resumes_above_the_mark_and_every_address_in_use() {
        let mut pool = AddressPool::resume(0, []);
        let first = take(&mut pool, |_| false).unwrap();
        let mark = pool.reserved;
        let after = AddressPool::resume(mark, []);
        let mut after2 = after.clone();
        let next = take(&mut after2, |_| false).unwrap();
        assert!(
            index(next).unwrap() >= mark,
            "{next} reuses a reserved address"
        );
        assert_ne!(next, first);
        // A record above the mark (a mark lost with an old data dir) wins.
        let high = Ipv4Addr::new(127, 70, 0, 1);
        let mut p = AddressPool::resume(mark, [high, Ipv4Addr::LOCALHOST]);
        assert!(take(&mut p, |_| false).unwrap() > high);
    }

    #[test]
    fn a_used_up_range_reuses_only_free_addresses() {
        let mut pool = AddressPool::resume(SIZE, []);
        assert_eq!(pool.reservation_needed(), None);
        let taken = Ipv4Addr::new(127, 64, 0, 1);
        assert_eq!(
            pool.take(|a| a == taken),
            Some(Ipv4Addr::new(127, 64, 0, 2))
        );
        assert_eq!(pool.take(|_| true), None, "every address in use");
    }
}
