//! Evaluation metrics for recommenders. Not implemented yet: see the project's issue tracker.
