//! Recommendations: implicit-feedback matrix factorisation over plays (`als`), and the
//! seeded synthetic listening data it is measured on (`synth`).

pub mod als;
pub mod synth;
