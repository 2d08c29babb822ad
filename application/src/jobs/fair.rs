//! Fair shares of the server's file slots (`--concurrency`) between owners
//! (token names): a slot that frees goes to the waiting owner next in turn
//! (round-robin across owners, first come first served within one), no
//! owner holds more than its cap (`--per-owner-concurrency`), and no source
//! host more than its connection limit: a file whose host is at its limit
//! waits without holding a slot (the host's permit comes before the
//! global one), so one tenant's slow, numerous or same-host files cannot
//! take every slot from the others.
//!
//! Hand-written (about a hundred and fifty lines) because tokio's
//! `Semaphore` is one FIFO queue and no maintained crate offers a keyed
//! fair semaphore with per-key caps; the state is a few maps under one std
//! mutex, never held across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::runner::lock;

/// The slots and who holds or waits for them.
#[derive(Debug)]
pub(super) struct FairShare {
    capacity: usize,
    per_owner: usize,
    per_host: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct Waiter {
    host: String,
    tx: oneshot::Sender<FairPermit>,
}

#[derive(Debug, Default)]
struct State {
    in_use: usize,
    held: HashMap<String, usize>,
    hosts: HashMap<String, usize>,
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Owners with waiters, in turn order.
    turn: VecDeque<String>,
}

impl State {
    fn count(map: &mut HashMap<String, usize>, key: &str, up: bool) {
        if up {
            *map.entry(key.to_owned()).or_default() += 1;
        } else if let Some(n) = map.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    fn take(&mut self, owner: &str, host: &str, up: bool) {
        if up {
            self.in_use += 1;
        } else {
            self.in_use = self.in_use.saturating_sub(1);
        }
        Self::count(&mut self.held, owner, up);
        if !host.is_empty() {
            Self::count(&mut self.hosts, host, up);
        }
    }
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub(super) struct FairPermit {
    share: Arc<FairShare>,
    owner: String,
    host: String,
    armed: bool,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        if self.armed {
            let mut state = lock(&self.share.state);
            state.take(&self.owner, &self.host, false);
            self.share.hand_out(&mut state);
        }
    }
}

impl FairShare {
    /// `capacity` slots in all; at most `per_owner` held by one owner and
    /// `per_host` for one source host (each at least 1).
    pub(super) fn new(capacity: usize, per_owner: usize, per_host: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            capacity,
            per_owner: per_owner.clamp(1, capacity),
            per_host: per_host.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Waits for a slot for `owner` ("" for jobs without one) reading from
    /// `host` (an HTTP(S) source's origin; "" for sources without a
    /// connection limit: local files, S3). Dropping the future gives up its
    /// place (and any slot already handed to it).
    pub(super) async fn acquire(self: &Arc<Self>, owner: &str, host: &str) -> FairPermit {
        let rx = {
            let mut state = lock(&self.state);
            if state.waiting.is_empty() && self.fits(&state, owner, host) {
                state.take(owner, host, true);
                return self.permit(owner, host);
            }
            let (tx, rx) = oneshot::channel();
            let queue = state.waiting.entry(owner.to_owned()).or_default();
            queue.push_back(Waiter {
                host: host.to_owned(),
                tx,
            });
            if queue.len() == 1 {
                state.turn.push_back(owner.to_owned());
            }
            self.hand_out(&mut state);
            rx
        };
        match rx.await {
            Ok(permit) => permit,
            // Unreachable while `self` lives (senders are only dropped
            // after a send); wait again rather than run without a slot.
            Err(_) => Box::pin(self.acquire(owner, host)).await,
        }
    }

    fn fits(&self, state: &State, owner: &str, host: &str) -> bool {
        state.in_use < self.capacity
            && state.held.get(owner).copied().unwrap_or(0) < self.per_owner
            && (host.is_empty() || state.hosts.get(host).copied().unwrap_or(0) < self.per_host)
    }

    fn permit(self: &Arc<Self>, owner: &str, host: &str) -> FairPermit {
        FairPermit {
            share: self.clone(),
            owner: owner.to_owned(),
            host: host.to_owned(),
            armed: true,
        }
    }

    /// Gives free slots to waiters: owners in turn, skipping those at
    /// their cap; within an owner, its first waiter whose host has room.
    fn hand_out(self: &Arc<Self>, state: &mut State) {
        let mut passed = 0;
        while state.in_use < self.capacity && passed < state.turn.len() {
            let Some(owner) = state.turn.pop_front() else {
                break;
            };
            let mut queue = state.waiting.remove(&owner).unwrap_or_default();
            queue.retain(|w| !w.tx.is_closed());
            let next = queue.iter().position(|w| self.fits(state, &owner, &w.host));
            let mut given = false;
            if let Some(waiter) = next.and_then(|i| queue.remove(i)) {
                state.take(&owner, &waiter.host, true);
                match waiter.tx.send(self.permit(&owner, &waiter.host)) {
                    Ok(()) => given = true,
                    // Its waiter gave up just now: undo, without the lock
                    // re-entry a drop would cause.
                    Err(mut unused) => {
                        unused.armed = false;
                        state.take(&owner, &waiter.host, false);
                    }
                }
            }
            if !queue.is_empty() {
                state.waiting.insert(owner.clone(), queue);
                state.turn.push_back(owner);
            }
            passed = if given { 0 } else { passed + 1 };
        }
    }

    /// Slots held now by an owner (for tests).
    #[cfg(test)]
    fn held(&self, owner: &str) -> usize {
        lock(&self.state).held.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn pending(share: &Arc<FairShare>, owner: &str) -> tokio::task::JoinHandle<FairPermit> {
        let share = share.clone();
        let owner = owner.to_owned();
        let handle = tokio::spawn(async move { share.acquire(&owner, "h").await });
        tokio::task::yield_now().await;
        handle
    }

    #[tokio::test]
    async fn no_owner_passes_its_cap_and_others_get_the_rest() {
        let share = FairShare::new(4, 3, 10);
        let mut a = Vec::new();
        for _ in 0..3 {
            a.push(share.acquire("a", "h").await);
        }
        // A fourth for `a` waits although a slot is free; `b` gets it.
        let a4 = pending(&share, "a").await;
        let b1 = tokio::time::timeout(Duration::from_secs(1), share.acquire("b", "h"))
            .await
            .expect("b gets the free slot");
        assert_eq!((share.held("a"), share.held("b")), (3, 1));
        assert!(!a4.is_finished());
        drop(b1);
        // The freed slot cannot go to `a` (at its cap) until one of its own
        // ends.
        tokio::task::yield_now().await;
        assert!(!a4.is_finished());
        drop(a.pop());
        let a4 = tokio::time::timeout(Duration::from_secs(1), a4)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(share.held("a"), 3);
        drop(a4);
        drop(a);
        assert_eq!(share.held("a"), 0);
    }

    #[tokio::test]
    async fn freed_slots_go_round_robin_between_waiting_owners() {
        let share = FairShare::new(1, 1, 10);
        let first = share.acquire("a", "h").await;
        // `a` queues three, then `b` and `c` one each.
        let mut order = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for owner in ["a", "a", "a", "b", "c"] {
            let share = share.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let permit = share.acquire(owner, "h").await;
                tx.send(owner).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(permit);
            });
            tokio::task::yield_now().await;
        }
        drop(first);
        for _ in 0..5 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, ["a", "b", "c", "a", "a"]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_slot_taken() {
        let share = FairShare::new(1, 1, 10);
        let held = share.acquire("a", "h").await;
        let gone = pending(&share, "b").await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), share.acquire("c", "h"))
            .await
            .expect("the slot is free");
        assert_eq!(share.held("b"), 0);
        drop(again);
        assert_eq!(lock(&share.state).in_use, 0);
    }

    #[tokio::test]
    async fn a_file_whose_host_is_full_waits_without_a_slot() {
        let share = FairShare::new(4, 4, 2);
        let _x1 = share.acquire("a", "x").await;
        let _x2 = share.acquire("a", "x").await;
        let x3 = {
            let share = share.clone();
            tokio::spawn(async move { share.acquire("a", "x").await })
        };
        tokio::task::yield_now().await;
        assert!(!x3.is_finished(), "host x is at its limit");
        assert_eq!(lock(&share.state).in_use, 2, "the waiter holds no slot");
        // Another host of the same owner passes the waiting one.
        let y = tokio::time::timeout(Duration::from_secs(1), share.acquire("a", "y"))
            .await
            .expect("host y has room");
        drop(y);
        drop(_x1);
        let x3 = tokio::time::timeout(Duration::from_secs(1), x3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lock(&share.state).hosts.get("x"), Some(&2));
        drop(x3);
    }

    #[tokio::test]
    async fn sources_without_a_host_limit_are_not_counted_by_host() {
        let share = FairShare::new(4, 4, 1);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                tokio::time::timeout(Duration::from_secs(1), share.acquire("a", ""))
                    .await
                    .expect("no host limit for \"\""),
            );
        }
        assert!(lock(&share.state).hosts.is_empty());
        drop(held);
        assert_eq!(lock(&share.state).in_use, 0);
    }
}
