//! The concurrency budget: how many agent requests (execs, streams, file transfers) may be
//! in flight at once per sandbox, per tenant and on the whole server. Past any of them a
//! request is refused at once (429 `busy`), never queued, so one tenant cannot starve
//! another and the supervisor's memory stays bounded.

use crate::domain::{SandboxId, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The three ceilings.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub per_sandbox: usize,
    pub per_tenant: usize,
    pub total: usize,
}

/// Which ceiling was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("sandbox {0} already has {1} requests in flight")]
    Sandbox(SandboxId, usize),
    #[error("tenant {0} already has {1} requests in flight")]
    Tenant(TenantId, usize),
    #[error("the server already has {0} requests in flight")]
    Server(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    tenants: HashMap<TenantId, usize>,
    sandboxes: HashMap<SandboxId, usize>,
}

pub struct Budget {
    limits: BudgetLimits,
    counts: Mutex<Counts>,
}

/// One request's share of the budget, given back when dropped.
pub struct Permit {
    budget: Arc<Budget>,
    tenant: TenantId,
    sandbox: SandboxId,
}

impl Budget {
    pub fn new(limits: BudgetLimits) -> Arc<Self> {
        Arc::new(Budget {
            limits,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn try_acquire(
        self: &Arc<Self>,
        tenant: &TenantId,
        sandbox: &SandboxId,
    ) -> Result<Permit, Exhausted> {
        let mut c = self.counts();
        let l = self.limits;
        if c.total >= l.total {
            return Err(Exhausted::Server(l.total));
        }
        if c.tenants.get(tenant).copied().unwrap_or(0) >= l.per_tenant {
            return Err(Exhausted::Tenant(tenant.clone(), l.per_tenant));
        }
        if c.sandboxes.get(sandbox).copied().unwrap_or(0) >= l.per_sandbox {
            return Err(Exhausted::Sandbox(sandbox.clone(), l.per_sandbox));
        }
        c.total += 1;
        *c.tenants.entry(tenant.clone()).or_default() += 1;
        *c.sandboxes.entry(sandbox.clone()).or_default() += 1;
        Ok(Permit {
            budget: self.clone(),
            tenant: tenant.clone(),
            sandbox: sandbox.clone(),
        })
    }

    /// Requests in flight on the whole server.
    pub fn in_flight(&self) -> usize {
        self.counts().total
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.budget.counts();
        c.total -= 1;
        release(&mut c.tenants, &self.tenant);
        release(&mut c.sandboxes, &self.sandbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ceiling_refuses_and_a_dropped_permit_frees_its_place() {
        let budget = Budget::new(BudgetLimits {
            per_sandbox: 2,
            per_tenant: 3,
            total: 4,
        });
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let (s1, s2, s3) = (
            SandboxId::generate(),
            SandboxId::generate(),
            SandboxId::generate(),
        );
        let p1 = budget.try_acquire(&a, &s1).unwrap();
        let _p2 = budget.try_acquire(&a, &s1).unwrap();
        assert!(matches!(
            budget.try_acquire(&a, &s1),
            Err(Exhausted::Sandbox(..))
        ));
        let _p3 = budget.try_acquire(&a, &s2).unwrap();
        assert!(matches!(
            budget.try_acquire(&a, &s2),
            Err(Exhausted::Tenant(..))
        ));
        let _p4 = budget.try_acquire(&b, &s3).unwrap();
        assert!(matches!(
            budget.try_acquire(&b, &s3),
            Err(Exhausted::Server(4))
        ));
        drop(p1);
        assert_eq!(budget.in_flight(), 3);
        let _again = budget.try_acquire(&a, &s1).unwrap();
        drop(_again);
        drop(_p2);
        assert!(
            !budget.counts().sandboxes.contains_key(&s1),
            "an idle sandbox leaves no entry behind"
        );
    }
}
