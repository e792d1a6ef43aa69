//! `vswitch-cni`: the CNI plugin (see `vswitch_cli::cni`). Install it in the runtime's plugin
//! directory (`/opt/cni/bin`) and name it as `"type": "vswitch-cni"` in a network
//! configuration; the runtime runs it with `CNI_COMMAND` and the configuration on stdin.

use std::io::Read;
use std::process::ExitCode;

use vswitch_cli::cni;

fn main() -> ExitCode {
    let env = cni::Env::from_process();
    let mut stdin = Vec::new();
    // VERSION may come without stdin; every other command reads the configuration.
    if env.command != "VERSION" || atty_stdin_has_data() {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = cni::CniError {
                code: 5,
                msg: format!("reading the network configuration from stdin failed: {e}"),
                details: String::new(),
            };
            println!("{}", err.to_json(cni::SUPPORTED[0]));
            return ExitCode::FAILURE;
        }
    }
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| cni::SUPPORTED[cni::SUPPORTED.len() - 1].to_string());
    match cni::run(&env, &stdin) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// Whether stdin is something other than a terminal (a runtime always pipes the
/// configuration; a person typing `CNI_COMMAND=VERSION vswitch-cni` gets an answer at once).
fn atty_stdin_has_data() -> bool {
    use std::io::IsTerminal;
    !std::io::stdin().is_terminal()
}
