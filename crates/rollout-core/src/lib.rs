//! rollout-core: plans and runs deployments.
