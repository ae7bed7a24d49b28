//! tether-host.
