//! End-to-end tests of rkube live in `tests/`: each starts the real daemons
//! through the same `run` functions as their `main`s, on a throwaway
//! containerd inside a network namespace the test creates, with no route
//! out. This library is empty; it exists so the tests have a crate.
