//! Training loop, configuration, checkpoints and reports. Not implemented yet: see the
//! project's issue tracker.
