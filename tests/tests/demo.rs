//! `cloudpipe-lab demo`, the README's main job, as a new user sees it (root only):
//! a story of commands and their real output, and a last line that is the verdict,
//! which the exit status follows.

use cloudpipe_lab::bin_path;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn demo(bin_dir: Option<&Path>) -> Output {
    let mut c = Command::new(bin_path("cloudpipe-lab").unwrap());
    c.arg("demo");
    if let Some(d) = bin_dir {
        c.env("CLOUDPIPE_BIN_DIR", d);
    }
    c.output().unwrap()
}

/// The text between the line holding `from` and the next command (`$ `).
fn section<'a>(text: &'a str, from: &str) -> &'a str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} not in:\n{text}"));
    let rest = &text[start + from.len()..];
    &rest[..rest.find("\n$ ").unwrap_or(rest.len())]
}

#[test]
fn the_demo_tells_the_story_and_passes() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let o = demo(None);
    let text = String::from_utf8(o.stdout).unwrap();
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("PASS: all"), "{text}");
    assert_eq!(o.status.code(), Some(0), "{text}");
    // Each step is the command and its real output.
    assert!(
        section(&text, "$ cloudpipe network create lab --cidr 10.77.0.0/24")
            .contains("created network lab: 10.77.0.0/24")
    );
    assert!(section(&text, "$ cloudpipe client list lab").contains("NAME   ADDRESS"));
    // The revocation shows the publish command, then the proof: alice's ping now
    // fails while bob's still passes.
    assert!(section(&text, "$ cloudpipe client revoke lab alice")
        .contains("openstack server set --property 'cloudpipe-revoke-0=v1 "));
    let revoked = section(&text, "# alice, revoked");
    assert!(
        revoked.contains("3 packets transmitted, 0 received"),
        "{revoked}"
    );
    let after = text.split("# alice, revoked").nth(1).unwrap();
    assert!(
        section(after, "# bob").contains("3 packets transmitted, 3 received"),
        "{after}"
    );
    // bob's key was made on his side; only its public half went to the CLI.
    assert!(text.contains("wg genkey | tee bob/private.key | wg pubkey"));
    assert!(text.contains("[ok] bob's private key never reached the operator's CLI"));
    // No Rust debug text, no secrets.
    for debug in ["Some(", "None", "[\"", "\\n", "Ok(", "Err("] {
        assert!(!text.contains(debug), "{debug:?} in:\n{text}");
    }
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("PrivateKey = ")
            .or_else(|| line.strip_prefix("PresharedKey = "))
        {
            assert!(v.starts_with("(secret"), "a secret is shown: {line}");
        }
    }
}

/// A daemon that never looks at instance properties after boot: the revocation
/// never arrives, and the demo says so in its last line and exits 1.
#[test]
fn a_demo_whose_revocation_never_arrives_says_fail() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("cp-demo-bins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for b in ["cloudpipe", "cloudpipe-lab"] {
        std::os::unix::fs::symlink(bin_path(b).unwrap(), dir.join(b)).unwrap();
    }
    let wrapper = dir.join("cloudpiped");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# cloudpiped polling instance properties once an hour\n\
             skip=\nfor a do\n  shift\n  if [ -n \"$skip\" ]; then set -- \"$@\" 3600; skip=; continue; fi\n  \
             [ \"$a\" = --poll-interval ] && skip=1\n  set -- \"$@\" \"$a\"\ndone\nexec {} \"$@\"\n",
            bin_path("cloudpiped").unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = demo(Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(o.stdout).unwrap();
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("FAIL: 1 of ")
            && last.contains("checks failed: alice is cut off after the revocation ("),
        "{text}"
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("[FAILED] alice is cut off after the revocation"));
}
