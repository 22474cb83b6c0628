//! Stamps the commit into `--version` and `cloudoptim_build_info`: `CLOUDOPTIM_COMMIT` at build time
//! (the image build and the release workflow set it), else "unknown".
fn main() {
    println!("cargo:rerun-if-env-changed=CLOUDOPTIM_COMMIT");
    let commit = std::env::var("CLOUDOPTIM_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CLOUDOPTIM_COMMIT_TEXT={}", commit.trim());
    println!(
        "cargo:rustc-env=CLOUDOPTIM_VERSION_TEXT={} (commit {})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        commit.trim()
    );
}
