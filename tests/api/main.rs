//! One integration-test binary (it links once): each module covers one area of the service.

mod cli;
mod demo;
mod health;
mod helpers;
mod logging;
mod official;
mod readiness;
mod shutdown;
