//! `cloudpipe up` / `down` refusals that need no privileges: every one names the
//! file, the line and the fix, and touches nothing.

use std::process::Command;

fn cloudpipe(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
        .args(args)
        .env("CLOUDPIPE_STATE_DIR", "/nonexistent/never-created")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

#[test]
fn bad_files_are_refused_before_anything_is_touched() {
    let dir = std::env::temp_dir().join(format!("cloudpipe-up-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("wg0.conf", "[Interface]\nPrivateKey = nope\n".to_string(), "line 2: PrivateKey"),
        (
            "wg1.conf",
            format!("[Interface]\nPrivateKey = {KEY}\n[Peer]\nPublicKey = {PEER}\nEndpoint = 192.0.2.1\n"),
            "line 5: Endpoint",
        ),
        (
            "a-name-far-too-long.conf",
            format!("[Interface]\nPrivateKey = {KEY}\n"),
            "1 to 15 characters",
        ),
        ("wg2.conf", format!("[Interface]\nPrivateKey = {KEY}\n"), "no [Peer] section"),
        (
            "wg3.conf",
            format!("[Interface]\nPrivateKey = {KEY}\n[Peer]\nPublicKey = {PEER}\nEndpoint = 192.0.2.1:1194\nAllowedIPs = 0.0.0.0/0\n"),
            "inside AllowedIPs 0.0.0.0/0",
        ),
    ];
    for (name, text, want) in cases {
        let path = write(&dir, name, &text);
        let (ok, err) = cloudpipe(&["up", &path]);
        assert!(!ok, "{name}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!err.contains(KEY), "the private key leaked: {err}");
    }
    let (ok, err) = cloudpipe(&["up", "/nonexistent/wg0.conf"]);
    assert!(
        !ok && err.contains("reading /nonexistent/wg0.conf"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
