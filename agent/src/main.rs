//! Placeholder until its issue lands; see docs/architecture.md.

fn main() {
    eprintln!("ferrofab-agent: not implemented yet");
    std::process::exit(2);
}
