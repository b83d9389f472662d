//! A throw-away CA and a server certificate for 127.0.0.1/localhost, made with `openssl`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A CA that signed nothing here: a client trusting only it must refuse the server.
    pub unrelated_ca: PathBuf,
}

const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        let file = |name: &str| dir.join(name);
        let show = |name: &str| file(name).display().to_string();
        for (name, subject) in [("ca", "rstwatch-test-CA"), ("unrelated-ca", "unrelated-CA")] {
            openssl(&format!(
                "req -x509 {EC_KEY} -keyout {key} -out {cert} -days 2 -sha256 -subj /CN={subject} \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign",
                key = show(&format!("{name}.key")),
                cert = show(&format!("{name}.pem")),
            ));
        }
        openssl(&format!(
            "req {EC_KEY} -keyout {key} -out {csr} -subj /CN=localhost",
            key = show("server.key"),
            csr = show("server.csr"),
        ));
        fs::write(
            file("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write the server certificate extensions");
        openssl(&format!(
            "x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 2 -sha256 \
             -extfile {ext} -out {cert}",
            csr = show("server.csr"),
            ca = show("ca.pem"),
            ca_key = show("ca.key"),
            ext = show("server.ext"),
            cert = show("server.pem"),
        ));
        Certs {
            ca: file("ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server.key"),
            unrelated_ca: file("unrelated-ca.pem"),
        }
    }
}

/// Runs openssl with whitespace-separated arguments (temp paths hold no spaces).
fn openssl(args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run openssl ({error}): install the Debian package `openssl`")
        });
    assert!(
        output.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
