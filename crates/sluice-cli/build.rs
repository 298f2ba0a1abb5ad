//! Link options of the `sluice` binary.

fn main() {
    // The binary holds ~300,000 relative relocations (vtables, static tables of DataFusion
    // and arrow) that the dynamic loader applies at every start. Packed (RELR) they take a
    // few kilobytes instead of 7 MB to read, which shortens every command's start. Linux
    // with GNU ld or lld only: elsewhere the option is not passed.
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
