//! Tests of `git/commit_rules.rs`: hooks and signing as git's config asks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::git::commit_rules::SigningFormat;
use crate::git::tests::Fixture;

#[test]
fn commit_rules_follow_git_config() {
    let fixture = Fixture::new();
    let committer = ("ralphd", "ralphd@localhost");
    let rules = fixture.repo.commit_rules(committer).unwrap();
    assert_eq!(rules.pre_commit, None);
    assert_eq!(rules.signing, None);

    let hooks = fixture.dir.path().join(".git/hooks");
    fs::create_dir_all(&hooks).unwrap();
    fs::write(hooks.join("pre-commit"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(hooks.join("pre-commit"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(hooks.join("commit-msg"), "#!/bin/sh\n").unwrap();
    let rules = fixture.repo.commit_rules(committer).unwrap();
    assert_eq!(rules.pre_commit, Some(hooks.join("pre-commit")));
    assert_eq!(rules.commit_msg, None, "not executable");

    let mut config = fixture.raw.config().unwrap();
    config.set_str("core.hooksPath", "tools/hooks").unwrap();
    let rules = fixture.repo.commit_rules(committer).unwrap();
    assert_eq!(rules.pre_commit, None, "only core.hooksPath counts now");

    config.set_bool("commit.gpgsign", true).unwrap();
    let signing = |fixture: &Fixture| {
        fixture
            .repo
            .commit_rules(committer)
            .unwrap()
            .signing
            .unwrap()
    };
    let openpgp = signing(&fixture).unwrap();
    assert_eq!(openpgp.format, SigningFormat::OpenPgp);
    assert_eq!(
        (openpgp.program.as_str(), openpgp.program_key),
        ("gpg", "gpg.program")
    );
    assert_eq!(openpgp.key, "ralphd <ralphd@localhost>");
    config.set_str("gpg.program", "gpg2").unwrap();
    config.set_str("user.signingkey", "ABCD1234").unwrap();
    let openpgp = signing(&fixture).unwrap();
    assert_eq!(
        (openpgp.program.as_str(), openpgp.key.as_str()),
        ("gpg2", "ABCD1234")
    );

    config.set_str("gpg.format", "ssh").unwrap();
    config
        .set_str("user.signingkey", "keys/id_ed25519")
        .unwrap();
    let ssh = signing(&fixture).unwrap();
    assert_eq!(
        (ssh.program.as_str(), ssh.program_key),
        ("ssh-keygen", "gpg.ssh.program")
    );
    assert_eq!(
        Path::new(&ssh.key),
        fixture.repo.workdir().join("keys/id_ed25519")
    );
    assert!(!ssh.literal_key);
    config
        .set_str("user.signingkey", "key::ssh-ed25519 AAAAC3 me")
        .unwrap();
    let ssh = signing(&fixture).unwrap();
    assert!(ssh.literal_key && ssh.key == "ssh-ed25519 AAAAC3 me");
    config.remove("user.signingkey").unwrap();
    assert!(signing(&fixture).unwrap_err().contains("user.signingkey"));
    config.set_str("gpg.format", "pgp").unwrap();
    assert!(signing(&fixture).unwrap_err().contains("\"pgp\""));
}
