//! Real HTTP servers from Debian's packages on loopback, for the tests that
//! must not lean on hyper's tolerance: nginx and apache2 (mod_http2), each
//! serving HTTP/1.1 over TLS, HTTP/2 over TLS (ALPN) and HTTP/2 in
//! cleartext by prior knowledge, with certificates from a test CA. Each
//! logs `STATUS PROTOCOL PORT METHOD TARGET HOST` per request, so that a test
//! checks what the server saw, not only tandem's verdict. `.ci/setup`
//! installs both; each is stopped by its PID when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test CA and what it signed, as PEM files.
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// A server certificate for 127.0.0.1 and localhost, and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (mutual TLS), and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Makes a CA, a server and a client certificate in `dir`.
pub fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tandem test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let signed = |names: Vec<String>, common_name: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = signed(
        vec!["127.0.0.1".into(), "localhost".into()],
        "tandem test server",
    );
    let (client, client_key) = signed(Vec::new(), "tandem test client");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client),
        client_key: write("client.key", &client_key),
    }
}

/// One request as the server logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    pub port: u16,
    pub method: String,
    pub target: String,
    /// The host the request named: Host, or `:authority` over HTTP/2.
    pub host: String,
}

/// A running server and its ports.
pub struct Server {
    child: Child,
    dir: PathBuf,
    /// HTTP/1.1 over TLS only.
    pub tls_h1: u16,
    /// HTTP/2 and HTTP/1.1 over TLS, chosen by ALPN.
    pub tls_h2: u16,
    /// HTTP/2 in cleartext by prior knowledge (and HTTP/1.1).
    pub h2c: u16,
    /// HTTP/2 and HTTP/1.1 over TLS, asking for a client certificate from
    /// the test CA (nginx only; 0 elsewhere).
    pub mtls: u16,
}

impl Server {
    /// Every request logged so far on `port`.
    pub fn requests_on(&self, port: u16) -> Vec<Logged> {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split(' ');
                Some(Logged {
                    status: f.next()?.parse().ok()?,
                    protocol: f.next()?.to_string(),
                    port: f.next()?.parse().ok()?,
                    method: f.next()?.to_string(),
                    target: f.next()?.to_string(),
                    host: f.next()?.to_string(),
                })
            })
            .filter(|l| l.port == port)
            .collect()
    }

    /// The server's error log.
    pub fn error_log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        // What the server said before its own log was open goes to stderr.
        read("error.log") + &read("stderr.log")
    }

    /// Waits until every port accepts, or panics with the error log.
    fn ready(mut self, ports: &[u16]) -> Server {
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in ports.iter().filter(|&&p| p != 0) {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("server exited ({status}): {}", self.error_log());
                }
                assert!(Instant::now() < deadline, "not ready: {}", self.error_log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Lets the servers' unprivileged workers (www-data, nobody) reach `dir`.
fn open_to_workers(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.starts_with(std::env::temp_dir()) && path != std::env::temp_dir() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        }
        at = path.parent();
    }
}

/// nginx answering every request with 200 and a JSON body naming the method
/// and target.
pub fn nginx(dir: &Path, pki: &Pki) -> Server {
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    open_to_workers(&dir);
    let [tls_h1, tls_h2, h2c, mtls] = super::free_ports();
    let answer = r#"location / { default_type application/json; return 200 '{"method":"$request_method","target":"$request_uri"}\n'; }"#;
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let d = dir.display();
    let conf = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
           log_format t '$status $server_protocol $server_port $request_method $request_uri $host';\n\
           access_log {d}/access.log t;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{tls_h1} ssl; {tls} {answer} }}\n\
           server {{ listen 127.0.0.1:{tls_h2} ssl http2; {tls} {answer} }}\n\
           server {{ listen 127.0.0.1:{h2c} http2; {answer} }}\n\
           server {{ listen 127.0.0.1:{mtls} ssl http2; {tls}\n\
             ssl_client_certificate {ca}; ssl_verify_client on; {answer} }}\n\
         }}\n",
        ca = pki.ca.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args(["-c", path.to_str().unwrap(), "-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("nginx (.ci/setup installs it)");
    Server {
        child,
        dir,
        tls_h1,
        tls_h2,
        h2c,
        mtls,
    }
    .ready(&[tls_h1, tls_h2, h2c, mtls])
}

/// apache2 with mod_http2, serving one JSON file for every target.
pub fn apache(dir: &Path, pki: &Pki) -> Server {
    let dir = dir.join("apache");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    open_to_workers(&www);
    std::fs::write(www.join("ok.json"), "{\"ok\":true}\n").unwrap();
    let [tls_h1, tls_h2, h2c] = super::free_ports();
    let modules = "/usr/lib/apache2/modules";
    let d = dir.display();
    let tls = format!(
        "SSLEngine on\n  SSLCertificateFile {}\n  SSLCertificateKeyFile {}",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let load: String = [
        ("mpm_event", "mod_mpm_event"),
        ("authz_core", "mod_authz_core"),
        ("alias", "mod_alias"),
        ("socache_shmcb", "mod_socache_shmcb"),
        ("ssl", "mod_ssl"),
        ("http2", "mod_http2"),
    ]
    .iter()
    .map(|(name, file)| format!("LoadModule {name}_module {modules}/{file}.so\n"))
    .collect();
    let conf = format!(
        "ServerRoot {d}\nServerName 127.0.0.1\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\n\
         Mutex file:{d} default\nErrorLog {d}/error.log\nLogLevel info\n\
         User www-data\nGroup www-data\n{load}\
         Listen 127.0.0.1:{tls_h1}\nListen 127.0.0.1:{tls_h2}\nListen 127.0.0.1:{h2c}\n\
         SSLSessionCache shmcb:{d}/ssl_cache(512000)\n\
         LogFormat \"%>s %H %p %m %U%q %{{Host}}i\" t\nCustomLog {d}/access.log t\n\
         DocumentRoot {w}\nAliasMatch \"^/.*$\" \"{w}/ok.json\"\n\
         <Directory {w}>\n  Require all granted\n</Directory>\n\
         <VirtualHost 127.0.0.1:{tls_h1}>\n  {tls}\n  Protocols http/1.1\n</VirtualHost>\n\
         <VirtualHost 127.0.0.1:{tls_h2}>\n  {tls}\n  Protocols h2 http/1.1\n</VirtualHost>\n\
         <VirtualHost 127.0.0.1:{h2c}>\n  Protocols h2c http/1.1\n</VirtualHost>\n",
        w = www.display()
    );
    let path = dir.join("apache2.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("apache2")
        .args(["-f", path.to_str().unwrap(), "-DFOREGROUND"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("apache2 (.ci/setup installs it)");
    Server {
        child,
        dir,
        tls_h1,
        tls_h2,
        h2c,
        mtls: 0,
    }
    .ready(&[tls_h1, tls_h2, h2c])
}
