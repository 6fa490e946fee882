mod common;
use common::TestEnv;
use m365_sim::contoso::ALICE;

#[test]
fn show() {
    let env = TestEnv::new();
    env.login("work");
    println!(
        "=== send ok\n{}",
        env.run(&[
            "send",
            "--to",
            "bob@contoso.com",
            "--subject",
            "x",
            "--body",
            "x"
        ])
    );
    println!(
        "=== send as support\n{}",
        env.run(&[
            "send",
            "--from",
            "support@contoso.com",
            "--to",
            "bob@contoso.com",
            "--subject",
            "x",
            "--body",
            "x"
        ])
    );
    println!("=== test ok\n{}", env.run(&["test"]));
    println!(
        "=== test support\n{}",
        env.run(&["test", "--from", "support@contoso.com"])
    );
    env.sim
        .with_directory(|d| d.user_mut(ALICE).unwrap().smtp_auth_enabled = false);
    println!(
        "=== 5.7.139 mailbox\n{}",
        env.run(&[
            "send",
            "--to",
            "bob@contoso.com",
            "--subject",
            "x",
            "--body",
            "x"
        ])
    );
    env.sim
        .with_directory(|d| d.user_mut(ALICE).unwrap().smtp_auth_enabled = true);
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    println!("=== reject\n{}", env.run(&["test"]));
    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    println!(
        "=== debug\n{}",
        env.run_with_stdin(
            &["sendmail", "-v", "-t"],
            b"To: bob@contoso.com\nSubject: hi\n\nbody\n"
        )
    );
}
