//! The `surreal` server binary: what SurrealDB's own `main` does, with the community composer.
// A release build computes the layout of a deeply nested future in `surrealdb_core` and needs
// more than the default query depth.
#![recursion_limit = "256"]

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
