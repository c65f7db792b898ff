//! Block backends. Filled in by the backend work.
