//! Workspace-level integration and VM tests.
