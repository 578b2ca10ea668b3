//! Test profiles (placeholder).
