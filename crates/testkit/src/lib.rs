//! tether-testkit.
