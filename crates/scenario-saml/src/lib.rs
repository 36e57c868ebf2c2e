//! Scenario-aware Mutual Learning (SAML, 2020) and multi-scenario baselines. Not implemented
//! yet: this crate is a placeholder in the workspace layout; see the project's issue tracker.
