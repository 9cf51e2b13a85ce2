//! The ctrack binary: picks its role from its name or first word.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Behave like the C tools on a closed pipe (`ctrack -L | head`): die
    // quietly instead of reporting EPIPE.
    // SAFETY: setting a signal's disposition to the default is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = if args.is_empty() {
        String::from("ctrack")
    } else {
        args.remove(0)
    };
    let code = ctrack::dispatch(&argv0, args);
    ExitCode::from(code.clamp(0, 255) as u8)
}
