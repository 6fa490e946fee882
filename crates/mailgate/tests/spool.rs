//! The durable queue: what is enqueued is there after a crash, states move atomically, and
//! recovery puts a spool left by a killed process in order.

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailgate::spool::{Envelope, RecipientStatus, Spool, SpoolError, State};
use time::OffsetDateTime;

fn envelope(to: &[&str]) -> Envelope {
    let mut e = Envelope::new(
        "scanner@contoso.com",
        to.iter().map(|s| s.to_string()).collect(),
    );
    e.account = Some("work".into());
    e.origin = "test".into();
    e
}

fn ids(spool: &Spool, state: State) -> Vec<String> {
    spool
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.state == state)
        .map(|e| e.id)
        .collect()
}

#[test]
fn enqueue_stores_message_and_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path().join("spool")).unwrap();
    let body = b"Subject: scan\r\n\r\nhello\r\n".to_vec();
    let id = spool
        .enqueue(&envelope(&["bob@contoso.com", "carol@contoso.com"]), &body)
        .unwrap();
    let entry = spool.find(&id).unwrap();
    assert_eq!(entry.state, State::New);
    assert_eq!(entry.envelope.sender, "scanner@contoso.com");
    assert_eq!(entry.recipients.len(), 2);
    assert!(entry
        .recipients
        .iter()
        .all(|r| r.status == RecipientStatus::Pending));
    assert_eq!(entry.size, body.len() as u64);
    assert_eq!(spool.message(&id).unwrap(), body);
    assert!(dir
        .path()
        .join("spool/new")
        .join(format!("{id}.json"))
        .is_file());
    assert!(dir
        .path()
        .join("spool/data")
        .join(format!("{id}.eml"))
        .is_file());
    // Nothing left half-written.
    assert_eq!(
        fs::read_dir(dir.path().join("spool/tmp")).unwrap().count(),
        0
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("spool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[test]
fn a_message_needs_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let err = spool.enqueue(&envelope(&[]), b"x").unwrap_err();
    assert!(matches!(err, SpoolError::NoRecipients), "{err}");
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn concurrent_enqueues_share_directory_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path()).unwrap());
    let threads = 16;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        spool
                            .enqueue(
                                &envelope(&["bob@contoso.com"]),
                                format!("{t}-{i}").as_bytes(),
                            )
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let total = threads * per_thread;
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "ids are unique");
    assert_eq!(spool.counts().unwrap().new, total);
    let rounds = spool.sync_rounds();
    println!("{total} enqueues, {rounds} directory sync rounds");
    assert!(
        rounds >= 1 && rounds < total as u64,
        "group commit: {rounds} rounds for {total}"
    );
}

#[test]
fn claim_defer_fail_retry_delete() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = spool
        .enqueue(&envelope(&["bob@contoso.com", "carol@contoso.com"]), b"m")
        .unwrap();

    let mut e = spool.claim(&id).unwrap().expect("claimed");
    assert_eq!(e.state, State::Active);
    assert!(spool.claim(&id).unwrap().is_none(), "claimed only once");
    e.set_recipient(
        "bob@contoso.com",
        RecipientStatus::Delivered,
        Some("250 OK".into()),
    );
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    spool
        .defer(&mut e, later, "451 4.4.1 try later", None)
        .unwrap();
    assert_eq!(ids(&spool, State::Deferred), vec![id.clone()]);
    assert!(
        spool.due(OffsetDateTime::now_utc()).unwrap().is_empty(),
        "not due yet"
    );
    assert_eq!(spool.due(later).unwrap().len(), 1);

    // flush makes it due now; the delivered recipient stays delivered.
    assert_eq!(spool.flush().unwrap(), 1);
    let mut e = spool.claim(&id).unwrap().unwrap();
    assert_eq!(e.attempts, 1);
    assert_eq!(e.last_error.as_deref(), Some("451 4.4.1 try later"));
    let pending: Vec<_> = e.pending().map(|r| r.address.clone()).collect();
    assert_eq!(pending, vec!["carol@contoso.com".to_string()]);

    e.set_recipient(
        "carol@contoso.com",
        RecipientStatus::Failed,
        Some("550 5.1.1 unknown".into()),
    );
    spool.fail(&mut e, "refused").unwrap();
    let failed = spool.find(&id[..12]).unwrap();
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.failed_reason.as_deref(), Some("refused"));

    // retry by hand: failed recipients are tried again, delivered ones are not.
    spool.retry(&id).unwrap();
    let e = spool.find(&id).unwrap();
    assert_eq!(e.state, State::New);
    let pending: Vec<_> = e.pending().map(|r| r.address.clone()).collect();
    assert_eq!(pending, vec!["carol@contoso.com".to_string()]);

    spool.delete(&id).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(matches!(spool.find(&id), Err(SpoolError::NotFound { .. })));
    assert!(!dir.path().join("data").join(format!("{id}.eml")).exists());
}

#[test]
fn busy_and_ambiguous_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let a = spool.enqueue(&envelope(&["b@x"]), b"1").unwrap();
    let _b = spool.enqueue(&envelope(&["b@x"]), b"2").unwrap();
    assert!(matches!(spool.find(""), Err(SpoolError::NotFound { .. })));
    // Both ids start with the same millisecond-clock digits.
    assert!(matches!(
        spool.find(&a[..4]),
        Err(SpoolError::Ambiguous { count: 2, .. })
    ));
    spool.claim(&a).unwrap().unwrap();
    let err = spool.retry(&a).unwrap_err();
    assert!(matches!(err, SpoolError::Busy { .. }), "{err}");
}

#[test]
fn one_deliverer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let lock = spool.lock().unwrap();
    let other = Spool::open(dir.path()).unwrap();
    let err = other.lock().unwrap_err();
    assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
    drop(lock);
    other.lock().unwrap();
}

#[test]
fn recovery_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (in_flight, moved, lost_data, lost_record) = {
        let spool = Spool::open(root).unwrap();
        // Being delivered when the process died.
        let in_flight = spool.enqueue(&envelope(&["a@x"]), b"in flight").unwrap();
        spool.claim(&in_flight).unwrap().unwrap();
        // Died between writing the deferred record and removing the active one.
        let moved = spool.enqueue(&envelope(&["a@x"]), b"moved").unwrap();
        let mut e = spool.claim(&moved).unwrap().unwrap();
        let active = root.join("active").join(format!("{moved}.json"));
        let copy = fs::read(&active).unwrap();
        spool
            .defer(&mut e, OffsetDateTime::now_utc(), "421 busy", None)
            .unwrap();
        fs::write(&active, copy).unwrap();
        // A record whose message file disappeared.
        let lost_data = spool.enqueue(&envelope(&["a@x"]), b"gone").unwrap();
        fs::remove_file(root.join("data").join(format!("{lost_data}.eml"))).unwrap();
        // Acknowledged, but the process died before its record reached the disk.
        let lost_record = spool
            .enqueue(
                &envelope(&["b@x", "c@x"]),
                b"Subject: lost record\r\n\r\nbody",
            )
            .unwrap();
        fs::remove_file(root.join("new").join(format!("{lost_record}.json"))).unwrap();
        // Its name reached the disk but not all of its content: it was never acknowledged.
        let torn = spool.enqueue(&envelope(&["a@x"]), b"torn message").unwrap();
        fs::remove_file(root.join("new").join(format!("{torn}.json"))).unwrap();
        let torn_file = root.join("data").join(format!("{torn}.eml"));
        let bytes = fs::read(&torn_file).unwrap();
        fs::write(&torn_file, &bytes[..bytes.len() - 4]).unwrap();
        (in_flight, moved, lost_data, lost_record)
    };
    let age = |path: &std::path::Path| {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    };
    // Leftovers of enqueues that never completed: old and young temp files (a young one may be
    // an enqueue in progress in another process), and message files of an earlier version
    // without a header, one old and one young.
    let old_tmp = root.join("tmp").join("x.1.json");
    fs::write(&old_tmp, b"{").unwrap();
    age(&old_tmp);
    let young_tmp = root.join("tmp").join("0000000000000002.eml");
    fs::write(&young_tmp, b"being written").unwrap();
    let old_orphan = root.join("data").join("0000000000000000.eml");
    fs::write(&old_orphan, b"orphan").unwrap();
    age(&old_orphan);
    let young_orphan = root.join("data").join("0000000000000001.eml");
    fs::write(&young_orphan, b"being written by another process").unwrap();

    let spool = Spool::open(root).unwrap();
    let lock = spool.lock().unwrap();
    let report = spool.recover(&lock).unwrap();
    assert_eq!(report.requeued, vec![in_flight.clone()]);
    assert_eq!(report.restored, vec![lost_record.clone()]);
    assert_eq!(report.duplicates_resolved, 1);
    assert_eq!(
        report.orphans_removed, 2,
        "the old orphan and the torn message"
    );
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);

    assert_eq!(spool.find(&in_flight).unwrap().state, State::New);
    let m = spool.find(&moved).unwrap();
    assert_eq!(m.state, State::Deferred, "the newer record wins");
    assert_eq!(m.attempts, 1);
    let l = spool.find(&lost_data).unwrap();
    assert_eq!(l.state, State::Failed);
    assert!(l.failed_reason.unwrap().contains("missing"));
    assert!(!old_orphan.exists());
    assert!(
        young_orphan.exists(),
        "a young orphan may be an enqueue in progress"
    );
    assert!(!old_tmp.exists());
    assert!(
        young_tmp.exists(),
        "a young temp file may be an enqueue in progress"
    );
    assert_eq!(fs::read_dir(root.join("active")).unwrap().count(), 0);
    let r = spool.find(&lost_record).unwrap();
    assert_eq!(r.state, State::New);
    assert_eq!(r.envelope.recipients, ["b@x", "c@x"]);
    assert_eq!(
        spool.message(&lost_record).unwrap(),
        b"Subject: lost record\r\n\r\nbody"
    );
}

#[test]
fn message_files_of_an_earlier_version_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = spool.enqueue(&envelope(&["a@x"]), b"new").unwrap();
    // An earlier version stored the bare message.
    fs::write(
        dir.path().join("data").join(format!("{id}.eml")),
        b"Subject: old\r\n\r\nbare",
    )
    .unwrap();
    assert_eq!(spool.message(&id).unwrap(), b"Subject: old\r\n\r\nbare");
}

#[test]
fn held_messages_do_not_count_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = spool.enqueue(&envelope(&["a@x"]), b"m").unwrap();
    let mut e = spool.claim(&id).unwrap().unwrap();
    spool
        .defer(
            &mut e,
            OffsetDateTime::now_utc(),
            "not logged in",
            Some("account work needs a new login: run `mailgate login work`"),
        )
        .unwrap();
    let e = spool.find(&id).unwrap();
    assert_eq!(e.attempts, 0);
    assert!(e.held.unwrap().contains("mailgate login work"));
}

#[cfg(target_os = "linux")]
#[test]
fn finished_message_files_are_emptied_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let free = || -> Vec<fs::Metadata> {
        fs::read_dir(dir.path().join("free"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .collect()
    };
    let first = spool
        .enqueue(&envelope(&["a@x"]), b"Subject: first\r\n\r\nsecret body")
        .unwrap();
    spool.claim(&first).unwrap().unwrap();
    spool.complete(&first).unwrap();
    let kept = free();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].len(), 0, "nothing of a delivered message is kept");
    assert!(matches!(
        spool.find(&first),
        Err(SpoolError::NotFound { .. })
    ));

    let second = spool
        .enqueue(&envelope(&["b@x"]), b"Subject: second\r\n\r\nbody")
        .unwrap();
    assert!(free().is_empty(), "the emptied file was reused");
    assert_eq!(
        spool.message(&second).unwrap(),
        b"Subject: second\r\n\r\nbody"
    );
    assert_eq!(spool.find(&second).unwrap().envelope.recipients, ["b@x"]);
    // A reopened spool knows the files it can reuse.
    spool.claim(&second).unwrap().unwrap();
    spool.complete(&second).unwrap();
    let reopened = Spool::open(dir.path()).unwrap();
    reopened.enqueue(&envelope(&["c@x"]), b"third").unwrap();
    assert!(free().is_empty());
}
