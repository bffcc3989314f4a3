//! Instances of a service kept for reuse by the futures of a layer.
//!
//! A layer whose response future may call its inner service again (a retry, an attempt at
//! another provider) needs an instance of that service of its own. tower's way is to clone
//! the inner service for every call; for a deep stack that clone is the most expensive
//! thing the layer does (every layer's shared state is a reference count to update, a boxed
//! stack allocates, and all of it is undone when the future ends).
//!
//! [`Instances`] keeps a template and the instances that have already made a call: a future
//! [takes](Instances::take) one when it needs it (a clone of the template only when none is
//! kept), drives it to ready, calls it, and [gives it back](Instances::give_back). An
//! instance is given back only after `call` consumed its readiness, so a kept one holds
//! nothing that readiness reserved (a permit, a slot); one whose readiness failed, or whose
//! future was dropped before calling, is dropped instead. At most [`Instances::KEPT`] are
//! kept.
//!
//! # Example
//!
//! ```
//! use brace_core::instances::Instances;
//! use tower::{Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let instances = Instances::new(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n + 1) }));
//! let mut service = instances.take();
//! let answer = service.ready().await.unwrap().call(1).await.unwrap();
//! assert_eq!(answer, 2);
//! // Called: its readiness is spent, so the next caller may take it.
//! instances.give_back(service);
//! # }
//! ```

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// A service's template and the used instances kept for the next caller: see the
/// [module docs](self).
pub struct Instances<S> {
    kept: Mutex<Kept<S>>,
}

struct Kept<S> {
    template: S,
    idle: Vec<S>,
}

impl<S> Instances<S> {
    /// How many used instances are kept at most.
    pub const KEPT: usize = 8;

    /// Instances cloned from `template`.
    pub fn new(template: S) -> Self {
        Self {
            kept: Mutex::new(Kept {
                template,
                idle: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept<S>> {
        // Nothing here can be left half-done by a panic: a poisoned lock is still sound.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `used` — an instance whose `call` consumed its readiness — for the next
    /// caller, or drops it (outside the lock) when [`KEPT`](Self::KEPT) are kept already.
    pub fn give_back(&self, used: S) {
        let surplus = {
            let mut kept = self.lock();
            if kept.idle.len() < Self::KEPT {
                kept.idle.push(used);
                None
            } else {
                Some(used)
            }
        };
        drop(surplus);
    }
}

impl<S: Clone> Instances<S> {
    /// An instance to drive to ready and call: a kept one, else a clone of the template.
    pub fn take(&self) -> S {
        let mut kept = self.lock();
        match kept.idle.pop() {
            Some(instance) => instance,
            None => kept.template.clone(),
        }
    }
}

impl<S> fmt::Debug for Instances<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instances")
            .field("kept", &self.lock().idle.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::SeqCst);
            Self(self.0.clone())
        }
    }

    #[test]
    fn a_given_back_instance_is_taken_again_instead_of_a_clone() {
        let clones = Arc::new(AtomicUsize::new(0));
        let instances = Instances::new(Counted(clones.clone()));
        for _ in 0..10 {
            let used = instances.take();
            instances.give_back(used);
        }
        assert_eq!(clones.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn at_most_kept_instances_are_kept() {
        let clones = Arc::new(AtomicUsize::new(0));
        let instances = Instances::new(Counted(clones.clone()));
        let taken: Vec<_> = (0..12).map(|_| instances.take()).collect();
        assert_eq!(clones.load(Ordering::SeqCst), 12);
        for used in taken {
            instances.give_back(used);
        }
        let again: Vec<_> = (0..12).map(|_| instances.take()).collect();
        assert_eq!(again.len(), 12);
        // Eight came back from the kept ones; four more had to be cloned.
        assert_eq!(clones.load(Ordering::SeqCst), 16);
    }
}
