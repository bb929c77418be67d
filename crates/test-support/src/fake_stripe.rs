//! Placeholder: written by the fake Stripe work.
