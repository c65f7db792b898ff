//! The standalone `ferrofab-nvmeof` command.

fn main() {
    eprintln!("ferrofab-nvmeof: not implemented yet");
    std::process::exit(2);
}
