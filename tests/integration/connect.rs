//! Connecting as operators do: md5 and SCRAM passwords, TLS from `require` to `verify-full`,
//! and `pgcdc validate` naming every problem with its fix.

use std::process::Command;
use std::time::Duration;

use crate::harness::Harness;
use pgcdc::error::Code;

/// Login roles with passwords, made by dev/stack: pg_hba.conf asks md5 from `pgcdc_md5` and
/// scram-sha-256 from `pgcdc_scram`; `pgcdc_norep` lacks REPLICATION.
async fn grant(h: &Harness, role: &str) {
    h.sql(&format!(
        "ALTER TABLE t OWNER TO {role}; GRANT CREATE ON DATABASE {} TO {role};",
        h.db
    ))
    .await;
}

fn root_cert() -> String {
    format!("{}/.stack/tls/root.crt", env!("CARGO_MANIFEST_DIR"))
}

async fn streams_one_row(h: &mut Harness, auth: String) {
    h.postgres_auth = auth;
    let run = h.start("tables:\n  include: [public.t]\n").await;
    h.sql("INSERT INTO t VALUES (1, 'hello')").await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["v"], "hello");
    run.stop().await.unwrap();
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_every_sslmode() {
    let mut h = Harness::new("scram", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    grant(&h, "pgcdc_scram").await;
    for (i, mode) in ["verify-full", "verify-ca", "require", "prefer", "disable"]
        .iter()
        .enumerate()
    {
        let root = if mode.starts_with("verify") {
            format!("  sslrootcert: {}\n", root_cert())
        } else {
            String::new()
        };
        h.postgres_auth =
            format!("  user: pgcdc_scram\n  password: scram-secret\n  sslmode: {mode}\n{root}");
        let run = h.start("tables:\n  include: [public.t]\n").await;
        // The replication connection itself is encrypted unless sslmode is disable.
        let c = h.stack.pg_connect("postgres").await;
        let ssl: bool = c
            .query_one(
                "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = $1",
                &[&format!("pgcdc-{}", h.name)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            ssl,
            *mode != "disable",
            "sslmode {mode}: TLS in use = {ssl}"
        );
        h.sql(&format!("INSERT INTO t VALUES ({i}, '{mode}')"))
            .await;
        let recs = h.read("t", i + 1, Duration::from_secs(60)).await;
        assert_eq!(recs[i].value["after"]["v"], *mode, "sslmode {mode}");
        run.stop().await.unwrap();
        h.wait_slot(false, || true).await;
    }
    h.drop_slot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_over_required_tls() {
    let mut h = Harness::new("md5", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    grant(&h, "pgcdc_md5").await;
    streams_one_row(
        &mut h,
        "  user: pgcdc_md5\n  password: md5-secret\n  sslmode: require\n".into(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_untrusted_certificate_are_permanent_errors() {
    let mut h = Harness::new("badauth", "CREATE TABLE t (id int PRIMARY KEY);").await;
    // A CA that did not sign the server's certificate.
    let other = h.dir.join("other.crt");
    let key = h.dir.join("other.key");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl could not make a certificate");
    let cases = [
        ("  user: pgcdc_scram\n  password: wrong\n  sslmode: disable\n".to_owned(), "password authentication failed", Code::PostgresAuth),
        ("  user: pgcdc_scram\n  sslmode: disable\n".to_owned(), "set postgres.password", Code::PostgresAuth),
        (
            format!("  user: pgcdc_scram\n  password: scram-secret\n  sslmode: verify-full\n  sslrootcert: {}\n", other.display()),
            "TLS handshake failed (sslmode verify-full): the server certificate is not signed by a CA in postgres.sslrootcert",
            Code::PostgresTls,
        ),
    ];
    for (auth, expect, code) in cases {
        h.postgres_auth = auth;
        let err = h.run_once_expect_error("", Duration::from_secs(20)).await;
        assert!(
            !err.is_transient(),
            "case {expect:?}: {err} must be permanent"
        );
        let msg = err.to_string();
        assert!(msg.contains(expect), "expected {expect:?} in: {msg}");
        assert_eq!(err.code(), code, "{msg}");
        assert_eq!(err.next_step(), code.next_step(), "{msg}");
        assert!(
            msg.len() < 400 && !msg.contains('\n'),
            "one short line: {msg}"
        );
    }
    // verify-full by a name the certificate does not list (the stack's is for 127.0.0.1 and
    // localhost; "127.1" reaches the same server): the names it does list, in one line.
    h.stack.pg_host = "127.1".into();
    h.postgres_auth = format!(
        "  user: pgcdc_scram\n  password: scram-secret\n  sslmode: verify-full\n  sslrootcert: {}\n",
        root_cert()
    );
    let err = h.run_once_expect_error("", Duration::from_secs(20)).await;
    assert!(!err.is_transient(), "{err} must be permanent");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate is for 127.0.0.1, localhost, connected to 127.1")
            && msg.contains("sslmode verify-ca"),
        "{msg}"
    );
    assert!(
        msg.len() < 400 && !msg.contains('\n'),
        "one short line: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_each_problem_and_its_fix() {
    let mut h = Harness::new(
        "validate",
        "CREATE TABLE good (id int PRIMARY KEY);
         CREATE TABLE nothing (id int PRIMARY KEY);
         ALTER TABLE nothing REPLICA IDENTITY NOTHING;
         CREATE TABLE nokey (v text);",
    )
    .await;
    h.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO pgcdc_norep;")
        .await;
    let validate = |h: &Harness| {
        h.validate(
            "tables:\n  include: [public.good, public.nothing, public.nokey, public.missing]\n",
        )
    };

    h.postgres_auth = "  user: pgcdc_norep\n  sslmode: disable\n".into();
    let (code, out) = validate(&h);
    assert_eq!(code, Some(1), "{out}");
    let expect = [
        "lacks the REPLICATION attribute; run ALTER ROLE \"pgcdc_norep\" WITH REPLICATION",
        "table public.nothing has REPLICA IDENTITY NOTHING",
        "run ALTER TABLE public.nothing REPLICA IDENTITY DEFAULT",
        "table public.missing (tables.include) does not exist",
        "warning: connector",
        "table public.nokey has no primary key",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
    assert!(
        out.lines().count() >= 5,
        "each problem on its own line:\n{out}"
    );

    // Fixed: superuser, identity restored, the missing table dropped from the list.
    h.sql(
        "ALTER TABLE nothing REPLICA IDENTITY DEFAULT; CREATE TABLE missing (id int PRIMARY KEY);",
    )
    .await;
    h.postgres_auth = format!("  user: {}\n  sslmode: disable\n", h.stack.pg_user);
    let (code, out) = validate(&h);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok: 1 connector(s) ready"), "{out}");
}

/// The password of dev/stack's `pgcdc_odd`: what YAML would misread if `${VAR}` were pasted
/// into the text (` #` starts a comment, `: ` a mapping, quotes a quoted scalar).
const ODD_PASSWORD: &str = "a #b: \"c' d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_yaml_would_misread_works_from_the_environment() {
    let mut h = Harness::new("oddpw", "CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    grant(&h, "pgcdc_odd").await;
    h.postgres_auth =
        "  user: pgcdc_odd\n  password: ${PGCDC_ODD_PASSWORD}\n  sslmode: disable\n".into();
    let (d, c) = h.write_configs("tables:\n  include: [public.t]\n");
    let log = std::fs::File::create(h.dir.join("oddpw.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgcdc"))
        .arg("--config")
        .arg(&d)
        .arg("run")
        .arg(&c)
        .env("PGCDC_ODD_PASSWORD", ODD_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = h.dir.join("oddpw.log");
    h.wait_slot(true, || {
        let alive = child.try_wait().is_ok_and(|s| s.is_none());
        if !alive {
            eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        alive
    })
    .await;
    h.sql("INSERT INTO t VALUES (1, 'hello')").await;
    let recs = h.read("t", 1, Duration::from_secs(60)).await;
    assert_eq!(recs[0].value["after"]["v"], "hello");
    let _ = child.start_kill();
    let _ = child.wait().await;
    h.drop_slot().await;
}

/// `validate` and `tail` send the registry's basic-auth credentials, as the pipeline does:
/// against Apicurio behind nginx's `auth_basic` (dev/stack), both work with them and
/// `validate` names the settings without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_tail_authenticate_to_the_registry() {
    let h = Harness::new("regauth", "CREATE TABLE t (id int PRIMARY KEY);").await;
    let run = h.start("").await;
    h.sql("INSERT INTO t VALUES (7)").await;
    h.read("t", 1, Duration::from_secs(60)).await;
    run.stop().await.unwrap();

    let (url, user, password) = &h.stack.registry_auth;
    let (d, c) = h.write_configs("");
    let daemon = std::fs::read_to_string(&d).unwrap();
    let registry = format!("schema_registry:\n  url: {}\n", h.stack.registry_url);
    assert!(daemon.contains(&registry), "{daemon}");
    let with = |auth: &str| {
        let p = h.dir.join(format!("daemon-{}.yaml", auth.len()));
        std::fs::write(
            &p,
            daemon.replace(
                &registry,
                &format!("schema_registry:\n  url: {url}\n{auth}"),
            ),
        )
        .unwrap();
        p
    };
    let good = with(&format!("  username: {user}\n  password: {password}\n"));
    let bad = with("");
    let pgcdc = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_pgcdc"))
            .args(args)
            .output()
            .unwrap()
    };

    let out = pgcdc(&[
        "--config".as_ref(),
        good.as_os_str(),
        "validate".as_ref(),
        c.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let out = pgcdc(&[
        "--config".as_ref(),
        bad.as_os_str(),
        "validate".as_ref(),
        c.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("refused the credentials") && text.contains("schema_registry.username"),
        "{text}"
    );

    let topic = h.topic("t");
    let out = pgcdc(&[
        "--config".as_ref(),
        good.as_os_str(),
        "tail".as_ref(),
        topic.as_ref(),
        "--max-records".as_ref(),
        "1".as_ref(),
        "--idle-timeout".as_ref(),
        "30s".as_ref(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"id\":7"), "{text}");
    h.drop_slot().await;
}
