//! Typed argument parsing for modules. (To be implemented.)
