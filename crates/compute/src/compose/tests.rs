use std::time::Duration;

use super::*;
use crate::policy::HostLimits;

/// The default policy, with the registry of `FULL`'s private image allowed too.
fn policy() -> Policy {
    let mut p = Policy::default();
    p.allowed_registries
        .push("registry.example.com:5000".into());
    p
}

fn parse(text: &str) -> Result<ComposeApp, ComposeError> {
    ComposeApp::parse(text, &policy())
}

fn ok(text: &str) -> ComposeApp {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err(text: &str) -> ComposeError {
    match parse(text) {
        Ok(app) => panic!("accepted: {app:?}\n{text}"),
        Err(e) => e,
    }
}

const FULL: &str = r#"
version: "3.9"
name: ignored
x-common: &common
  restart: unless-stopped
  labels:
    team: web
services:
  web:
    <<: *common
    image: stratus-test/busybox:latest
    container_name: chosen-by-user
    command: httpd -f -p "80" -h /www
    entrypoint: ["/bin/sh", "-c"]
    environment:
      MODE: production
      PORT: 8080
      DEBUG: false
      EMPTY:
      GREETING: ${GREETING:-hello}
    ports:
      - "80"
      - "8080:80"
      - "127.0.0.1:8443:443"
      - 9000
      - "53/udp"
      - "7000-7001:7100-7101"
      - target: 3000
        published: 3001
        protocol: tcp
        mode: host
    expose: ["5000", 5001, "6000-6001/udp"]
    volumes:
      - data:/var/lib/data
      - data:/srv/ro:ro
      - /scratch
      - type: volume
        source: cache
        target: /cache
        read_only: true
        volume: {nocopy: true}
      - type: tmpfs
        target: /tmpfs
        tmpfs: {size: 1m, mode: 1777}
    tmpfs: ["/run:size=2m,mode=755", "/var/run"]
    depends_on:
      db:
        condition: service_healthy
      init:
        condition: service_completed_successfully
      cache:
        condition: service_started
        required: false
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost/"]
      interval: 1m30s
      timeout: 10s
      retries: 3
      start_period: 40s
      start_interval: 5s
    working_dir: /www
    user: "1000:1000"
    hostname: web-1
    domainname: example.org
    stop_grace_period: 20s
    stop_signal: SIGINT
    tty: true
    stdin_open: true
    init: true
    read_only: false
    cap_drop: [NET_RAW]
    shm_size: 128m
    extra_hosts: ["api.local:10.0.0.5", "v6.local=::1"]
    ulimits:
      nofile: {soft: 1024, hard: 4096}
      nproc: 512
    networks:
      front:
        aliases: [www]
      default:
    privileged: false
    cap_add: []
    network_mode: bridge
    deploy:
      replicas: 1
      resources: {limits: {cpus: "0.5", memory: 50M}}
    logging: {driver: json-file}
    mem_limit: 1g
    x-note: anything
  db:
    image: postgres:16
    environment: ["POSTGRES_PASSWORD=secret", "POSTGRES_DB", "EQ=a=b"]
    restart: on-failure:3
    healthcheck:
      test: pg_isready -U postgres
    links: ["init:setup"]
  init:
    image: registry.example.com:5000/team/tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    entrypoint: ""
    restart: "no"
    healthcheck:
      disable: true
    pull_policy: never
    network_mode: none
volumes:
  data:
  cache:
    labels: {kind: cache}
    driver: local
networks:
  front:
    driver: bridge
"#;

#[test]
fn parses_every_supported_key() {
    let app = ok(FULL);
    assert_eq!(app.service_names(), vec!["web", "db", "init"]);
    assert_eq!(
        app.volumes,
        vec![
            Volume {
                name: "data".into(),
                labels: BTreeMap::new()
            },
            Volume {
                name: "cache".into(),
                labels: [("kind".to_string(), "cache".to_string())].into()
            },
        ]
    );

    let web = app.service("web").unwrap();
    assert_eq!(web.image, "stratus-test/busybox:latest");
    assert_eq!(
        web.image_ref.canonical(),
        "docker.io/stratus-test/busybox:latest"
    );
    assert_eq!(web.image_source, ImageSource::Registry);
    let init = app.service("init").unwrap();
    assert_eq!(init.image_ref.registry, "registry.example.com:5000");
    assert!(init.image_ref.digest.is_some());
    assert_eq!(
        web.command.as_deref().unwrap(),
        ["httpd", "-f", "-p", "80", "-h", "/www"]
    );
    assert_eq!(web.entrypoint.as_deref().unwrap(), ["/bin/sh", "-c"]);
    assert_eq!(
        web.environment,
        vec![
            ("MODE".into(), Some("production".into())),
            ("PORT".into(), Some("8080".into())),
            ("DEBUG".into(), Some("false".into())),
            ("EMPTY".into(), None),
            ("GREETING".into(), Some("hello".into())),
        ]
    );
    let tcp = |c, h| PortSpec {
        container_port: c,
        published: h,
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        web.ports,
        vec![
            tcp(80, None),
            tcp(80, Some(8080)),
            tcp(443, Some(8443)),
            tcp(9000, None),
            PortSpec {
                container_port: 53,
                published: None,
                protocol: Protocol::Udp
            },
            tcp(7100, Some(7000)),
            tcp(7101, Some(7001)),
            tcp(3000, Some(3001)),
        ]
    );
    assert_eq!(
        web.expose,
        vec![
            ExposedPort {
                port: 5000,
                protocol: Protocol::Tcp
            },
            ExposedPort {
                port: 5001,
                protocol: Protocol::Tcp
            },
            ExposedPort {
                port: 6000,
                protocol: Protocol::Udp
            },
            ExposedPort {
                port: 6001,
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(
        web.mounts,
        vec![
            Mount::Volume {
                source: "data".into(),
                target: "/var/lib/data".into(),
                read_only: false,
                nocopy: false
            },
            Mount::Volume {
                source: "data".into(),
                target: "/srv/ro".into(),
                read_only: true,
                nocopy: false
            },
            Mount::Anonymous {
                target: "/scratch".into(),
                read_only: false
            },
            Mount::Volume {
                source: "cache".into(),
                target: "/cache".into(),
                read_only: true,
                nocopy: true
            },
            Mount::Tmpfs {
                target: "/tmpfs".into(),
                size_bytes: 1 << 20,
                mode: Some(0o1777)
            },
            Mount::Tmpfs {
                target: "/run".into(),
                size_bytes: 2 << 20,
                mode: Some(0o755)
            },
            Mount::Tmpfs {
                target: "/var/run".into(),
                size_bytes: Policy::default().default_tmpfs_bytes,
                mode: None
            },
        ]
    );
    assert_eq!(
        web.depends_on,
        vec![
            Dependency {
                service: "db".into(),
                condition: DependsCondition::Healthy
            },
            Dependency {
                service: "init".into(),
                condition: DependsCondition::CompletedSuccessfully
            },
        ]
    );
    assert_eq!(web.restart, Some(RestartPolicy::UnlessStopped));
    assert_eq!(
        web.healthcheck,
        Some(Healthcheck::Check {
            test: Some(
                ["CMD", "wget", "-q", "-O-", "http://localhost/"]
                    .map(String::from)
                    .to_vec()
            ),
            interval: Some(Duration::from_secs(90)),
            timeout: Some(Duration::from_secs(10)),
            retries: Some(3),
            start_period: Some(Duration::from_secs(40)),
            start_interval: Some(Duration::from_secs(5)),
        })
    );
    assert_eq!(web.working_dir.as_deref(), Some("/www"));
    assert_eq!(web.user.as_deref(), Some("1000:1000"));
    assert_eq!(web.hostname.as_deref(), Some("web-1"));
    assert_eq!(web.domainname.as_deref(), Some("example.org"));
    assert_eq!(web.labels, [("team".to_string(), "web".to_string())].into());
    assert_eq!(web.stop_grace_period, Some(Duration::from_secs(20)));
    assert_eq!(web.stop_signal.as_deref(), Some("SIGINT"));
    assert!(web.tty && web.stdin_open && web.init && !web.read_only);
    assert_eq!(web.cap_drop, vec!["NET_RAW"]);
    assert_eq!(web.shm_size, Some(128 << 20));
    assert_eq!(web.extra_hosts, vec!["api.local:10.0.0.5", "v6.local:::1"]);
    assert_eq!(
        web.ulimits,
        vec![
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096
            },
            Ulimit {
                name: "nproc".into(),
                soft: 512,
                hard: 512
            },
        ]
    );
    assert_eq!(web.aliases, vec!["www"]);
    assert_eq!(web.network, ServiceNetwork::Private);

    let db = app.service("db").unwrap();
    assert_eq!(
        db.environment,
        vec![
            ("POSTGRES_PASSWORD".into(), Some("secret".into())),
            ("POSTGRES_DB".into(), None),
            ("EQ".into(), Some("a=b".into())),
        ]
    );
    assert_eq!(
        db.restart,
        Some(RestartPolicy::OnFailure {
            max_retries: Some(3)
        })
    );
    assert_eq!(
        db.healthcheck,
        Some(Healthcheck::Check {
            test: Some(vec!["CMD-SHELL".into(), "pg_isready -U postgres".into()]),
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
            start_interval: None,
        })
    );

    let init = app.service("init").unwrap();
    assert_eq!(init.entrypoint, Some(vec![]));
    assert_eq!(init.restart, Some(RestartPolicy::No));
    assert_eq!(init.healthcheck, Some(Healthcheck::Disabled));
    assert_eq!(init.pull_policy, PullPolicy::Never);
    assert_eq!(init.network, ServiceNetwork::None);
    assert_eq!(
        init.aliases,
        vec!["setup"],
        "links give the alias to the target"
    );

    // Dependencies first, file order otherwise.
    let order: Vec<&str> = app
        .start_order()
        .into_iter()
        .map(|i| app.services[i].name.as_str())
        .collect();
    assert_eq!(order, vec!["db", "init", "web"]);
}

#[test]
fn published_ports_and_the_machine_port() {
    let app = ok(r#"
services:
  web:
    image: a
    ports: ["8080:80", "443"]
  admin:
    image: b
    ports: ["80:8080", "9000:9000/udp"]
"#);
    let ports = app.published_ports();
    assert_eq!(ports.len(), 4);
    assert_eq!(ports[0].service, "web");
    assert_eq!(ports[0].machine_port(), 8080);
    assert_eq!(ports[1].machine_port(), 443);
    // The published port wins: on a machine running compose, port 80 is admin's 8080.
    let p = app.resolve_port(80).unwrap();
    assert_eq!((p.service.as_str(), p.container_port), ("admin", 8080));
    let p = app.resolve_port(8080).unwrap();
    assert_eq!((p.service.as_str(), p.container_port), ("web", 80));
    let p = app.resolve_port(443).unwrap();
    assert_eq!((p.service.as_str(), p.container_port), ("web", 443));
    assert_eq!(
        app.resolve_port(9000),
        None,
        "UDP is never a TCP mapping target"
    );
    assert_eq!(app.resolve_port(22), None);
}

#[test]
fn command_strings_are_shell_split() {
    let app = ok(r#"
services:
  a:
    image: a
    command: sh -c 'echo "hello world" && sleep 1' --flag=$$HOME
"#);
    assert_eq!(
        app.services[0].command.as_deref().unwrap(),
        [
            "sh",
            "-c",
            "echo \"hello world\" && sleep 1",
            "--flag=$HOME"
        ]
    );
    let e = err("services:\n  a:\n    image: a\n    command: echo 'unclosed\n");
    assert_eq!(e.field(), Some("services.a.command"));
}

/// Each refused field is named exactly.
#[test]
fn refused_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        ("privileged: true", "services.web.privileged"),
        ("cap_add: [SYS_ADMIN]", "services.web.cap_add"),
        ("devices: ['/dev/kvm:/dev/kvm']", "services.web.devices"),
        ("network_mode: host", "services.web.network_mode"),
        ("network_mode: 'service:db'", "services.web.network_mode"),
        ("network_mode: 'container:abc'", "services.web.network_mode"),
        ("pid: host", "services.web.pid"),
        ("pid: 'container:abc'", "services.web.pid"),
        ("ipc: host", "services.web.ipc"),
        ("ipc: 'service:db'", "services.web.ipc"),
        ("uts: host", "services.web.uts"),
        ("userns_mode: host", "services.web.userns_mode"),
        ("cgroup: host", "services.web.cgroup"),
        (
            "security_opt: ['seccomp:unconfined']",
            "services.web.security_opt",
        ),
        (
            "sysctls: {net.core.somaxconn: 1024}",
            "services.web.sysctls",
        ),
        ("cgroup_parent: /", "services.web.cgroup_parent"),
        ("volumes_from: [db]", "services.web.volumes_from"),
        ("build: .", "services.web.build"),
        ("build: {context: .}", "services.web.build"),
        ("env_file: .env", "services.web.env_file"),
        ("secrets: [token]", "services.web.secrets"),
        ("configs: [cfg]", "services.web.configs"),
        (
            "extends: {file: other.yml, service: x}",
            "services.web.extends",
        ),
        ("runtime: runc", "services.web.runtime"),
        ("oom_kill_disable: true", "services.web.oom_kill_disable"),
        ("use_api_socket: true", "services.web.use_api_socket"),
        ("volumes: ['./html:/www']", "services.web.volumes[0]"),
        ("volumes: ['/etc:/host-etc:ro']", "services.web.volumes[0]"),
        (
            "volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
            "services.web.volumes[0]",
        ),
        ("volumes: ['~/x:/x']", "services.web.volumes[0]"),
        (
            "volumes: [{type: bind, source: /, target: /host}]",
            "services.web.volumes[0].type",
        ),
        ("pull_policy: build", "services.web.pull_policy"),
        (
            "labels: {io.stratus.instance: other}",
            "services.web.labels.io.stratus.instance",
        ),
    ];
    for (snippet, field) in cases {
        let yaml = format!("services:\n  web:\n    image: a\n    {snippet}\n  db:\n    image: b\n");
        let e = err(&yaml);
        assert!(
            matches!(e, ComposeError::Refused { .. }),
            "{snippet}: expected a refusal, got {e}"
        );
        assert_eq!(e.field(), Some(*field), "{snippet}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{field} is not allowed: ")),
            "{e}"
        );
    }
}

#[test]
fn refused_top_level_sections_are_named() {
    let base = "services:\n  web:\n    image: a\n";
    let cases: &[(&str, &str)] = &[
        (
            "networks:\n  outside:\n    external: true\n",
            "networks.outside.external",
        ),
        ("networks:\n  n:\n    driver: host\n", "networks.n.driver"),
        (
            "networks:\n  n:\n    driver_opts: {a: b}\n",
            "networks.n.driver_opts",
        ),
        (
            "networks:\n  n:\n    ipam: {config: [{subnet: 10.0.0.0/8}]}\n",
            "networks.n.ipam",
        ),
        ("volumes:\n  v:\n    external: true\n", "volumes.v.external"),
        ("volumes:\n  v:\n    driver: nfs\n", "volumes.v.driver"),
        (
            "volumes:\n  v:\n    driver_opts: {type: none, o: bind, device: /etc}\n",
            "volumes.v.driver_opts",
        ),
        ("secrets:\n  s:\n    file: ./s.txt\n", "secrets"),
        ("configs:\n  c:\n    file: ./c.txt\n", "configs"),
        ("include:\n  - other.yml\n", "include"),
    ];
    for (snippet, field) in cases {
        let e = err(&format!("{base}{snippet}"));
        assert!(matches!(e, ComposeError::Refused { .. }), "{snippet}: {e}");
        assert_eq!(e.field(), Some(*field), "{snippet}: {e}");
    }
}

#[test]
fn harmless_values_of_policed_keys_pass() {
    ok(r#"
services:
  web:
    image: a
    privileged: false
    cap_add: []
    devices: []
    security_opt: []
    network_mode: default
    ipc: private
    cgroup: private
volumes:
  v:
    driver: local
    external: false
networks:
  n:
    driver: bridge
    external: false
    internal: true
"#);
}

#[test]
fn unknown_fields_are_unsupported() {
    let cases: &[(&str, &str)] = &[
        ("services:\n  x:\n    image: a\n    foo: 1\n", "services.x.foo"),
        (
            "services:\n  x:\n    image: a\n    ports: [{target: 80, foo: 1}]\n",
            "services.x.ports[0].foo",
        ),
        (
            "services:\n  x:\n    image: a\n    healthcheck: {test: [CMD, x], foo: 1}\n",
            "services.x.healthcheck.foo",
        ),
        (
            "services:\n  x:\n    image: a\n    depends_on: {y: {condition: service_started, foo: 1}}\n  y:\n    image: b\n",
            "services.x.depends_on.y.foo",
        ),
        ("services:\n  x:\n    image: a\n    profiles: [debug]\n", "services.x.profiles"),
        ("services:\n  x:\n    image: a\nfoo: 1\n", "foo"),
        ("services:\n  x:\n    image: a\nvolumes:\n  v:\n    foo: 1\n", "volumes.v.foo"),
        ("services:\n  x:\n    image: a\n    ulimits: {rtprio: 1}\n", "services.x.ulimits.rtprio"),
    ];
    for (yaml, field) in cases {
        let e = err(yaml);
        assert_eq!(
            e,
            ComposeError::Unsupported {
                field: field.to_string()
            },
            "{yaml}"
        );
        assert_eq!(e.to_string(), format!("unsupported compose field {field}"));
    }
}

#[test]
fn invalid_values_name_their_field() {
    let cases: &[(&str, &str)] = &[
        ("ports: ['99999:80']", "services.x.ports[0]"),
        ("ports: ['80/icmp']", "services.x.ports[0]"),
        ("ports: [{published: 80}]", "services.x.ports[0].target"),
        ("expose: ['abc']", "services.x.expose[0]"),
        ("volumes: ['undeclared:/data']", "services.x.volumes[0]"),
        ("volumes: ['data']", "services.x.volumes[0]"),
        (
            "volumes: [{type: volume, source: nope, target: /d}]",
            "services.x.volumes[0].source",
        ),
        (
            "volumes: [{type: weird, target: /d}]",
            "services.x.volumes[0].type",
        ),
        ("depends_on: [ghost]", "services.x.depends_on[0]"),
        ("depends_on: [x]", "services.x.depends_on[0]"),
        (
            "depends_on: {y: {condition: service_done}}",
            "services.x.depends_on.y.condition",
        ),
        ("restart: sometimes", "services.x.restart"),
        ("restart: on-failure:100000", "services.x.restart"),
        (
            "healthcheck: {test: [BOGUS]}",
            "services.x.healthcheck.test",
        ),
        (
            "healthcheck: {test: [CMD, x], interval: 10ms}",
            "services.x.healthcheck.interval",
        ),
        (
            "healthcheck: {test: [CMD, x], timeout: soon}",
            "services.x.healthcheck.timeout",
        ),
        ("working_dir: relative/dir", "services.x.working_dir"),
        ("stop_grace_period: 10h", "services.x.stop_grace_period"),
        ("tmpfs: ['/big:size=10g']", "services.x.tmpfs[0]"),
        ("shm_size: 10g", "services.x.shm_size"),
        ("ulimits: {nofile: 10000000}", "services.x.ulimits.nofile"),
        ("environment: ['=x']", "services.x.environment"),
        ("deploy: {replicas: 3}", "services.x.deploy.replicas"),
        ("scale: 2", "services.x.scale"),
        ("networks: [elsewhere]", "services.x.networks[0]"),
        ("hostname: 'bad host'", "services.x.hostname"),
        ("extra_hosts: ['nocolon']", "services.x.extra_hosts"),
        ("command: {a: b}", "services.x.command"),
    ];
    for (snippet, field) in cases {
        let yaml = format!(
            "services:\n  x:\n    image: a\n    {snippet}\n  y:\n    image: b\nvolumes:\n  data:\n"
        );
        let e = err(&yaml);
        assert_eq!(e.field(), Some(*field), "{snippet}: {e}");
    }
    let e = err("services:\n  x:\n    image: 'Upper/Case'\n");
    assert_eq!(e.field(), Some("services.x.image"));
    let e = err("services:\n  x:\n    command: [a]\n");
    assert_eq!(e.field(), Some("services.x.image"));
    let e = err("services:\n  'bad name!':\n    image: a\n");
    assert_eq!(e.field(), Some("services.bad name!"));
    let e = err("services:\n  x:\n    image: a\n    volumes: ['/a', '/a']\n");
    assert_eq!(e.field(), Some("services.x.volumes"));
}

#[test]
fn images_must_come_from_an_allowed_registry_or_the_local_list() {
    let local = policy().with_local_images(["stratus-test/busybox:latest"]);
    let app = ComposeApp::parse(
        "services:\n  a:\n    image: stratus-test/busybox\n  b:\n    image: nginx\n",
        &local,
    )
    .unwrap();
    assert_eq!(app.services[0].image_source, ImageSource::Local);
    assert_eq!(app.services[1].image_source, ImageSource::Registry);
    for (image, why) in [
        ("127.0.0.1:5000/x", "IP address"),
        ("'127.0.0.1:5000/x:1'", "IP address"),
        ("10.1.2.3/x", "IP address"),
        ("192.168.1.1:443/team/x", "IP address"),
        ("169.254.169.254/latest", "IP address"),
        ("'[::1]:5000/x'", "IP address"),
        ("'[fd00::1]/x'", "IP address"),
        ("localhost:5000/x", "on this host"),
        ("localhost/x", "on this host"),
        ("ghcr.io/x/y", "registry ghcr.io is not allowed"),
        ("metadata.google.internal/x", "is not allowed"),
    ] {
        let e = err(&format!("services:\n  web:\n    image: {image}\n"));
        assert_eq!(e.field(), Some("services.web.image"), "{image}: {e}");
        assert!(e.to_string().contains(why), "{image}: {e}");
        assert!(
            e.to_string().contains("images come from docker.io"),
            "{image}: {e}"
        );
    }
}

#[test]
fn volumes_are_bounded() {
    let named: String = (0..17).map(|i| format!("  v{i}:\n")).collect();
    let e = err(&format!("services:\n  x:\n    image: a\nvolumes:\n{named}"));
    assert_eq!(e.field(), Some("volumes"), "{e}");
    assert!(e.to_string().contains("at most 16"), "{e}");
    // Anonymous volumes count too (each is a volume on the engine).
    let anon: String = (0..9).map(|i| format!("'/a{i}', ")).collect();
    let e = err(&format!(
        "services:\n  x:\n    image: a\n    volumes: [{anon}]\n  y:\n    image: a\n    volumes: [{anon}]\n"
    ));
    assert_eq!(e.field(), Some("services.y.volumes"), "{e}");
    let sixteen: String = (0..16).map(|i| format!("  v{i}:\n")).collect();
    ok(&format!(
        "services:\n  x:\n    image: a\nvolumes:\n{sixteen}"
    ));
}

#[test]
fn ulimits_stay_within_the_host_hard_limits() {
    let host = HostLimits {
        nofile: Some(20_000),
        nproc: Some(1000),
        memlock: Some(8 << 20),
        core: None,
        stack: Some(8 << 20),
    };
    let p = Policy {
        host_limits: host,
        ..policy()
    };
    let parse = |u: &str| {
        ComposeApp::parse(
            &format!("services:\n  x:\n    image: a\n    ulimits: {u}\n"),
            &p,
        )
    };
    for (u, field) in [
        ("{memlock: -1}", "services.x.ulimits.memlock"),
        (
            "{memlock: {soft: -1, hard: -1}}",
            "services.x.ulimits.memlock",
        ),
        ("{memlock: 8388609}", "services.x.ulimits.memlock"),
        ("{nproc: -1}", "services.x.ulimits.nproc"),
        ("{nproc: 1001}", "services.x.ulimits.nproc"),
        ("{nofile: 20001}", "services.x.ulimits.nofile"),
        (
            "{nofile: {soft: 100, hard: 20001}}",
            "services.x.ulimits.nofile",
        ),
        ("{nofile: -1}", "services.x.ulimits.nofile"),
        (
            "{nofile: {soft: 2048, hard: 1024}}",
            "services.x.ulimits.nofile",
        ),
        ("{stack: -1}", "services.x.ulimits.stack"),
        ("{rtprio: 1}", "services.x.ulimits.rtprio"),
    ] {
        let e = parse(u).unwrap_err();
        assert_eq!(e.field(), Some(field), "{u}: {e}");
    }
    let app = parse("{nofile: {soft: 1024, hard: 20000}, nproc: 1000, memlock: 65536, core: -1}")
        .unwrap();
    assert_eq!(app.services[0].ulimits.len(), 4);
    // The policy's own cap on nofile applies below a larger host limit.
    let roomy = Policy {
        host_limits: HostLimits {
            nofile: Some(1 << 20),
            ..host
        },
        ..policy()
    };
    assert!(ComposeApp::parse(
        "services:\n  x:\n    image: a\n    ulimits: {nofile: 65537}\n",
        &roomy
    )
    .is_err());
}

#[test]
fn dependency_cycles_are_refused() {
    let e = err(r#"
services:
  a: {image: a, depends_on: [b]}
  b: {image: b, depends_on: [c]}
  c: {image: c, depends_on: [a]}
"#);
    assert!(matches!(&e, ComposeError::Invalid { message, .. } if message.contains("cycle")));
    assert!(e.field().unwrap().ends_with(".depends_on"));
}

#[test]
fn documents_that_are_not_compose_files() {
    assert!(matches!(err("{not: [valid"), ComposeError::NotYaml(_)));
    assert!(matches!(err("\u{0}\u{1}binary"), ComposeError::NotYaml(_)));
    assert_eq!(err(""), ComposeError::NoServices);
    assert_eq!(err("version: '3'\n"), ComposeError::NoServices);
    assert_eq!(err("services: {}\n"), ComposeError::NoServices);
    assert_eq!(err("- a\n- b\n"), ComposeError::NotCompose);
    assert_eq!(err("just a string"), ComposeError::NotCompose);
    assert_eq!(
        err("services: [web]\n").field(),
        Some("services"),
        "services must be a mapping"
    );
    assert_eq!(err("services:\n  x:\n").field(), Some("services.x.image"));
}

#[test]
fn limits_on_size_services_and_expansion() {
    let big = format!(
        "services:\n  x:\n    image: a\nx-pad: '{}'\n",
        "a".repeat(300_000)
    );
    assert!(matches!(err(&big), ComposeError::TooLarge { .. }));

    let mut many = String::from("services:\n");
    for i in 0..9 {
        many.push_str(&format!("  s{i}:\n    image: a\n"));
    }
    assert_eq!(
        err(&many),
        ComposeError::TooManyServices { count: 9, max: 8 }
    );
    let roomy = Policy {
        max_services: 9,
        ..Policy::default()
    };
    assert!(ComposeApp::parse(&many, &roomy).is_ok());

    let mut bomb = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x-a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("services:\n  x:\n    image: a\n    command: *a11\n");
    let started = std::time::Instant::now();
    assert!(matches!(err(&bomb), ComposeError::TooComplex { .. }));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn interpolation_never_sees_the_server_environment() {
    // PATH is set in every test process; compose would substitute it, we must not.
    let app = ok("services:\n  x:\n    image: a\n    environment:\n      P: \"${PATH}\"\n      D: \"${NOPE:-fallback}\"\n");
    assert_eq!(
        app.services[0].environment,
        vec![
            ("P".into(), Some(String::new())),
            ("D".into(), Some("fallback".into()))
        ]
    );
    let e = err(
        "services:\n  x:\n    image: a\n    environment:\n      P: \"${SECRET:?must be set}\"\n",
    );
    assert_eq!(e.field(), Some("services.x.environment.P"));
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        err("services:\n  web:\n    image: a\n    privileged: true\n").to_string(),
        "services.web.privileged is not allowed: privileged containers can take over the shared host"
    );
    assert_eq!(
        err("services:\n  x:\n    image: a\n    foo: 1\n").to_string(),
        "unsupported compose field services.x.foo"
    );
}
