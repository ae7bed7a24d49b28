//! A process-wide limit on how many VMs run at once.
//!
//! Under TCG each vCPU is one busy host thread; on a 2-core machine more than two booting VMs
//! slow every boot down (four at once double the boot time). [`Slot::acquire`] blocks until
//! fewer than [`max_vms`] slots are taken; dropping the slot frees it. The test harness runs
//! tests on threads of one process, so this bounds the whole suite.

use std::sync::{Condvar, Mutex, PoisonError};

static TAKEN: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// VMs allowed at once: `TETHER_E2E_MAX_VMS`, default 2.
pub fn max_vms() -> usize {
    std::env::var("TETHER_E2E_MAX_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1)
}

/// One taken slot; freed on drop.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// Waits for a free slot and takes it.
    pub fn acquire() -> Slot {
        let max = max_vms();
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken >= max {
            taken = FREED.wait(taken).unwrap_or_else(PoisonError::into_inner);
        }
        *taken += 1;
        Slot(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        *taken = taken.saturating_sub(1);
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn no_more_than_max_slots_are_held_at_once() {
        let max = max_vms();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..max * 3)
            .map(|_| {
                let (running, peak) = (running.clone(), peak.clone());
                std::thread::spawn(move || {
                    let _slot = Slot::acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), max);
    }
}
