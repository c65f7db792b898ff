//! Placeholder until its issue lands; see docs/architecture.md.

fn main() {
    eprintln!("terraform-provider-ferrofab: not implemented yet");
    std::process::exit(2);
}
