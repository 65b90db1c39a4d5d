fn main() -> std::process::ExitCode {
    keysync::cli::main()
}
