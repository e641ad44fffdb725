//! `TraceRoot::from_env` (its own test binary: it changes the environment).

use std::path::PathBuf;

use trace_format::{TraceError, TraceRoot};

#[test]
fn root_from_env() {
    let tmp = tempfile::tempdir().unwrap();
    let explicit = tmp.path().join("traces");
    std::env::set_var("DEJA_TRACE_DIR", &explicit);
    assert_eq!(TraceRoot::from_env().unwrap().path(), explicit);
    assert!(explicit.is_dir());

    std::env::set_var("DEJA_TRACE_DIR", "");
    std::env::set_var("HOME", tmp.path());
    let root = TraceRoot::from_env().unwrap();
    assert_eq!(root.path(), tmp.path().join(".local/share/deja"));
    assert!(root.path().is_dir());

    std::env::remove_var("DEJA_TRACE_DIR");
    std::env::remove_var("HOME");
    assert!(matches!(
        TraceRoot::from_env(),
        Err(TraceError::NoTraceRoot)
    ));
    let _ = PathBuf::new();
}
