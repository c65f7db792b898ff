//! The ferrofab gRPC API (`ferrofab.v1`). Filled in by the controller issue.
