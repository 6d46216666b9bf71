//! Recommendations: implicit-feedback matrix factorisation over plays (`als`), and the
//! seeded synthetic listening data it is measured on (`synth`), and the batch job that
//! trains on the play log and stores the factors (`train`).

pub mod als;
pub mod cold;
pub mod discover;
pub mod serve;
pub mod smart_shuffle;
pub mod synth;
pub mod train;
