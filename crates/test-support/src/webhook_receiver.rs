//! Placeholder: written by the webhook receiver work.
