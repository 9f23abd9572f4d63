#![no_std]
// Empty: lets the userspace build script declare a (library) dependency on this crate, so cargo
// rebuilds the userspace binary, which embeds the object, when the XDP program changes.
