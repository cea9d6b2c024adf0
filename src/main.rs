fn main() -> std::process::ExitCode {
    vhost_compat::cli::main()
}
