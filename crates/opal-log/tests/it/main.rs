//! Integration tests of the log engine, in one binary to keep link time low.

mod basics;
mod corruption;
mod crash;
mod encrypted;
mod group_commit;
mod model;
mod preallocation;
mod support;
