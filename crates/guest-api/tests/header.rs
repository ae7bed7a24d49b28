//! The committed C header is exactly what cbindgen makes of the C API.
//!
//! Set `UPDATE_HEADER=1` to rewrite it after changing `src/ffi.rs`.

use std::path::Path;

#[test]
fn the_committed_header_matches_the_c_api() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = dir.join("include/guest_heartbeat_api.h");
    if std::env::var_os("UPDATE_HEADER").is_some_and(|v| !v.is_empty()) {
        std::fs::write(&path, &generated).expect("write the header");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/guest_heartbeat_api.h is stale; run UPDATE_HEADER=1 cargo test -p tether-guest-api --test header"
    );
}
