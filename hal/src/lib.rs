//! Hardware access for gateways: GPIO, serial ports, I2C and Modbus, for the device mappers
//! and DeviceTwin to build on. The only crate of the workspace allowed `unsafe` (ioctls), each
//! block with a comment saying why it is sound.
//!
//! Empty until the device issues need it; it exists so the layout of DESIGN.md §1 holds and the
//! `unsafe` boundary has a home from the start.
