//! Clustered Embedding Learning (CEL, WWW 2023): an embedding table whose entities share
//! cluster rows, created top-down during training. Not implemented yet: this crate is a
//! placeholder in the workspace layout; see the project's issue tracker.
