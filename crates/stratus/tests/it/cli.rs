//! The CLI's login commands against a real server.

use std::process::Command;

use crate::harness::{run_with_stdin, Server, BIN, KEY_A};

fn cli(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("STRATUS_CLIENT_DIR", dir);
    c
}

#[test]
fn password_login_whoami_logout() {
    let s = Server::start();
    s.add_user("13000000020", "cli-password");
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_stdin(
        cli(dir.path()).args([
            "login",
            "--server",
            &s.url,
            "--username",
            "13000000020",
            "--password-stdin",
        ]),
        "cli-password\n",
    );
    assert!(out.status.success(), "{out:?}");
    let session = std::fs::read_to_string(dir.path().join("session.json")).unwrap();
    assert!(session.contains("\"token\""));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("session.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = cli(dir.path()).arg("whoami").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("username: 13000000020"), "{text}");

    let out = cli(dir.path()).arg("logout").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = cli(dir.path()).arg("whoami").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));

    // A wrong password is reported, nothing saved.
    let out = run_with_stdin(
        cli(dir.path()).args([
            "login",
            "--server",
            &s.url,
            "--username",
            "13000000020",
            "--password-stdin",
        ]),
        "nope\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PASSWORD_ERROR"));
    assert!(!dir.path().join("session.json").exists());
}

#[test]
fn wallet_login_signs_like_go_ethereum() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wallet.key");
    std::fs::write(&key, format!("{KEY_A}\n")).unwrap();
    let out = cli(dir.path())
        .args(["login", "--server", &s.url, "--wallet-key-file"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let addr = crate::harness::eth_address(KEY_A);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&addr));
    let out = cli(dir.path()).arg("whoami").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("wallet:   {addr}")), "{text}");
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for c in ["serve", "admin", "login", "whoami", "logout"] {
        assert!(text.contains(c), "{c} missing from --help:\n{text}");
    }
}
