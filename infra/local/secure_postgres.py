"""A throwaway PostgreSQL that takes TLS connections only, with a certificate from the local
CA (the secured Kafka's): `GROUPBUY_SECURE=1 make up` starts it beside the plain one."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from infra.local.common import port_from_env, run, state_dir
from infra.local.postgres import LocalPostgres
from infra.local.secure_kafka import LocalCA

# Only TLS, with a password; anything else is turned away.
HBA = "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all all reject\n"
TLS_SETTINGS = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"


@dataclass(frozen=True)
class LocalSecurePostgres(LocalPostgres):
    @classmethod
    def from_env(cls) -> LocalSecurePostgres:
        return cls(
            port=port_from_env("GROUPBUY_SECURE_PG_PORT", 25433),
            home=state_dir() / "postgres-secure",
        )

    @property
    def url(self) -> str:
        """The URL of a client that checks the server's certificate and host name."""
        ca = quote(str(LocalCA.from_env().pem), safe="/")
        return f"{super().url}?sslmode=verify-full&sslrootcert={ca}"

    def start(self) -> str:
        made = not self.is_running() and (self.data / "PG_VERSION").exists()
        if made and LocalCA.from_env().newer_than(self.data / "server.crt"):
            self._certify()  # a new CA since: a certificate it signs
        return super().start()

    def _init(self, bin_dir: Path) -> None:
        super()._init(bin_dir)
        self._certify()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(TLS_SETTINGS)
        (self.data / "pg_hba.conf").write_text(HBA)

    def _certify(self) -> None:
        """A key and a certificate for 127.0.0.1 that the local CA signs, in the data folder."""
        ca = LocalCA.from_env()
        ca.ensure()
        work = self.home / "tls"
        work.mkdir(exist_ok=True)
        key, request, certificate = work / "server.key", work / "server.csr", work / "server.crt"
        run(
            ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-subj", "/CN=127.0.0.1", "-out", str(request)],
            "openssl making PostgreSQL's key", timeout=60,
        )  # fmt: skip
        ca.sign(request, certificate)
        for source, name in ((key, "server.key"), (certificate, "server.crt")):
            target = self.data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)  # PostgreSQL refuses a key others may read
            if os.geteuid() == 0:
                shutil.chown(target, "postgres", "postgres")
        key.unlink()
