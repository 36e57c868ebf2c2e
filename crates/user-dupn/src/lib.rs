//! Deep User Perception Network (DUPN, KDD 2018) and its baselines. Not implemented yet: this
//! crate is a placeholder in the workspace layout; see the project's issue tracker.
