//! rollout-lab: simulated Nix hosts for tests.
