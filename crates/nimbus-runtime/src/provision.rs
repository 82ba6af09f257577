//! Provisioned concurrency: N instances of a version (or of the version an alias points at)
//! started and initialised ahead of any invocation, kept while the configuration exists
//! (never reaped or evicted), and replaced when one dies (a timeout, a crash, an OOM kill).
//!
//! The API says what should exist ([`Runtime::set_provisioned`]); a reconcile pass (after each
//! change and every second) starts what is missing. An instance counts as allocated once its
//! runtime has asked for its first invocation: its init code has run.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nimbus_core::FunctionVersion;

use crate::instance::{Instance, VersionKey};
use crate::invoke::Runtime;

/// How long a provisioned instance's init may take (Lambda's init limit).
const INIT_LIMIT: Duration = Duration::from_secs(10);

/// Started at most at once per configuration, so provisioning does not starve invocations.
const PARALLEL_STARTS: u32 = 4;

pub(crate) struct Provision {
    key: VersionKey,
    version: FunctionVersion,
    requested: u32,
    instances: Vec<Weak<Instance>>,
    starting: u32,
    last_error: Option<String>,
}

/// Where a provisioned concurrency configuration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionStatus {
    pub requested: u32,
    /// Initialised instances alive now.
    pub allocated: u32,
    /// Of those, how many are serving an invocation now.
    pub busy: u32,
    /// `READY` when every requested instance is allocated, `IN_PROGRESS` while starting them,
    /// `FAILED` when the last start failed (with the reason).
    pub status: &'static str,
    pub reason: Option<String>,
}

impl Provision {
    fn alive(&self) -> Vec<Arc<Instance>> {
        self.instances
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|i| i.is_alive() && i.is_provisioned())
            .collect()
    }

    fn status(&self) -> ProvisionStatus {
        let alive = self.alive();
        let allocated = alive.len() as u32;
        let busy = alive
            .iter()
            .filter(|i| i.serving.load(Ordering::Relaxed))
            .count() as u32;
        let (status, reason) = if allocated >= self.requested {
            ("READY", None)
        } else if let Some(e) = &self.last_error {
            ("FAILED", Some(e.clone()))
        } else {
            ("IN_PROGRESS", None)
        };
        ProvisionStatus {
            requested: self.requested,
            allocated,
            busy,
            status,
            reason,
        }
    }
}

impl Runtime {
    /// Keeps `requested` initialised instances of `version` for `function:qualifier` (0 removes
    /// the configuration). A different version than before (an alias moved) replaces the old
    /// instances, which go back to being ordinary ones.
    pub fn set_provisioned(
        self: &Arc<Self>,
        function: &str,
        qualifier: &str,
        version: FunctionVersion,
        requested: u32,
    ) {
        let key = VersionKey {
            function: version.function.clone(),
            version: version.version.to_string(),
            revision_id: version.revision_id.clone(),
        };
        {
            let mut all = self.provisions.lock().unwrap_or_else(|p| p.into_inner());
            let id = (function.to_string(), qualifier.to_string());
            if requested == 0 {
                if let Some(old) = all.remove(&id) {
                    unmark(&old.alive());
                }
                return;
            }
            {
                let p = all.entry(id).or_insert_with(|| Provision {
                    key: key.clone(),
                    version: version.clone(),
                    requested,
                    instances: Vec::new(),
                    starting: 0,
                    last_error: None,
                });
                if p.key != key {
                    unmark(&p.alive());
                    p.instances.clear();
                    p.key = key;
                    p.version = version;
                }
                p.requested = requested;
                p.last_error = None;
                let alive = p.alive();
                if alive.len() > requested as usize {
                    unmark(&alive[requested as usize..]);
                }
            }
        }
        self.reconcile_provisions();
    }

    /// Drops one configuration; its instances become ordinary ones (reaped when idle).
    pub fn remove_provisioned(&self, function: &str, qualifier: &str) {
        let mut all = self.provisions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = all.remove(&(function.to_string(), qualifier.to_string())) {
            unmark(&old.alive());
        }
    }

    /// Drops every configuration of a deleted function.
    pub fn forget_provisioned(&self, function: &str) {
        let mut all = self.provisions.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(f, _), p| {
            if f == function {
                unmark(&p.alive());
            }
            f != function
        });
    }

    pub fn provisioned_status(&self, function: &str, qualifier: &str) -> Option<ProvisionStatus> {
        let all = self.provisions.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&(function.to_string(), qualifier.to_string()))
            .map(Provision::status)
    }

    /// Starts whatever is missing. Called after every change and once a second.
    pub(crate) fn reconcile_provisions(self: &Arc<Self>) {
        if self.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        let mut starts = Vec::new();
        {
            let mut all = self.provisions.lock().unwrap_or_else(|p| p.into_inner());
            for (id, p) in all.iter_mut() {
                p.instances.retain(|w| {
                    w.upgrade()
                        .is_some_and(|i| i.is_alive() && i.is_provisioned())
                });
                let have = p.instances.len() as u32 + p.starting;
                let missing = p.requested.saturating_sub(have);
                let room = PARALLEL_STARTS.saturating_sub(p.starting);
                for _ in 0..missing.min(room) {
                    p.starting += 1;
                    starts.push((id.clone(), p.key.clone(), p.version.clone()));
                }
            }
        }
        for (id, key, version) in starts {
            let rt = self.clone();
            tokio::spawn(async move {
                let made = rt.provision_one(&key, &version).await;
                let mut all = rt.provisions.lock().unwrap_or_else(|p| p.into_inner());
                let Some(p) = all.get_mut(&id) else {
                    // The configuration went away meanwhile.
                    if let Ok(inst) = made {
                        inst.provisioned.store(false, Ordering::Relaxed);
                    }
                    return;
                };
                p.starting = p.starting.saturating_sub(1);
                match made {
                    Ok(inst) if p.key == key => {
                        p.instances.push(Arc::downgrade(&inst));
                        p.last_error = None;
                    }
                    Ok(inst) => inst.provisioned.store(false, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(function = %id.0, qualifier = %id.1, error = %e, "could not start a provisioned instance");
                        p.last_error = Some(e);
                    }
                }
            });
        }
    }

    /// Starts one instance, waits until its runtime asked for work (init done), and parks it
    /// idle in the pool, marked provisioned.
    async fn provision_one(
        &self,
        key: &VersionKey,
        version: &FunctionVersion,
    ) -> Result<Arc<Instance>, String> {
        let slot = self
            .pool
            .reserve(&key.function)
            .ok_or_else(|| "the node is at its instance limit".to_string())?;
        let inst = match self.start_instance(key, version, &slot, true).await {
            Ok(i) => i,
            Err(e) => {
                self.pool.reserve_failed(slot);
                return Err(format!("{}: {}", e.error_type, e.message));
            }
        };
        let started = Instant::now();
        while inst.init_done.get().is_none() && inst.is_alive() && started.elapsed() < INIT_LIMIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = inst.init_done.get().is_some() && inst.is_alive();
        if ready {
            inst.provisioned.store(true, Ordering::Relaxed);
        }
        if let Some(dead) = self.pool.add_idle(inst.clone()) {
            dead.kill();
            return Err("the instance ended before it was initialised".into());
        }
        if !ready {
            inst.kill();
            return Err(match inst.init_error.lock().ok().and_then(|e| e.clone()) {
                Some((body, _)) => format!(
                    "init failed: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(500)
                        .collect::<String>()
                ),
                None => "the runtime did not finish its init in time".into(),
            });
        }
        Ok(inst)
    }
}

fn unmark(instances: &[Arc<Instance>]) {
    for i in instances {
        i.provisioned.store(false, Ordering::Relaxed);
    }
}
