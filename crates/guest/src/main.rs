//! `tether-guest`: the guest heartbeat daemon binary.

fn main() {}
