//! Poison-tolerant lock helpers, used by every module of the target.
//!
//! A poisoned lock means another thread panicked while holding it; the
//! data it guards is still structurally valid (every mutation here is a
//! single insert or remove), so carry on rather than take the whole target
//! down. They live apart from the registry so that modules which only need
//! a lock (sockets, connection limits) do not depend on it.

use std::sync::{Mutex, RwLock};

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
