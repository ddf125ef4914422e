"""The one settings object. Built once in the CLI's ``main()`` and passed down.

Every field can be set from the environment with the ``NEWSFLOW_`` prefix, for
example ``NEWSFLOW_KAFKA_BOOTSTRAP=host:9092``. Nothing here is read at import time.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

SinkKind = Literal["sqlite", "postgres", "jsonl"]


def log_level_name(value: str) -> str:
    """``value`` as the name of a level logging knows, in capitals; ValueError otherwise
    (logging's own, raised when logging is configured, would end in a traceback)."""
    name = value.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(
            f"unknown log level {value!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return name


def default_if_blank(value: object) -> object:
    """A blank value (an env file's left out) is the field's default: for a path not the
    working directory, which Path("") is; for the DSN not "", which libpq takes for the
    local socket's defaults; for the web page's host not every interface; for the app id
    and the topics not names the processors or Kafka's clients refuse."""
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault()
    return value


BlankIsDefault = BeforeValidator(default_if_blank)


def stripped(value: object) -> object:
    """A string without the spaces around it (an env file's stray space), where they are
    never meant: libpq read " postgresql://..." as key=value pairs, and the error, the DSN
    masked, could not show why ("missing "=" after "***" in connection info string")."""
    return value.strip() if isinstance(value, str) else value


# (Before validators run from the last: stripped, then blank is the default.) Also for
# every path setting: " /srv/newsflow " was the folder " /srv/newsflow " in the working
# directory, a name whose spaces a log line or `newsflow status` does not show.
Stripped = BeforeValidator(stripped)


def home_expanded(value: Path | None) -> Path | None:
    """A path with a leading ``~`` as the home folder it names: an env file or a unit's
    Environment= is no shell, and NEWSFLOW_DATA_DIR=~/newsflow made a folder named "~"
    in the working directory (one `rm -rf ~` away from the real one)."""
    return value.expanduser() if value is not None else None


HomeExpanded = AfterValidator(home_expanded)

# Kafka's rule for a topic's name: at most 249 of these characters, not "." or "..".
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")
TOPIC_MAX_CHARS = 249

# `newsflow run`: a child that exits sooner than this after its start, 5 times in a row,
# is failing at start-up (the quick_exit_s setting).
QUICK_EXIT_S = 10.0
# The longest name faust gives a topic of the app id's: its tables' changelogs.
_APP_TOPIC_SUFFIX = "-cluster-incidents-changelog"


def topic_name(value: str) -> str:
    """``value`` if Kafka takes it for a topic's name; ValueError saying why otherwise. The
    embedded broker makes a topic of any name ("bad topic!"), `replay` published there,
    and only the readers (`tail`, the sink) refused it; a real Kafka refuses to make it."""
    if len(value) > TOPIC_MAX_CHARS:
        raise ValueError(f"a topic's name is at most {TOPIC_MAX_CHARS} characters, not {len(value)}")
    if not _TOPIC_CHARS.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is no topic name Kafka takes: use letters, digits, '.', '_'"
                         " and '-'")
    return value


def app_id_name(value: str) -> str:
    """``value`` if the topics faust names after it (``<app id>-cluster-...-changelog``)
    are names Kafka takes; ValueError saying why otherwise."""
    try:
        topic_name(value + _APP_TOPIC_SUFFIX)
    except ValueError:
        longest = TOPIC_MAX_CHARS - len(_APP_TOPIC_SUFFIX)
        raise ValueError(f"{value!r} cannot name the processors' changelog topics: use at most"
                         f" {longest} letters, digits, '.', '_' and '-'") from None
    return value


TopicName = AfterValidator(topic_name)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://")


def _host_and_port(server: str) -> tuple[str, str | None]:
    """``server``'s host and port (None: none given): "[::1]:9092" and "[::1]" (IPv6),
    "::1" (IPv6, no port), "host:9092", "host"."""
    if server.startswith("["):
        host, _, port = server.partition("]")
        if port and not port.startswith(":"):
            return "", None  # (something after the bracket that is no port)
        return host.removeprefix("["), port.removeprefix(":") if port else None
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, port
    return server, None


def kafka_servers(value: str | None) -> str | None:
    """``value``'s brokers as ``host[:port]`` joined by commas: each without the spaces
    around it and a ``SCHEME://`` before it (``PLAINTEXT://kafka:9092``, as Kafka's own
    clients take it), stray commas left out; ValueError for a port that is no number from
    1 to 65535, or no host. kafka-python took a scheme, but the processors (faust) read
    "kafka://h:9092" as the host "kafka" and never started; "h:abc" failed every command
    with "invalid literal for int() with base 10: 'abc'", naming no setting."""
    if value is None:
        return None
    servers = []
    for entry in value.split(","):
        server = _SCHEME.sub("", entry.strip())
        if not server:
            continue
        host, port = _host_and_port(server)
        if not host or (port is not None and not (port.isdigit() and 1 <= int(port) <= 65535)):
            raise ValueError(f"{entry.strip()!r} is no broker: give host:port (the port a number"
                             " from 1 to 65535), several comma-separated")
        servers.append(server)
    return ",".join(servers) or None  # (only commas: unset, as a blank value is)


def header_value(value: str) -> str:
    """``value`` without the spaces around it, if an HTTP header can carry it (printable
    ASCII, spaces and tabs inside); ValueError otherwise. As the User-Agent, a stray space
    (an env file's) or a newline failed every fetch as a network error ("Illegal header
    value"), logged at INFO, and a non-ASCII character ended the producer at each start
    ("'ascii' codec can't encode character"), none of them naming the setting."""
    value = value.strip()
    if not all(" " <= char <= "~" or char == "\t" for char in value):
        raise ValueError(f"{value!r} cannot be sent in an HTTP header: use printable ASCII"
                         " characters only")
    return value


def names_only(value: str) -> str:
    """``value`` if none of its comma-separated entries is an address (a URL, a path);
    ValueError naming the name it holds otherwise. The web page took
    "https://news.example.org/" for the name "https", and answered its own name with a 421
    asking for it to be named in NEWSFLOW_WEB_ALLOWED_HOSTS, where it was."""
    for entry in value.split(","):
        if "/" in entry:
            name = urlsplit(entry.strip() if "://" in entry else "//" + entry.strip()).hostname
            raise ValueError(f"{entry.strip()!r} is an address, not a name: give the name alone"
                             + (f" ({name})" if name else ""))
    return value


_RUST_LEVELS = ("off", "error", "warn", "info", "debug", "trace")


def broker_log_filter(value: str) -> str:
    """``value`` if it is a level the embedded broker's RUST_LOG takes (or directives of
    them, ``warn,tansu_broker=debug``); ValueError otherwise. A bare word that is no level
    is, to RUST_LOG, a module to log everything of, and nothing else: a typo, "wran", hid
    every warning and error the broker logged, without a word."""
    for directive in value.split(","):
        target, equals, level = directive.strip().rpartition("=")
        if level.strip().lower() not in _RUST_LEVELS or (equals and not target.strip()):
            raise ValueError(f"{directive.strip()!r} is no log level of the broker's: use "
                             f"{', '.join(_RUST_LEVELS[1:5])} (or RUST_LOG's target=level)")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEWSFLOW_", extra="ignore")

    # Kafka. Unset bootstrap means: start the embedded broker on loopback.
    # Blank is unset, as "" already was: " " (an env file's stray space) was a broker to
    # wait for, and `newsflow run` waited on it instead of starting its own.
    kafka_bootstrap: Annotated[str | None, BlankIsDefault, AfterValidator(kafka_servers)] = None
    # Set by the supervisor for its children when the broker is the embedded Tansu one:
    # it changes client timeouts (Tansu holds a group join for half the session timeout).
    kafka_embedded: bool = False
    # The embedded broker keeps every message in memory (Tansu has no retention). Past
    # this many MB `newsflow run` recycles it: producers pause, the processors and the sink
    # catch up, the broker restarts empty and the processors rebuild from storage. 0: never.
    embedded_broker_max_mb: int = Field(default=1024, ge=0)
    # How long a recycle, or a stop of `newsflow run`, waits for other consumer groups
    # reading the incident topics (a user's own copy) to read what they hold: the broker
    # restarts empty or stops, and what such a reader has not read by then is lost to it
    # (said in a WARNING). A stop asked again ends the wait. 0: no wait.
    recycle_readers_wait_s: float = Field(default=60.0, ge=0)
    # The embedded broker's own log level (its RUST_LOG: error, warn, info, debug).
    broker_log: Annotated[str, BlankIsDefault, AfterValidator(broker_log_filter)] = "warn"
    # Blank is the default: faust refuses an empty id ("App requires an id!"), and the
    # sink's group would be "-sink".
    app_id: Annotated[str, BlankIsDefault, AfterValidator(app_id_name)] = "newsflow"

    # Blank is the default: the embedded broker made a topic named "", and the publisher
    # then refused to send to it.
    topic_raw: Annotated[str, BlankIsDefault, TopicName] = "newsflow.articles.raw"
    topic_clean: Annotated[str, BlankIsDefault, TopicName] = "newsflow.articles.clean"
    topic_incidents: Annotated[str, BlankIsDefault, TopicName] = "newsflow.incidents"
    topic_members: Annotated[str, BlankIsDefault, TopicName] = "newsflow.incident-members"
    topic_dlq: Annotated[str, BlankIsDefault, TopicName] = "newsflow.dlq"
    # At most what Kafka's requests can carry (32-bit partition counts, a 16-bit replication
    # factor): past that a command failed on the encoding, "'i' format requires
    # -2147483648 <= number <= 2147483647", naming no setting.
    raw_partitions: int = Field(default=3, ge=1, le=2**31 - 1)
    incident_partitions: int = Field(default=3, ge=1, le=2**31 - 1)
    replication_factor: int = Field(default=1, ge=1, le=2**15 - 1)

    # Storage.
    data_dir: Annotated[Path, BlankIsDefault, Stripped, HomeExpanded] = Path("var")
    sink: SinkKind = "sqlite"
    # Default: <data_dir>/newsflow.db. Empty is unset, as for the paths below (an env
    # file's blank value was the working directory: as an SQLite file, a disk I/O error).
    sqlite_path: Annotated[Path | None, BlankIsDefault, Stripped, HomeExpanded] = None
    # Empty is unset (an env file's blank value): libpq would take "" for the local
    # socket's defaults, and the sink would wait for ever for a server that is not there.
    postgres_dsn: Annotated[SecretStr | None, BlankIsDefault, Stripped] = None
    # How long the PostgreSQL sink waits for one transaction of a write (up to 1,000
    # records) before it gives up on the server, pauses and tries again: a server that is
    # frozen (stopped, its disk hanging) answers nothing, yet TCP sees nothing wrong. The
    # costliest legitimate transaction measured, 1,000 stored articles of 200,000
    # characters each given a new text, took 51 s here (new ones 26 s).
    postgres_write_timeout_s: float = Field(default=180.0, gt=0, le=86400.0)
    # How long a read (a command, the web page, the processors' window rebuild) waits for
    # PostgreSQL to answer one query, or one part of a long one's rows; also the server's
    # statement_timeout on the readers' connections. A frozen server answers nothing and
    # no TCP setting notices; the slowest read measured, a search of 29 common words, took
    # 0.6 s on 3,661 articles and grows with the store.
    postgres_read_timeout_s: float = Field(default=30.0, gt=0, le=86400.0)
    # Default: <data_dir>/incidents.jsonl.
    jsonl_path: Annotated[Path | None, BlankIsDefault, Stripped, HomeExpanded] = None

    # Producers.
    feeds_file: Annotated[Path, BlankIsDefault, Stripped, HomeExpanded] = Path("feeds.toml")
    fetch_allow_private: bool = False
    # Blank is the default: an env file's blank value sent every fetch with an empty
    # User-Agent, which sites refuse, and robots.txt was read for no name at all.
    user_agent: Annotated[str, BlankIsDefault, AfterValidator(header_value)] = "newsflow/0.1 (+https://github.com/newsflow/newsflow)"
    seeds_dir: Annotated[Path, BlankIsDefault, Stripped, HomeExpanded] = Path("seeds")
    replay_seeds: bool = True
    # Feed producer (producers/feeds.py). Intervals in seconds. The state file's default:
    # <data_dir>/producer.db.
    producer_state_path: Annotated[Path | None, BlankIsDefault, Stripped, HomeExpanded] = None
    poll_min_interval_s: float = Field(default=300.0, gt=0)
    poll_max_interval_s: float = Field(default=86400.0, gt=0)

    @field_validator("poll_max_interval_s")
    @classmethod
    def _not_below_the_min_interval(cls, value: float, info: ValidationInfo) -> float:
        # A feeds file's min_interval above its max_interval is refused; these were taken,
        # and the shortest was made the longest: MIN 3600 with MAX 600 polled every 10 min.
        low = info.data.get("poll_min_interval_s")  # (absent when it was refused itself)
        if low is not None and value < low:
            raise ValueError(f"{value:g} s (86400 unless set) is below NEWSFLOW_POLL_MIN_INTERVAL_S"
                             f" ({low:g} s): the longest interval between polls cannot be"
                             " shorter than the shortest")
        return value
    # Threads, and below processes: at most 1000 each. 99999999999999999999 failed every
    # start of the producer naming no setting ("Python int too large to convert to SQLite
    # INTEGER", "cannot fit 'int' into an index-sized integer"), and a count in the
    # billions made a list of that many slots at its start.
    # A poll spends most of its time waiting out its host's gap between fetches
    # (host_delay_s) before each page: eight workers asked eight hosts at a time, one
    # request a second each, while the others waited (1,000 new feeds on 16 hosts: a
    # first pass of twice what politeness asks). A waiting thread costs little.
    poll_workers: int = Field(default=32, ge=1, le=1000)
    # At most a day: a socket takes no timeout past some 292 years, so inf (or 1e10) made
    # every fetch fail (OverflowError), and a fetch held that long holds a poll thread.
    fetch_timeout_s: float = Field(default=20.0, gt=0, le=86400.0)
    # At most 10^12 (a TB; a body is held in memory whole): past 2^63 every gzip body failed
    # ("Python int too large to convert to C ssize_t"), naming no setting.
    fetch_max_bytes: int = Field(default=10_000_000, ge=1024, le=10**12)
    host_concurrency: int = Field(default=2, ge=1)
    # At most a day: inf held every poll thread that asked a host a second time until
    # the stop (OverflowError where nothing could stop it: a wait that long fits no clock).
    host_delay_s: float = Field(default=1.0, ge=0, le=86400.0)
    fetch_pages: bool = True
    # Polls that try an entry's page when it fails for a reason that may pass (429, 5xx,
    # timeout, network, host paused), spaced like feed errors (within 1, 2, 4, 8 minutes,
    # or Retry-After), before its summary is published instead (1: the summary at once).
    page_attempts: int = Field(default=5, ge=1)
    # New entries one poll of a feed takes in (the oldest first); the rest wait, unseen,
    # for the next polls: a listing of 200,000 entries is not 200,000 fetches at once.
    poll_max_entries: int = Field(default=300, ge=1)
    # An entry published before whose title changes or whose <updated> moves later (an
    # outlet's edit) has its page fetched again and is published again: while it was first
    # published less than refetch_window_s ago (0: never), at most once per
    # refetch_interval_s, and within the poll's poll_max_entries (new entries first).
    refetch_window_s: float = Field(default=2 * 86400.0, ge=0)
    refetch_interval_s: float = Field(default=3600.0, gt=0)
    # Pages are extracted in worker processes (producers/extract_worker.py): this many, each
    # page given at most extract_timeout_s (else its worker is killed and the entry goes out
    # with its summary), a worker replaced after extract_worker_pages pages (what lxml and
    # trafilatura keep in memory goes with it). One worker: real pages take 34 ms on
    # average, and the producer's fetching and publishing need the other core.
    extract_workers: int = Field(default=1, ge=1, le=1000)
    extract_timeout_s: float = Field(default=20.0, gt=0)
    extract_worker_pages: int = Field(default=1000, ge=1)

    # Clustering: articles are held window_days of stream time; an incident's summary
    # outlives them for incident_days, so follow-ups (charges, a trial, a sentence: often
    # a year or more later) still find it. Summaries are also capped in number.
    window_days: float = Field(default=7.0, gt=0)
    incident_days: float = Field(default=1460.0, gt=0)
    # The cluster agent takes up to this many articles at a time, waiting at most this
    # long for them, decides them in the order they were published to the raw topic (the
    # wait is how late one may arrive and still be put in its place), and sends each
    # incident they changed once (a burst of reports on one story is one version, not one
    # per article). The wait is at most a minute: a batch short of cluster_batch is decided
    # only when it ends, so with inf an article was never decided, and a stop waited out
    # its drain (60 s) and then killed the processors; 60 s stops cleanly.
    cluster_batch: int = Field(default=500, ge=1)
    cluster_batch_wait_s: float = Field(default=0.2, gt=0, le=60.0)
    # How long the processors' producer waits for the broker to take a message before the
    # send fails (and the stage sends it again): a broker down longer than this fails it.
    # At most a day: faust hands it to the producer in whole ms, and inf stopped every
    # start of the processors (OverflowError); Kafka's produce request carries it in 32 bits.
    producer_request_timeout_s: float = Field(default=60.0, gt=0, le=86400.0)

    # Service.
    # How long a stop waits for the processors and the sink to finish what was published;
    # with the embedded broker, what they leave is carried over to the next start.
    stop_drain_s: float = Field(default=60.0, ge=0)
    # A child that exits within this many seconds of its start, 5 times in a row, is
    # failing at start-up (a setting, a file it cannot open): `newsflow run` stops, naming
    # it. A failing start slower than this (a loaded machine) is restarted for ever.
    quick_exit_s: float = Field(default=QUICK_EXIT_S, gt=0)
    # With the embedded broker, the most the producers keep on disk of what storage has not
    # taken yet (newsflow/outbox.py); past it they poll nothing new until storage takes some.
    outbox_max_mb: float = Field(default=1024.0, ge=0)
    # While it runs, how often the outbox's rows that old, which storage does not hold
    # (dead-lettered, or storage down), are checked for being finished by the processors
    # and the sink, as a stop checks them, and forgotten if they are.
    outbox_check_s: float = Field(default=300.0, gt=0)
    # Blank is the default: to bind(), "" is every interface, the page open to the network.
    web_host: Annotated[str, BlankIsDefault, Stripped] = "127.0.0.1"
    web_port: int = Field(default=8088, ge=0, le=65535)  # 0: any free port
    # Names (comma-separated) the page answers to besides localhost, IP addresses and
    # web_host: one a reverse proxy or a DNS name gives it. Others get 421 (DNS rebinding).
    web_allowed_hosts: Annotated[str, AfterValidator(names_only)] = ""
    # Connections the page serves at once (a thread each); more are answered 503.
    web_max_connections: int = Field(default=64, ge=1)
    log_level: Annotated[str, AfterValidator(log_level_name)] = "INFO"
    log_json: bool = False
    # Set by `make run`: stop when make itself is stopped (make does not pass SIGTERM on).
    stop_with_parent: bool = False
    # Set by `newsflow run` for its children: its pid (a child outliving it exits).
    supervisor_pid: int | None = None

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or self.data_dir / "newsflow.db"

    @property
    def jsonl_file(self) -> Path:
        return self.jsonl_path or self.data_dir / "incidents.jsonl"

    @property
    def producer_state_file(self) -> Path:
        return self.producer_state_path or self.data_dir / "producer.db"

    @property
    def cluster_state_file(self) -> Path:
        """Where the processors save their cluster state at a stop, for the next start."""
        return self.data_dir / "cluster-state.pickle"

    @property
    def runfile(self) -> Path:
        """Where a running `newsflow run` says where its broker is (see service.py)."""
        return self.data_dir / "service.json"

    @property
    def web_runfile(self) -> Path:
        """Where the web process of a `newsflow run` says where it serves (see service.py)."""
        return self.data_dir / "web.json"

    @property
    def session_timeout_s(self) -> float:
        # Tansu answers a JoinGroup only after half the session timeout: keep it short there.
        return 3.0 if self.kafka_embedded else 30.0

    @property
    def heartbeat_interval_s(self) -> float:
        return 1.0 if self.kafka_embedded else 3.0


# Variables of the prefix that are no setting: the compiled build's and the tests'.
_NOT_SETTINGS = ("NEWSFLOW_MYPYC", "NEWSFLOW_TEST_", "NEWSFLOW_PG_BIN", "NEWSFLOW_SHARED_DATA")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The NEWSFLOW_* variables of ``environ`` that name no setting, each with the setting
    it may have meant: the settings ignore them (any case), so a typo,
    NEWSFLOW_SQLITE_FILE for _PATH, stored everything in var/newsflow.db without a word."""
    fields = list(Settings.model_fields)
    found = []
    for name in sorted(environ):
        upper = name.upper()
        field = upper.removeprefix("NEWSFLOW_").lower()
        if upper.startswith("NEWSFLOW_") and field not in fields \
                and not upper.startswith(_NOT_SETTINGS):
            # (Without the prefix, which every name shares: else any name was "close".)
            meant = difflib.get_close_matches(field, fields, n=1)
            found.append(f"{name} (meant NEWSFLOW_{meant[0].upper()}?)" if meant else name)
    return found


def json_logs_asked(environ: Mapping[str, str]) -> bool:
    """Whether ``environ``'s NEWSFLOW_LOG_JSON (any case) asks for JSON logs, read alone for
    when the settings cannot be built: their error went out as plain text where every other
    error is a JSON record, and a log pipeline reading JSON lost it."""
    for name, value in environ.items():
        if name.upper() == "NEWSFLOW_LOG_JSON":
            try:
                return TypeAdapter(bool).validate_python(value)
            except ValidationError:
                return False
    return False


def unused_storage_settings(settings: Settings) -> list[str]:
    """The storage settings given that the configured sink does not use, each said with
    the storage used instead. A DSN without NEWSFLOW_SINK=postgres (the one forgotten)
    stored everything in var/newsflow.db without a word."""
    used = {"sqlite": f"SQLite file {settings.sqlite_file}", "jsonl":
            f"JSON Lines file {settings.jsonl_file}", "postgres": "PostgreSQL"}[settings.sink]
    given = {"postgres": settings.postgres_dsn, "sqlite": settings.sqlite_path,
             "jsonl": settings.jsonl_path}
    variables = {"postgres": "NEWSFLOW_POSTGRES_DSN", "sqlite": "NEWSFLOW_SQLITE_PATH",
                 "jsonl": "NEWSFLOW_JSONL_PATH"}
    return [f"{variables[sink]} is set, but NEWSFLOW_SINK is {settings.sink}: it is not"
            f" used (storage: {used})"
            for sink, value in given.items() if value is not None and sink != settings.sink]


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as NEWSFLOW_* variables, so a child process builds the same object."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | dict):
            import json

            value = json.dumps(value)
        env[f"NEWSFLOW_{name.upper()}"] = str(value)
    return env
