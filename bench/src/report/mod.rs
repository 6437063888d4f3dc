//! Turning [`crate::results::Results`] into what people read: `results.md` and the SVG plots.

pub mod markdown;
pub mod plot;
