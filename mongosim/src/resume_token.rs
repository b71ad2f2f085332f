//! Resume token KeyString codec (being built).
