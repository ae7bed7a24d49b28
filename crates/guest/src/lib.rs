//! tether-guest.
