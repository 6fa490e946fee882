//! `mailgate rules`: file-transfer rules with On Success / On Error / On No Files mail, on temp
//! directories against the simulator.
#![cfg(unix)] // symbolic links, SIGTERM and /dev/shm

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::TestEnv;
use mail_parser::MimeHeaders;

/// A test environment whose config has both simulator accounts (`app` sends without a login, so
/// it is the default) and the rules in `rules` (TOML, with `{in}`, `{out}` and `{dir}` standing
/// for `DIR/in`, `DIR/out` and `DIR`).
fn env_with_rules(rules: &str) -> TestEnv {
    let env = TestEnv::new();
    fs::create_dir_all(env.path("in")).unwrap();
    write_rules(&env, rules);
    env
}

fn write_rules(env: &TestEnv, rules: &str) {
    let rules = expand(env, rules);
    let text = format!(
        "token_store = \"file\"\ndefault_account = \"app\"\n\n{}\n{}\n{rules}",
        env.account_toml("work", &[]),
        env.account_toml(
            "app",
            &[
                ("flow", "\"client_credentials\""),
                (
                    "tenant",
                    &format!("\"{}\"", m365_sim::contoso::TENANT_DOMAIN)
                ),
            ],
        ),
    );
    env.write_config(&text);
}

fn expand(env: &TestEnv, s: &str) -> String {
    s.replace("{in}", &env.path("in").display().to_string())
        .replace("{out}", &env.path("out").display().to_string())
        .replace("{dir}", &env.dir.path().display().to_string())
}

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Gives `path` a modification time `secs` in the past, as a file delivered a while ago has.
fn age(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `{yyyy}/{mm}` for now, as the destination template expands it.
fn year_month() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y/%m")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Messages the simulator accepted whose subject contains `needle`.
fn mails_with_subject(env: &TestEnv, needle: &str) -> Vec<m365_sim::DeliveredMessage> {
    env.delivered()
        .into_iter()
        .filter(|m| subject(m).contains(needle))
        .collect()
}

fn subject(m: &m365_sim::DeliveredMessage) -> String {
    mail_parser::MessageParser::default()
        .parse(&m.data)
        .and_then(|p| p.subject().map(str::to_string))
        .unwrap_or_default()
}

fn body(m: &m365_sim::DeliveredMessage) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.data)
        .unwrap();
    parsed
        .body_text(0)
        .map(|b| b.into_owned())
        .unwrap_or_default()
}

#[track_caller]
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `mailgate rules run` in the background, killed when dropped (also when a test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `mailgate rules run ARGS` in the background, output to files in the temp dir.
fn spawn_run(env: &TestEnv, args: &[&str]) -> Running {
    let mut all = vec!["rules", "run"];
    all.extend_from_slice(args);
    let out = fs::File::create(env.path("run.stdout")).unwrap();
    let err = fs::File::create(env.path("run.stderr")).unwrap();
    Running(
        env.cmd(&all)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("mailgate rules run starts"),
    )
}

fn run_output(env: &TestEnv) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        fs::read_to_string(env.path("run.stdout")).unwrap_or_default(),
        fs::read_to_string(env.path("run.stderr")).unwrap_or_default()
    )
}

fn terminate(running: &mut Running) -> std::process::ExitStatus {
    let child = &mut running.0;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("mailgate rules run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn move_with_include_exclude_and_subfolders() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}/{yyyy}/{mm}"
include = ["*.pdf", "*.xml"]
exclude = ["*.tmp", "drafts"]
recursive = true
min_age = "0s"
"#,
    );
    let input = env.path("in");
    write(&input.join("a.pdf"), b"invoice a");
    write(&input.join("b.xml"), b"<invoice b/>");
    write(&input.join("c.tmp"), b"temp");
    write(&input.join("notes.txt"), b"not matched");
    write(&input.join("sub/d.pdf"), b"invoice d");
    write(&input.join("sub/deeper/e.xml"), b"<e/>");
    write(&input.join("sub/x.pdf.tmp"), b"partial upload");
    write(&input.join("drafts/f.pdf"), b"excluded folder");

    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("rule invoices: moved 4 file(s)");

    let dest = env.path("out").join(year_month());
    assert_eq!(
        tree(&dest),
        vec!["a.pdf", "b.xml", "sub/d.pdf", "sub/deeper/e.xml"],
        "{run}"
    );
    assert_eq!(read(&dest.join("a.pdf")), "invoice a");
    assert_eq!(read(&dest.join("sub/deeper/e.xml")), "<e/>");
    assert_eq!(
        tree(&input),
        vec!["c.tmp", "drafts/f.pdf", "notes.txt", "sub/x.pdf.tmp"],
        "only what the patterns exclude stays"
    );

    // Nothing new: a second run moves nothing and says so.
    let again = env.run(&["rules", "run", "--once", "invoices"]);
    again.assert_success();
    again.assert_output_contains("rule invoices: no file moved");
}

#[test]
fn copy_keeps_the_source_and_copies_a_file_again_only_when_it_changes() {
    let env = env_with_rules(
        r#"
[rules.mirror]
source = "{in}"
destination = "{out}"
action = "copy"
conflict = "overwrite"
min_age = "0s"
"#,
    );
    let input = env.path("in");
    write(&input.join("a.pdf"), b"version 1");
    age(&input.join("a.pdf"), 3600);
    write(&input.join("sub/b.pdf"), b"not recursive");

    env.run(&["rules", "run", "--once"])
        .assert_success()
        .assert_output_contains("rule mirror: copied 1 file(s)");
    let out = env.path("out");
    assert_eq!(
        tree(&out),
        vec!["a.pdf"],
        "subfolders are not entered without recursive"
    );
    assert_eq!(read(&out.join("a.pdf")), "version 1");
    assert_eq!(
        read(&input.join("a.pdf")),
        "version 1",
        "copy leaves the source"
    );
    // The copy keeps the source's modification time.
    let src_m = fs::metadata(input.join("a.pdf"))
        .unwrap()
        .modified()
        .unwrap();
    let dst_m = fs::metadata(out.join("a.pdf")).unwrap().modified().unwrap();
    assert_eq!(src_m, dst_m);

    // Unchanged: not copied again.
    env.run(&["rules", "run", "--once"])
        .assert_success()
        .assert_output_contains("rule mirror: no file copied");

    // Changed: copied again, and overwrite replaces the old copy.
    write(&input.join("a.pdf"), b"version 2, longer");
    age(&input.join("a.pdf"), 60);
    env.run(&["rules", "run", "--once"])
        .assert_success()
        .assert_output_contains("rule mirror: copied 1 file(s)");
    assert_eq!(read(&out.join("a.pdf")), "version 2, longer");
    assert_eq!(tree(&out), vec!["a.pdf"]);
}

#[test]
fn conflict_policies_rename_skip_and_overwrite() {
    let env = env_with_rules(
        r#"
[rules.renaming]
source = "{dir}/in-rename"
destination = "{dir}/out-rename"
conflict = "rename"
min_age = "0s"

[rules.skipping]
source = "{dir}/in-skip"
destination = "{dir}/out-skip"
conflict = "skip"
min_age = "0s"

[rules.overwriting]
source = "{dir}/in-over"
destination = "{dir}/out-over"
conflict = "overwrite"
min_age = "0s"
"#,
    );
    for kind in ["rename", "skip", "over"] {
        write(&env.path(&format!("out-{kind}/report.pdf")), b"old");
        write(&env.path(&format!("in-{kind}/report.pdf")), b"new");
    }
    write(&env.path("out-rename/README"), b"old readme");
    write(&env.path("in-rename/README"), b"new readme");

    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();

    // rename: both kept, the new one as `name (1).ext`.
    assert_eq!(read(&env.path("out-rename/report.pdf")), "old");
    assert_eq!(read(&env.path("out-rename/report (1).pdf")), "new");
    assert_eq!(read(&env.path("out-rename/README (1)")), "new readme");
    assert!(tree(&env.path("in-rename")).is_empty());
    // A second arrival of the same name gets (2).
    write(&env.path("in-rename/report.pdf"), b"newer");
    env.run(&["rules", "run", "--once", "renaming"])
        .assert_success();
    assert_eq!(read(&env.path("out-rename/report (2).pdf")), "newer");

    // skip: the destination is untouched and the source stays where it is.
    assert_eq!(read(&env.path("out-skip/report.pdf")), "old");
    assert_eq!(read(&env.path("in-skip/report.pdf")), "new");
    run.assert_output_contains("(conflict = \"skip\")");

    // overwrite: the new file replaces the old one.
    assert_eq!(read(&env.path("out-over/report.pdf")), "new");
    assert!(tree(&env.path("in-over")).is_empty());
    assert_eq!(tree(&env.path("out-over")), vec!["report.pdf"]);
}

#[test]
fn a_half_written_file_is_left_alone_until_it_is_stable() {
    let env = env_with_rules(
        r#"
[rules.scans]
source = "{in}"
destination = "{out}"
interval = "300ms"
min_age = "2s"
"#,
    );
    let src = env.path("in").join("scan.pdf");
    let mut writer = fs::File::create(&src).unwrap();
    writer.write_all(b"%PDF-1.7 first part\n").unwrap();

    // One run while it is being written: left alone.
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("waiting");
    assert!(src.exists());
    assert!(!env.path("out/scan.pdf").exists());

    // The rule running continuously while the writer goes on for 3 s (longer than min_age).
    let mut child = spawn_run(&env, &[]);
    let mut expected = b"%PDF-1.7 first part\n".to_vec();
    for i in 0..15 {
        let chunk = format!("line {i} {}\n", "x".repeat(4000));
        writer.write_all(chunk.as_bytes()).unwrap();
        writer.flush().unwrap();
        expected.extend_from_slice(chunk.as_bytes());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            src.exists(),
            "taken while still being written\n{}",
            run_output(&env)
        );
        assert!(!env.path("out/scan.pdf").exists());
    }
    drop(writer);
    // Stable now: taken within min_age plus a few scans, complete.
    wait_for("the finished file to move", Duration::from_secs(15), || {
        env.path("out/scan.pdf").exists()
    });
    assert_eq!(fs::read(env.path("out/scan.pdf")).unwrap(), expected);
    assert!(!src.exists());

    // SIGTERM stops it cleanly.
    let status = terminate(&mut child);
    assert!(status.success(), "exit {status:?}\n{}", run_output(&env));
    assert!(run_output(&env).contains("stopped"), "{}", run_output(&env));
}

#[test]
fn a_running_rule_takes_new_files_without_waiting_for_its_interval() {
    // An interval of an hour: only file-system events (and the rescan when a file being written
    // becomes old enough) can get the file moved within the test's seconds.
    let env = env_with_rules(
        r#"
[rules.watched]
source = "{in}"
destination = "{out}"
recursive = true
interval = "1h"
min_age = "1s"
"#,
    );
    let mut child = spawn_run(&env, &[]);
    std::thread::sleep(Duration::from_millis(700)); // the first scan has run
    write(&env.path("in/sub/new.pdf"), b"arrived after the first scan");
    wait_for("the new file to move", Duration::from_secs(10), || {
        env.path("out/sub/new.pdf").exists()
    });
    assert_eq!(
        read(&env.path("out/sub/new.pdf")),
        "arrived after the first scan"
    );
    let status = terminate(&mut child);
    assert!(status.success(), "{}", run_output(&env));
}

#[test]
fn a_file_that_cannot_be_read_is_mailed_by_on_error_while_the_others_move() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}"
recursive = true
min_age = "0s"

[rules.invoices.on_success]
mail = { to = ["ops@contoso.com"] }

[rules.invoices.on_error]
mail = { account = "app", to = ["it@contoso.com"] }
"#,
    );
    let input = env.path("in");
    write(&input.join("a.pdf"), b"aaa");
    write(&input.join("b.pdf"), b"bbbb");
    // Two failures that hold for root too (these tests run as root, which reads any file):
    // a link to a file that is not there (cannot be read: ENOENT)...
    std::os::unix::fs::symlink(
        input.join("gone-before-it-arrived.pdf"),
        input.join("broken.pdf"),
    )
    .unwrap();
    // ...and a destination folder that cannot be created because a file sits at its name.
    write(&input.join("sub/c.pdf"), b"ccccc");
    write(
        &env.path("out/sub"),
        b"a file where the folder sub/ must go",
    );

    let run = env.run(&["rules", "run", "--once"]);
    run.assert_code(74);
    run.assert_output_contains("moved 2 file(s)");
    assert_eq!(read(&env.path("out/a.pdf")), "aaa");
    assert_eq!(read(&env.path("out/b.pdf")), "bbbb");
    assert!(
        input.join("sub/c.pdf").exists(),
        "a failed file stays in the source"
    );

    let errors = mails_with_subject(&env, "failed");
    assert_eq!(errors.len(), 1, "{run}");
    let m = &errors[0];
    assert_eq!(m.rcpt_to, vec!["it@contoso.com"]);
    assert_eq!(subject(m), "mailgate invoices: 2 file(s) failed");
    let text = body(m);
    assert!(
        text.contains(&input.join("broken.pdf").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("No such file or directory (os error 2)"),
        "{text}"
    );
    assert!(
        text.contains(&input.join("sub/c.pdf").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} is a file, not a folder",
            env.path("out/sub").display()
        )),
        "{text}"
    );
    assert!(text.contains("os error"), "the OS error is quoted: {text}");

    let ok = mails_with_subject(&env, "moved");
    assert_eq!(ok.len(), 1);
    assert!(body(&ok[0]).contains("a.pdf") && body(&ok[0]).contains("b.pdf"));

    // The same failures on the next run are not mailed again.
    env.run(&["rules", "run", "--once"]).assert_code(74);
    assert_eq!(mails_with_subject(&env, "failed").len(), 1);

    // Once the obstacle is gone the file moves.
    fs::remove_file(env.path("out/sub")).unwrap();
    fs::remove_file(input.join("broken.pdf")).unwrap();
    env.run(&["rules", "run", "--once"]).assert_success();
    assert_eq!(read(&env.path("out/sub/c.pdf")), "ccccc");
}

#[test]
fn on_no_files_mails_after_the_threshold_once_per_quiet_period() {
    let env = env_with_rules(
        r#"
[rules.daily]
source = "{in}"
destination = "{out}"
min_age = "0s"

[rules.daily.on_no_files]
after = "3s"
mail = { to = ["ops@contoso.com"] }
"#,
    );
    // The first run starts the clock.
    env.run(&["rules", "run", "--once"]).assert_success();
    assert!(mails_with_subject(&env, "no files").is_empty());

    std::thread::sleep(Duration::from_millis(3300));
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("On No Files mail to ops@contoso.com: sent");
    let m = mails_with_subject(&env, "no files");
    assert_eq!(m.len(), 1, "{run}");
    assert_eq!(subject(&m[0]), "mailgate daily: no files for 3s");
    let text = body(&m[0]);
    assert!(
        text.contains(&env.path("in").display().to_string()),
        "{text}"
    );
    assert!(text.contains("has taken no file"), "{text}");

    // Not again within the same quiet period...
    env.run(&["rules", "run", "--once"]).assert_success();
    assert_eq!(mails_with_subject(&env, "no files").len(), 1);

    // ...a file resets the clock...
    write(&env.path("in/late.csv"), b"1,2,3");
    env.run(&["rules", "run", "--once"]).assert_success();
    std::thread::sleep(Duration::from_millis(1000));
    env.run(&["rules", "run", "--once"]).assert_success();
    assert_eq!(mails_with_subject(&env, "no files").len(), 1);

    // ...and the next quiet period is mailed again.
    std::thread::sleep(Duration::from_millis(2300));
    env.run(&["rules", "run", "--once"]).assert_success();
    assert_eq!(mails_with_subject(&env, "no files").len(), 2);
}

#[test]
fn the_success_mail_lists_files_sizes_and_destinations_and_can_attach_them() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}/{yyyy}"
min_age = "0s"

[rules.invoices.on_success]
mail = { to = ["ops@contoso.com"], cc = ["audit@contoso.com"], subject = "{count} file(s) moved by {rule}", attach_files = true }
"#,
    );
    let input = env.path("in");
    write(&input.join("inv-001.pdf"), b"%PDF-1.4 invoice one");
    write(&input.join("inv-002.xml"), &vec![b'x'; 12_345]);

    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("On Success mail to ops@contoso.com: sent");

    let mails = mails_with_subject(&env, "moved by invoices");
    assert_eq!(mails.len(), 1, "{run}");
    let m = &mails[0];
    assert_eq!(subject(m), "2 file(s) moved by invoices");
    let mut rcpt = m.rcpt_to.clone();
    rcpt.sort();
    assert_eq!(rcpt, vec!["audit@contoso.com", "ops@contoso.com"]);
    assert_eq!(m.auth_user, m365_sim::contoso::ALICE);

    let year = &year_month()[..4];
    let dest = env.path("out").join(year);
    let text = body(m);
    // Default body: the rule, the count, the total, each file with its size and destination.
    assert!(text.contains("Rule invoices on "), "{text}");
    assert!(text.contains("moved 2 file(s), 12 kB"), "{text}");
    for (name, size) in [("inv-001.pdf", "20 bytes"), ("inv-002.xml", "12 kB")] {
        let line = text
            .lines()
            .find(|l| l.contains(&input.join(name).display().to_string()))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"));
        assert!(line.contains(size), "{line}");
        assert!(
            line.contains(&dest.join(name).display().to_string()),
            "{line}"
        );
    }

    let parsed = mail_parser::MessageParser::default()
        .parse(&m.data)
        .unwrap();
    let names: Vec<String> = parsed
        .attachments()
        .map(|a| a.attachment_name().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["inv-001.pdf", "inv-002.xml"]);
    let first = parsed.attachments().next().unwrap();
    assert_eq!(first.contents(), b"%PDF-1.4 invoice one");
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated"),
        "event mail is marked automatic so that nobody auto-replies to it"
    );
}

#[test]
fn event_mail_is_queued_while_smtp_is_down_and_delivered_when_it_returns() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}"
min_age = "0s"

[rules.invoices.on_success]
mail = { to = ["ops@contoso.com"] }
"#,
    );
    write(&env.path("in/a.pdf"), b"a");
    env.sim.set_faults(|f| f.smtp_reject_connections = true);

    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("queued as");
    assert!(
        env.path("out/a.pdf").exists(),
        "files move whether or not mail can go out"
    );
    assert!(env.delivered().is_empty());
    let spool = env.state_dir().join("spool");
    let queued = tree(&spool)
        .into_iter()
        .filter(|p| p.ends_with(".json") && (p.starts_with("new/") || p.starts_with("deferred/")))
        .count();
    assert_eq!(queued, 1, "the mail waits in the spool: {:?}", tree(&spool));

    // Still down: it stays queued (and is not lost or duplicated).
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("still waiting");
    assert!(env.delivered().is_empty());

    // SMTP is back: the next run delivers it.
    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("delivered 1 queued event mail(s)");
    let mails = mails_with_subject(&env, "1 file(s) moved");
    assert_eq!(mails.len(), 1, "{run}");
    assert!(body(&mails[0]).contains("a.pdf"));
    assert_eq!(mails[0].rcpt_to, vec!["ops@contoso.com"]);
    assert_eq!(env.delivered().len(), 1);

    // A continuously running rule retries on its own.
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    let mut child = spawn_run(&env, &[]);
    write(&env.path("in/b.pdf"), b"b");
    wait_for("b.pdf to move", Duration::from_secs(10), || {
        env.path("out/b.pdf").exists()
    });
    wait_for("the mail to be queued", Duration::from_secs(10), || {
        run_output(&env).contains("queued as")
    });
    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    wait_for(
        "the queued mail to be delivered",
        Duration::from_secs(30),
        || env.delivered().len() == 2,
    );
    assert!(body(&env.delivered()[1]).contains("b.pdf"));
    terminate(&mut child);
}

#[test]
fn event_mail_of_an_account_that_needs_a_login_waits_for_it() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}"
min_age = "0s"

[rules.invoices.on_success]
mail = { account = "work", to = ["ops@contoso.com"] }
"#,
    );
    write(&env.path("in/a.pdf"), b"a");
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    // The mail is kept, and the output says what to do.
    run.assert_output_contains("queued as");
    run.assert_output_contains("mailgate login work");
    assert!(env.path("out/a.pdf").exists());
    assert!(env.delivered().is_empty());

    env.login("work");
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    run.assert_output_contains("delivered 1 queued event mail(s)");
    let mails = mails_with_subject(&env, "1 file(s) moved");
    assert_eq!(mails.len(), 1, "{run}");
    assert_eq!(mails[0].auth_user, m365_sim::contoso::ALICE);
}

/// A source folder on another file system than the temp dir, so that a move copies; `None` when
/// this machine has none (then the test copies, which goes through the same temp-file path).
fn other_filesystem_dir(than: &Path) -> Option<tempfile::TempDir> {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let dev = fs::metadata(than).ok()?.dev();
    if fs::metadata(shm).ok()?.dev() == dev {
        return None;
    }
    tempfile::Builder::new()
        .prefix("mailgate-rules-")
        .tempdir_in(shm)
        .ok()
}

fn fill(path: &Path, size: usize) {
    let mut f = fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    f.sync_all().unwrap();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        let mut m = 0;
        while m < n {
            let k = fb.read(&mut bb[m..n]).unwrap();
            assert!(k > 0);
            m += k;
        }
        if n == 0 {
            return true;
        }
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn a_crash_in_the_middle_of_a_large_move_leaves_no_truncated_or_lost_file() {
    let env = TestEnv::new();
    let other = other_filesystem_dir(env.dir.path());
    let (source, action) = match &other {
        Some(d) => (d.path().to_path_buf(), "move"),
        None => {
            eprintln!("no second file system here: crashing a copy instead of a cross-device move");
            (env.path("in"), "copy")
        }
    };
    fs::create_dir_all(&source).unwrap();
    write_rules(
        &env,
        &format!(
            r#"
[rules.big]
source = "{}"
destination = "{{out}}"
action = "{action}"
min_age = "0s"

[rules.big.on_success]
mail = {{ to = ["ops@contoso.com"] }}
"#,
            source.display()
        ),
    );
    let big = source.join("big.bin");
    fill(&big, 256 << 20);
    let reference = env.path("reference.bin");
    fs::copy(&big, &reference).unwrap();

    // Kill -9 as soon as the copy is under way.
    let mut child = spawn_run(&env, &["--once"]);
    let out = env.path("out");
    let mut seen_partial = 0u64;
    wait_for("the copy to start", Duration::from_secs(30), || {
        let partial = fs::read_dir(&out)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".mailgate-part-")
            });
        if let Some(p) = partial {
            seen_partial = p.metadata().map(|m| m.len()).unwrap_or(0);
            seen_partial > 0
        } else {
            false
        }
    });
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(
        seen_partial < 256 << 20,
        "killed during the copy ({seen_partial} bytes copied)"
    );

    // Right after the crash: the source is whole, and no final file is truncated.
    assert!(
        same_bytes(&big, &reference),
        "the source survived the crash intact"
    );
    if env.path("out/big.bin").exists() {
        assert!(
            same_bytes(&env.path("out/big.bin"), &reference),
            "no truncated destination"
        );
    }

    // The next run finishes the job: one complete file, no leftovers, mailed once.
    let run = env.run(&["rules", "run", "--once"]);
    run.assert_success();
    assert_eq!(
        tree(&out),
        vec!["big.bin"],
        "no partial file left behind\n{run}"
    );
    assert!(same_bytes(&out.join("big.bin"), &reference));
    if action == "move" {
        assert!(!big.exists(), "the move completed: the source is gone");
    } else {
        assert!(same_bytes(&big, &reference));
    }
    let mails = mails_with_subject(&env, "1 file(s)");
    assert_eq!(mails.len(), 1, "{run}");
    assert!(body(&mails[0]).contains("268 MB"), "{}", body(&mails[0]));
}

#[test]
fn check_shows_what_the_next_scan_would_do_and_touches_nothing() {
    let env = env_with_rules(
        r#"
[rules.invoices]
source = "{in}"
destination = "{out}/{yyyy}/{mm}"
include = ["*.pdf"]
conflict = "rename"
min_age = "30s"

[rules.invoices.on_success]
mail = { to = ["ops@contoso.com"] }

[rules.invoices.on_no_files]
after = "2h"
mail = { to = ["ops@contoso.com"] }
"#,
    );
    let input = env.path("in");
    write(&input.join("old.pdf"), b"ready");
    age(&input.join("old.pdf"), 3600);
    write(&input.join("taken.pdf"), b"name taken");
    age(&input.join("taken.pdf"), 3600);
    write(&input.join("fresh.pdf"), b"still arriving");
    write(&input.join("other.txt"), b"not included");
    let dest = env.path("out").join(year_month());
    write(&dest.join("taken.pdf"), b"already there");

    let run = env.run(&["rules", "check"]);
    run.assert_success();
    run.assert_output_contains("1 rule(s), valid");
    run.assert_output_contains(&format!(
        "move {} -> {}",
        input.join("old.pdf").display(),
        dest.join("old.pdf").display()
    ));
    run.assert_output_contains("(10 bytes)  [name taken: renamed]");
    run.assert_output_contains(&dest.join("taken (1).pdf").display().to_string());
    run.assert_output_contains(&format!("wait {}", input.join("fresh.pdf").display()));
    run.assert_output_lacks("other.txt");
    run.assert_output_contains("on_success   mail to ops@contoso.com via account app");

    // Nothing moved, nothing created.
    assert_eq!(
        tree(&input),
        vec!["fresh.pdf", "old.pdf", "other.txt", "taken.pdf"]
    );
    assert_eq!(
        tree(&env.path("out")),
        vec![format!("{}/taken.pdf", year_month())]
    );
    assert!(
        !env.state_dir().join("rules").exists(),
        "check keeps no state"
    );
    assert!(env.delivered().is_empty());
}

#[test]
fn config_errors_name_the_rule_and_the_key() {
    let env = env_with_rules("");
    let cases: [(&str, &[&str]); 5] = [
        (
            r#"
[rules.invoices]
source = "{in}"
destination = "{in}/archive"
recursive = true
"#,
            &[
                "[rules.invoices] destination = ",
                "is inside source",
                "recursive = true",
            ],
        ),
        (
            r#"
[rules.invoices]
source = "{in}"
destination = "{out}/{yyyy}/{month}"
"#,
            &[
                "[rules.invoices] destination = ",
                "unknown placeholder `{month}`",
                "{yyyy} {yy} {mm} {dd}",
            ],
        ),
        (
            r#"
[rules.invoices]
source = "{in}"
destination = "{out}"
[rules.invoices.on_success]
mail = { account = "nope", to = ["ops@contoso.com"] }
"#,
            &[
                "[rules.invoices.on_success.mail] account = \"nope\"",
                "no such account (accounts: app, work)",
            ],
        ),
        (
            r#"
[rules.invoices]
source = "{in}"
destinaton = "{out}"
"#,
            &["[rules.invoices] destinaton", "did you mean destination?"],
        ),
        (
            r#"
[rules.invoices]
source = "{in}"
destination = "{out}"
[rules.invoices.on_error]
mail = { to = ["it@contoso.com"], subject = "{count} errors in {rule} on {server}" }
"#,
            &[
                "[rules.invoices.on_error.mail] subject = ",
                "unknown placeholder `{server}`",
            ],
        ),
    ];
    for (toml, needles) in cases {
        write_rules(&env, toml);
        let run = env.run(&["rules", "check"]);
        run.assert_code(78);
        run.assert_output_contains(&env.config_path.display().to_string());
        for n in needles {
            run.assert_output_contains(n);
        }
    }
}
