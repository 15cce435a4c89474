//! readiness backend (in progress)
