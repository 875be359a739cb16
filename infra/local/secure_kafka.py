"""A single-node Kafka that demands who you are: SASL_SSL with SCRAM-SHA-512, TLS from a CA
made at its first start, and the KRaft StandardAuthorizer (no ACL, no access).

`GROUPBUY_SECURE=1 make up` starts it beside the plain broker. Its super-user `admin` is
groupbuy's own services; tenants get users and ACLs of their own. Secrets are files in its
state folder (mode 0600), never command-line arguments, so no log holds them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from infra.local.common import LOOPBACK, LauncherError, port_from_env, run, state_dir
from infra.local.kafka import LocalKafka, java_binary

ADMIN = "admin"  # groupbuy's services: a super-user
MECHANISM = "SCRAM-SHA-512"
CERTIFICATE_DAYS = "825"
NAMES = "SAN=IP:127.0.0.1,DNS:localhost"  # what the local services' certificates are for


@dataclass(frozen=True)
class LocalSecureKafka(LocalKafka):
    @classmethod
    def from_env(cls) -> LocalSecureKafka:
        return cls(
            port=port_from_env("GROUPBUY_SECURE_KAFKA_PORT", 29094),
            controller_port=port_from_env("GROUPBUY_SECURE_KAFKA_CONTROLLER_PORT", 29095),
            home=state_dir() / "kafka-secure",
        )

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate, in PEM: what clients verify with."""
        return LocalCA.from_env().pem

    @property
    def password_file(self) -> Path:
        """The admin user's password."""
        return self.home / "admin.password"

    def exports(self) -> dict[str, str]:
        """The GROUPBUY_* variables of groupbuy's services on this broker."""
        return {
            "GROUPBUY_KAFKA_BOOTSTRAP": self.bootstrap,
            "GROUPBUY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "GROUPBUY_KAFKA_SASL_MECHANISM": MECHANISM,
            "GROUPBUY_KAFKA_USERNAME": ADMIN,
            "GROUPBUY_KAFKA_PASSWORD_FILE": str(self.password_file),
            "GROUPBUY_KAFKA_CA_FILE": str(self.ca_file),
        }

    def _broker_settings(self) -> dict[str, str]:
        tls = self.home / "tls"
        tls.mkdir(exist_ok=True)
        ca = LocalCA.from_env()
        ca.ensure()
        store_password = secret(self.home / "keystore.password")
        admin_password = secret(self.password_file)
        keystore = tls / "broker.p12"
        if not (tls / "truststore.p12").exists() or ca.newer_than(keystore):
            make_broker_certificate(ca, tls, self.home / "keystore.password")
        jaas = "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"
        return super()._broker_settings() | {
            "listeners": f"SASL_SSL://{self.bootstrap},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.bootstrap}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            jaas: (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN}" password="{admin_password}";'
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": store_password,
            "ssl.key.password": store_password,
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.location": str(tls / "truststore.p12"),
            "ssl.truststore.password": store_password,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener is plaintext on loopback, and its peer anonymous.
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _format_secrets(self) -> list[str]:
        password = self.password_file.read_text()
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={password}]"]


def secret(path: Path) -> str:
    """The secret kept in `path`, made the first time (readable by its owner only)."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    return path.read_text()


class LocalCA:
    """The local certificate authority of the secured services, made at the first start with
    the JDK's keytool: `ca.p12` (its key, for signing) and `ca.pem` (what clients trust)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.keystore = home / "ca.p12"
        self.pem = home / "ca.pem"
        self.password_file = home / "ca.password"

    @classmethod
    def from_env(cls) -> LocalCA:
        return cls(state_dir() / "ca")

    def ensure(self) -> None:
        if self.keystore.exists() and self.pem.exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        secret(self.password_file)
        for stale in (self.keystore, self.pem):
            stale.unlink(missing_ok=True)
        keytool(
            "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
            "-dname", "CN=groupbuy local CA", "-ext", "bc:c", "-validity", CERTIFICATE_DAYS,
            "-keystore", str(self.keystore), "-storetype", "PKCS12", *self.password(),
        )  # fmt: skip
        keytool(
            "-exportcert", "-rfc", "-alias", "ca", "-keystore", str(self.keystore),
            *self.password(), "-file", str(self.pem),
        )  # fmt: skip
        if not self.pem.exists():
            raise LauncherError(f"keytool made no CA certificate in {self.home}")

    def password(self) -> list[str]:
        return ["-storepass:file", str(self.password_file)]

    def newer_than(self, path: Path) -> bool:
        """Whether `path` is missing, or older than this CA (so not signed by it)."""
        return not path.exists() or path.stat().st_mtime < self.pem.stat().st_mtime

    def sign(self, request: Path, certificate: Path) -> None:
        """Sign the certificate request `request` for 127.0.0.1 and localhost, in PEM."""
        keytool(
            "-gencert", "-alias", "ca", "-keystore", str(self.keystore), *self.password(),
            "-rfc", "-ext", NAMES, "-validity", CERTIFICATE_DAYS,
            "-infile", str(request), "-outfile", str(certificate),
        )  # fmt: skip


def keytool(*arguments: str) -> None:
    tool = str(Path(java_binary()).with_name("keytool"))
    run([tool, *arguments], f"keytool {arguments[0]}", timeout=60)


def make_broker_certificate(ca: LocalCA, tls: Path, store_password_file: Path) -> None:
    """The broker's key and a certificate the CA signs (broker.p12), and a truststore of the
    CA for the broker as its own client (truststore.p12)."""
    password = ["-storepass:file", str(store_password_file)]
    broker, trust = tls / "broker.p12", tls / "truststore.p12"
    for stale in (broker, trust):
        stale.unlink(missing_ok=True)
    keytool(
        "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
        "-dname", "CN=127.0.0.1", "-ext", NAMES, "-validity", CERTIFICATE_DAYS,
        "-keystore", str(broker), "-storetype", "PKCS12", *password,
    )  # fmt: skip
    keytool(
        "-certreq", "-alias", "broker", "-keystore", str(broker), *password,
        "-file", str(tls / "broker.csr"),
    )  # fmt: skip
    ca.sign(tls / "broker.csr", tls / "broker.pem")
    for alias, keystore, certificate in [
        ("ca", broker, ca.pem),
        ("broker", broker, tls / "broker.pem"),
        ("ca", trust, ca.pem),
    ]:
        keytool(
            "-importcert", "-noprompt", "-alias", alias, "-file", str(certificate),
            "-keystore", str(keystore), "-storetype", "PKCS12", *password,
        )  # fmt: skip
