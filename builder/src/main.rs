fn main() -> std::process::ExitCode {
    habuild::cli::main()
}
