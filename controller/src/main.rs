//! Placeholder until its issue lands; see docs/architecture.md.

fn main() {
    eprintln!("ferrofab-controller: not implemented yet");
    std::process::exit(2);
}
