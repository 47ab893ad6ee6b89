"""launch.py: flags and environment variables, logins for public links, a taken port, --share offline."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError

from backend.paths import PROJECT_ROOT
from tests._webui_fixtures import launch_argv, running_app
from webui.launching import (
    LaunchError,
    LaunchSettings,
    generated_login,
    local_url,
    read_auth_file,
    settings_from,
)


def test_defaults_flags_and_environment():
    s = settings_from([], {})
    assert (s.host, s.port, s.share, s.auth, s.root_path, s.public) == ("127.0.0.1", 7860, False, [], "", False)
    env = {"LORADASH_PORT": "9000", "LORADASH_HOST": "0.0.0.0", "LORADASH_SHARE": "1",
           "LORADASH_AUTH": "ann:s3cret:x", "LORADASH_ROOT_PATH": "proxy/ld/", "LORADASH_WORKSPACE": "/w"}
    s = settings_from([], env)
    assert (s.host, s.port, s.share, s.auth, s.root_path, s.workspace) == (
        "0.0.0.0", 9000, True, [("ann", "s3cret:x")], "/proxy/ld", "/w")
    # Flags win over the environment.
    s = settings_from(["--port", "7000", "--listen", "--auth", "bob:pw", "--workspace", "/x"], env)
    assert (s.host, s.port, s.auth, s.workspace) == ("0.0.0.0", 7000, [("bob", "pw")], "/x")
    assert local_url(settings_from(["--listen", "--root-path", "/ld"], {})) == "http://127.0.0.1:7860/ld/"


@pytest.mark.parametrize("argv, message", [
    (["--auth", "nopassword"], "USER:PASSWORD"),
    (["--port", "70000"], "between 1 and 65535"),
    (["--auth", "a:b", "--no-auth"], "contradicts"),
])
def test_bad_flags_are_explained(argv, message):
    with pytest.raises(LaunchError, match=message):
        settings_from(argv, {})


def test_auth_file(tmp_path):
    f = tmp_path / "users.txt"
    f.write_text("# team\nann:one\n\nbob:two:three\n")
    assert read_auth_file(f) == [("ann", "one"), ("bob", "two:three")]
    f.write_text("ann\n")
    with pytest.raises(LaunchError, match="line 1"):
        read_auth_file(f)
    with pytest.raises(LaunchError, match="cannot read"):
        read_auth_file(tmp_path / "missing.txt")


def test_public_apps_get_a_login_unless_told_otherwise():
    assert generated_login(LaunchSettings()) is None
    user, password = generated_login(LaunchSettings(share=True))
    assert user and len(password) >= 12
    assert generated_login(LaunchSettings(host="0.0.0.0"))
    assert generated_login(LaunchSettings(host="0.0.0.0", no_auth=True)) is None
    assert generated_login(LaunchSettings(host="0.0.0.0", auth=[("a", "b")])) is None


def test_a_taken_port_is_reported_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(launch_argv(tmp_path / "ws", port), cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is not available" in out.stdout
    assert "--port" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_share_without_internet_serves_locally_with_a_generated_login(tmp_path):
    """This machine has no internet: --share must fall back to local serving, and since a share link
    is public, a login is generated and printed once."""
    with running_app(tmp_path / "ws", "--share") as app:
        out = app.output()
        assert app.proc.poll() is None
        assert f"LoRA Dash is running at http://127.0.0.1:{app.port}/" in out
        assert "Could not create a public share link" in out or "Public link: https://" in out
        m = re.search(r"user: (\S+)\n\s+password: (\S+)", out)
        assert m, out
        with pytest.raises(AuthenticationError):
            Client(app.url, verbose=False)
        client = Client(app.url, auth=(m.group(1), m.group(2)), verbose=False)
        assert client.predict(api_name="/jobs") == []


def test_notebook_launch_returns_at_once_and_serves(tmp_path, capsys):
    import httpx

    from tests._webui_fixtures import free_port
    from webui import launch

    port = free_port()
    app = launch(workspace=str(tmp_path / "ws"), port=port, inline=False)
    try:
        assert f"running at http://127.0.0.1:{port}/" in capsys.readouterr().out
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        assert (tmp_path / "ws" / "jobs").is_dir()
    finally:
        app.close()
