"""PostgreSQL errors at start: which a setting causes, and where the DSN points (no server)."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg")

from psycopg.conninfo import conninfo_to_dict  # noqa: E402

from sinks.postgres import _hide_password, describe_dsn, setting_fault  # noqa: E402


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        # As libpq reports them while connecting: without an SQLSTATE (psycopg #1188).
        (psycopg.OperationalError('connection failed: connection to server at "db", port '
                                  '5432 failed: FATAL:  role "nobody" does not exist'), True),
        (psycopg.OperationalError('connection failed: ... FATAL:  database "news" does not '
                                  'exist'), True),
        (psycopg.OperationalError("connection failed: ... FATAL:  password authentication "
                                  'failed for user "newsflow"'), True),
        (psycopg.OperationalError("connection failed: ... FATAL:  no pg_hba.conf entry for "
                                  'host "10.0.0.2", user "newsflow"'), True),
        (psycopg.OperationalError("connection failed: fe_sendauth: no password supplied"), True),
        (psycopg.OperationalError('connection is bad: invalid integer value "x" for '
                                  'connection option "port"'), True),
        (psycopg.ProgrammingError('missing "=" after "news" in connection info string'), True),
        # Encryption the DSN requires and the server does not give (libpq's own words).
        (psycopg.OperationalError("connection failed: ... failed: server doesn't support "
                                  "GSSAPI encryption, but it was required"), True),
        # With an SQLSTATE (an error on an open connection).
        (psycopg.errors.lookup("28P01")("password authentication failed"), True),
        (psycopg.errors.lookup("3D000")("database does not exist"), True),
        # The server is not there, or not ready: waited for.
        (psycopg.OperationalError('connection failed: connection to server at "db", port '
                                  "5432 failed: Connection refused"), False),
        (psycopg.OperationalError("connection failed: ... timeout expired"), False),
        # A local server (Unix socket) that is down or not started yet.
        (psycopg.OperationalError('connection is bad: connection to server on socket '
                                  '"/var/run/postgresql/.s.PGSQL.5432" failed: No such file '
                                  "or directory"), False),
        (psycopg.OperationalError("connection failed: ... FATAL:  the database system is "
                                  "starting up"), False),
        (psycopg.OperationalError("failed to resolve host 'db': [Errno -3] Temporary "
                                  "failure in name resolution"), False),
        # docker compose's name of a database container that is down or made again.
        (psycopg.OperationalError("failed to resolve host 'postgres': [Errno -2] Name or "
                                  "service not known"), False),
        (psycopg.OperationalError("connection failed: ... FATAL:  the database system is "
                                  "shutting down"), False),
        # An SSL connection cut while it was made.
        (psycopg.OperationalError("connection failed: ... failed: SSL SYSCALL error: EOF "
                                  "detected"), False),
        (psycopg.errors.lookup("57P03")("the database system is starting up"), False),
        (psycopg.errors.lookup("53300")("too many connections"), False),
    ],
)
def test_errors_a_setting_causes_are_told_from_a_server_that_is_down(
    error: Exception, fault: bool
) -> None:
    assert setting_fault(error) is fault


def test_where_a_dsn_points_is_said_without_its_password() -> None:
    where = describe_dsn("postgresql://newsflow:s3cret@db.example:5433/news")
    assert where == "PostgreSQL at db.example port 5433, database news, user newsflow"
    assert "s3cret" not in describe_dsn("host=db password=s3cret dbname=news")
    assert "not a valid connection string" in describe_dsn("not a dsn")


def test_a_message_quoting_the_password_has_it_hidden() -> None:
    assert _hide_password('invalid percent-encoded token: "s3%zzcret"',
                          "postgresql://u:s3%zzcret@db/news") == 'invalid percent-encoded token: "***"'
    assert _hide_password("bad value s3cret", "host=db password=s3cret") == "bad value ***"


@pytest.mark.parametrize(
    ("dsn", "pieces"),
    [
        # No scheme: libpq reads key=value pairs and quotes what it cannot read.
        ("nf:secretpw@127.0.0.1:55432/newsflow", ["secretpw"]),
        ('nf:se"cret pw@db/news', ['se"cret', "cret pw"]),
        ("host=db password=a b=c", ["b"]),  # an unquoted password with a space
        ("host=db password='secret", ["secret"]),  # unterminated quote
        # A URI libpq cannot read quotes the token, or the whole URI.
        ("postgresql://nf:se%zzcret@db/news", ["se%zzcret"]),
        ("postgresql://nf:sec%00ret@db/news", ["sec%00ret"]),
        ("postgres://nf:secretpw@[::1/news", ["secretpw"]),
        ("postgresql://nf:secretpw@db/news?password", ["secretpw"]),
    ],
)
def test_libpqs_message_about_a_malformed_dsn_has_no_piece_of_the_password(
    dsn: str, pieces: list[str]
) -> None:
    with pytest.raises(psycopg.ProgrammingError) as raised:
        conninfo_to_dict(dsn)
    shown = _hide_password(str(raised.value), dsn)
    assert shown.strip() and all(piece not in shown for piece in pieces), shown


@pytest.mark.parametrize(
    ("dsn", "forms"),
    [
        ("postgresql://nf:p%40ss%20word@db/news", ["p%40ss%20word", "p@ss word"]),
        ("postgresql://db/news?user=nf&password=s3cret&sslmode=disable", ["s3cret"]),
        ("host=db password='it\\'s secret' dbname=news", ["it\\'s secret", "it's secret"]),
        ("host=db password = s3cret dbname=news", ["s3cret"]),
    ],
)
def test_a_valid_dsns_password_is_hidden_as_written_and_as_decoded(
    dsn: str, forms: list[str]
) -> None:
    assert conninfo_to_dict(dsn)["password"] in forms
    shown = _hide_password(" / ".join(f'quoted: "{form}"' for form in forms), dsn)
    assert all(form not in shown for form in forms), shown
