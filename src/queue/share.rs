//! Fair shares of a queue's places among tenants (API keys).
//!
//! A tenant alone may take every place of a queue. While more than one is
//! waiting for it, none may hold more than its share: the queue's capacity
//! times its weight over the sum of the waiting tenants' weights (at least
//! one place each). A tenant is waiting while it holds places (queued or
//! reserved jobs) or was turned away within the last [`CONTENDING`], so a
//! tenant that found the queue full is counted at once: the places its
//! rival gives back as jobs start go to it, not back to the rival. The
//! refused get [`super::QueueError::FairShare`] (429, naming the limit).
//! Requests without a tenant (keys off) never come here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::tenants::Tenant;

/// How long a tenant that asked for a place counts as waiting for one.
pub const CONTENDING: Duration = Duration::from_secs(5);

/// One tenant's standing in one queue.
#[derive(Debug)]
struct Standing {
    held: usize,
    weight: u32,
    asked: Instant,
}

/// The places each tenant holds in one queue.
#[derive(Debug, Default)]
pub struct Shares {
    tenants: Mutex<HashMap<Arc<str>, Standing>>,
}

/// A tenant's hold on one place; dropped when the place is freed (the job
/// left the queue, or the reservation was given back).
#[derive(Debug)]
pub struct ShareHold {
    shares: Arc<Shares>,
    tenant: Arc<str>,
}

impl Drop for ShareHold {
    fn drop(&mut self) {
        if let Some(standing) = self.shares.tenants.lock().get_mut(&self.tenant) {
            standing.held = standing.held.saturating_sub(1);
        }
    }
}

impl Shares {
    /// Takes a place for `tenant` if it is under its share: `take` is the
    /// queue's own reservation, run under the shares' lock so that the
    /// check and the taking are one step. `Err(Some(share))`: over its
    /// share; `Err(None)`: `take` refused (the queue is full).
    pub(super) fn take<T, E>(
        self: &Arc<Self>,
        tenant: &Tenant,
        capacity: usize,
        take: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, ShareHold), Result<usize, E>> {
        let now = Instant::now();
        let mut tenants = self.tenants.lock();
        tenants.retain(|_, s| s.held > 0 || now.duration_since(s.asked) < CONTENDING);
        let standing = tenants.entry(Arc::clone(&tenant.name)).or_insert(Standing {
            held: 0,
            weight: tenant.weight,
            asked: now,
        });
        standing.asked = now;
        standing.weight = tenant.weight;
        let held = standing.held;
        if tenants.len() > 1 {
            let total: u64 = tenants.values().map(|s| u64::from(s.weight)).sum();
            let share = (capacity as u64 * u64::from(tenant.weight) / total.max(1)).max(1) as usize;
            if held >= share {
                return Err(Ok(share));
            }
        }
        let taken = take().map_err(Err)?;
        if let Some(standing) = tenants.get_mut(&tenant.name) {
            standing.held += 1;
        }
        Ok((
            taken,
            ShareHold {
                shares: Arc::clone(self),
                tenant: Arc::clone(&tenant.name),
            },
        ))
    }

    /// Places held now, by tenant (tenants holding none left out).
    pub fn held(&self) -> Vec<(String, usize)> {
        let mut held: Vec<_> = self
            .tenants
            .lock()
            .iter()
            .filter(|(_, s)| s.held > 0)
            .map(|(name, s)| (name.to_string(), s.held))
            .collect();
        held.sort();
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, weight: u32) -> Tenant {
        Tenant {
            name: name.into(),
            weight,
        }
    }

    /// A queue of `capacity` places, counted by hand.
    fn room(
        taken: &std::cell::Cell<usize>,
        capacity: usize,
    ) -> impl FnOnce() -> Result<(), ()> + '_ {
        move || {
            if taken.get() < capacity {
                taken.set(taken.get() + 1);
                Ok(())
            } else {
                Err(())
            }
        }
    }

    #[test]
    fn a_tenant_alone_takes_every_place_and_a_second_one_gets_the_places_freed() {
        let shares = Arc::new(Shares::default());
        let taken = std::cell::Cell::new(0);
        let (a, b) = (tenant("a", 1), tenant("b", 1));
        let mut holds: Vec<ShareHold> = (0..8)
            .map(|_| shares.take(&a, 8, room(&taken, 8)).unwrap().1)
            .collect();
        assert_eq!(shares.held(), [("a".to_string(), 8)]);
        // b finds the queue full, and is now waiting.
        assert!(matches!(shares.take(&b, 8, room(&taken, 8)), Err(Err(()))));
        // a's jobs start one by one: a may not take the places back
        // while it holds more than half.
        holds.pop();
        taken.set(taken.get() - 1);
        assert!(matches!(shares.take(&a, 8, room(&taken, 8)), Err(Ok(4))));
        let b_hold = shares.take(&b, 8, room(&taken, 8)).unwrap().1;
        assert_eq!(shares.held(), [("a".to_string(), 7), ("b".to_string(), 1)]);
        drop(b_hold);
        drop(holds);
        assert_eq!(shares.held(), Vec::<(String, usize)>::new());
    }

    #[test]
    fn shares_follow_the_weights_and_every_tenant_gets_at_least_one_place() {
        let shares = Arc::new(Shares::default());
        let taken = std::cell::Cell::new(0);
        let (heavy, light) = (tenant("heavy", 3), tenant("light", 1));
        let _light = shares.take(&light, 8, room(&taken, 100)).unwrap();
        let held: Vec<_> = std::iter::from_fn(|| shares.take(&heavy, 8, room(&taken, 100)).ok())
            .take(100)
            .collect();
        assert_eq!(held.len(), 6, "3/4 of 8");
        let tiny = Arc::new(Shares::default());
        let many: Vec<Tenant> = (0..5).map(|i| tenant(&format!("t{i}"), 1)).collect();
        let holds: Vec<_> = many
            .iter()
            .map(|t| tiny.take(t, 2, room(&taken, 100)).unwrap())
            .collect();
        assert_eq!(holds.len(), 5, "a share is never below one place");
    }
}
