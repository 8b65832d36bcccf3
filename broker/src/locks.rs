//! How this crate takes its std locks: a poisoned lock is used as it is. Every critical
//! section here is a lookup or a single insert/remove that leaves the data consistent even if
//! its holder panicked, so a panic elsewhere must not take the broker layer down with it.
//! No guard from here is ever held across an `.await` (`clippy::await_holding_lock` denies it).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
