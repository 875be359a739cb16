"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.local.common import (
    LOOPBACK,
    LauncherError,
    cache_dir,
    port_answers,
    port_from_env,
    read_pid,
    require_free_port,
    run,
    state_dir,
    stop_pid,
    tail,
    wait_until,
)

POM = Path(__file__).resolve().parent.parent / "pom.xml"
STARTED = "Kafka Server started"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HEAP = os.environ.get("GROUPBUY_KAFKA_HEAP", "768m")

# Sized for a 2-core machine; replication factors of 1 so transactions work on one node.
BROKER_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "num.partitions": "4",
    "auto.create.topics.enable": "false",  # topics are created by groupbuy, with their settings
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.retention.hours": "168",
    "message.max.bytes": "1048588",
}


@dataclass(frozen=True)
class Launch:
    """A broker's JVM just started, and where its log stood before it."""

    process: subprocess.Popen[bytes]
    since: int


@dataclass(frozen=True)
class LocalKafka:
    port: int
    controller_port: int
    home: Path

    @classmethod
    def from_env(cls) -> LocalKafka:
        return cls(
            port=port_from_env("GROUPBUY_KAFKA_PORT", 29092),
            controller_port=port_from_env("GROUPBUY_KAFKA_CONTROLLER_PORT", 29093),
            home=state_dir() / "kafka",
        )

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def heap(self) -> str:
        return HEAP

    def is_running(self) -> bool:
        return read_pid(self.pid_file) is not None and port_answers(self.port)

    def start(self) -> str:
        """Start the broker unless ours already runs; return a line saying which."""
        if self.is_running():
            return f"Kafka already running at {self.bootstrap}"
        check_java()
        libs = fetch_jars()
        require_free_port(self.port, "Kafka", "GROUPBUY_KAFKA_PORT")
        require_free_port(
            self.controller_port, "Kafka controller", "GROUPBUY_KAFKA_CONTROLLER_PORT"
        )
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.home / "data" / "meta.properties").exists():
            self._format(libs, config)
        self._await(self._spawn(libs, config))
        return (
            f"Apache Kafka {kafka_version(libs)} started at {self.bootstrap} (log: {self.log_file})"
        )

    def stop(self) -> bool:
        return stop_pid(self.pid_file)

    def _write_config(self) -> Path:
        config = self.home / "server.properties"
        config.touch(mode=0o600)  # a secured broker's holds its secrets
        config.write_text("".join(f"{k}={v}\n" for k, v in self._broker_settings().items()))
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J_CONFIG)
        return config

    def _broker_settings(self) -> dict[str, str]:
        return BROKER_SETTINGS | {
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "log.dirs": str(self.home / "data"),
        }

    def _format(self, libs: Path, config: Path) -> None:
        command = [*java_command(libs, self.home), "kafka.tools.StorageTool", "format"]
        command += ["--cluster-id", self._cluster_id(), "--config", str(config)]
        secret = self._format_secrets()
        # A command that carries a secret is not written to the log.
        log = None if secret else self.log_file
        run([*command, *secret], "formatting Kafka's storage", timeout=120, log=log)

    def _cluster_id(self) -> str:
        """The id its storage is formatted with: a new one for a broker of its own."""
        return new_cluster_id()

    def _format_secrets(self) -> list[str]:
        """Arguments of the storage format that carry secrets (a secured broker's users)."""
        return []

    def _spawn(self, libs: Path, config: Path) -> Launch:
        """Start the JVM, without waiting for it: the nodes of a cluster start together."""
        since = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [*java_command(libs, self.home, self.heap), "kafka.Kafka", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make up`, like a daemon
            )
        self.pid_file.write_text(str(process.pid))
        return Launch(process, since)

    def _await(self, launch: Launch) -> None:
        """Wait until the broker says it started; stop it and raise if it cannot."""
        process = launch.process

        def failure() -> str | None:
            if process.poll() is None:
                return None
            return f"Kafka exited with code {process.returncode}: {tail(self.log_file)}"

        def started() -> bool:
            # Only this start's lines: the log keeps those of the starts before it.
            with self.log_file.open("rb") as log:
                log.seek(launch.since)
                said = log.read().decode(errors="replace")
            return STARTED in said and port_answers(self.port)

        try:
            wait_until(started, timeout=120, failure=failure)
        except LauncherError:
            self.stop()
            raise


LOG4J_CONFIG = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.org.name = org.apache.kafka
logger.org.level = WARN
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = INFO
"""


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def java_command(libs: Path, home: Path, heap: str = HEAP) -> list[str]:
    return [
        java_binary(),
        f"-Xmx{heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
    ]


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise LauncherError(
            "Java is not installed: Kafka needs Java 17 or later "
            "(apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
        )
    return java


def check_java() -> None:
    output = run([java_binary(), "-version"], "checking Java", timeout=30)
    match = re.search(r'version "(\d+)', output)
    if not match or int(match.group(1)) < 17:
        raise LauncherError(f"Kafka 4 needs Java 17 or later; found: {output.splitlines()[0]}")


def fetch_jars() -> Path:
    """Kafka's jars, copied by Maven into the cache once per version of infra/pom.xml."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    libs = cache_dir() / f"kafka-{digest}" / "libs"
    if libs.is_dir():
        return libs
    if shutil.which("mvn") is None:
        raise LauncherError(
            "Maven (mvn) is not installed: it fetches Kafka's jars (apt-get install maven)"
        )
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = ["mvn", "-B", "-q", "-Dstyle.color=never", "-f", str(POM)]
    command += [
        f"-Dmaven.repo.local={cache_dir() / 'm2'}",
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
    ]
    command += [f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
    log = cache_dir() / "maven.log"
    run(command, "Maven fetching Apache Kafka's jars", timeout=900, log=log)
    partial.rename(libs)
    return libs


def kafka_version(libs: Path) -> str:
    for jar in libs.glob("kafka_2.13-*.jar"):
        return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    raise LauncherError(f"no kafka_2.13 jar in {libs}: remove that folder and start again")
