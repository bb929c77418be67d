//! Placeholder: filled in by the official-schema validator work.
