//! Client sessions per branch (and per agent) for the pages, counted in
//! parallel and kept a few seconds: a count asks a server (a connection
//! each), and every open tab asks for its page again every 3 seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgfork_engine::view::BranchInfo;

/// How long a count is shown before it is taken again.
const FRESH: Duration = Duration::from_secs(10);
/// Counts taken at once.
const AT_ONCE: usize = 8;

/// Recent counts, by branch.
#[derive(Default)]
pub struct SessionCounts {
    map: Mutex<HashMap<String, (Instant, Option<i64>)>>,
}

impl SessionCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<i64>)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A count kept under `key` (such as `agent:NAME`), taken by `count`
    /// when the kept one is older than [`FRESH`].
    pub fn one(&self, key: &str, count: impl FnOnce() -> Option<i64>) -> Option<i64> {
        if let Some((at, n)) = self.lock().get(key)
            && at.elapsed() < FRESH
        {
            return *n;
        }
        let n = count();
        self.lock().insert(key.to_string(), (Instant::now(), n));
        n
    }

    /// The client sessions on each of `branches` (`None` for one that is
    /// not running or cannot be asked), at most [`FRESH`] old.
    pub fn of(&self, branches: &[BranchInfo]) -> Vec<Option<i64>> {
        let mut out = vec![None; branches.len()];
        let mut stale = Vec::new();
        {
            let map = self.lock();
            for (i, b) in branches.iter().enumerate() {
                if b.status != "running" {
                    continue;
                }
                match map.get(&b.name) {
                    Some((at, n)) if at.elapsed() < FRESH => out[i] = *n,
                    _ => stale.push(i),
                }
            }
        }
        if stale.is_empty() {
            return out;
        }
        let per_thread = stale.len().div_ceil(AT_ONCE);
        let counted: Vec<(usize, Option<i64>)> = std::thread::scope(|s| {
            let workers: Vec<_> = stale
                .chunks(per_thread)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| {
                                let n = pgfork_engine::activity::client_sessions(&branches[i]);
                                (i, n.ok())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let now = Instant::now();
        let mut map = self.lock();
        // Deleted branches' counts go after a while.
        map.retain(|_, (at, _)| at.elapsed() < FRESH * 6);
        for (i, n) in counted {
            out[i] = n;
            map.insert(branches[i].name.clone(), (now, n));
        }
        out
    }
}
