//! Human-readable sizes. Filled in by the backend work.
