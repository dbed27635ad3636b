//! Crash points at the persistence boundaries, for the tests of R6. Built only with the
//! `failpoints` feature: `FAILPOINTS="raft-log-before-flush=50*off->return"` makes the process
//! abort the 51st time it gets there. Without the feature a point is nothing.

/// Aborts the process here when the point named `name` is set to fire.
#[cfg(feature = "failpoints")]
pub fn point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("crash point {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Reads `FAILPOINTS`, once, when the process starts.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
