//! Code the example harnesses share (`stress`, `bench`). Each includes this
//! folder with `#[path = "../common/mod.rs"] mod common;`, so every item
//! here must be used by each of them: an item one of them leaves unused is
//! dead code in that example and fails `clippy -D warnings`.

pub mod server;
