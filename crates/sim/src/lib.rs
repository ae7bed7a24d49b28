//! tether-sim.
