"""Bad input on every command line: one line naming the argument, exit 2 or 1, never a traceback.

Per command: a table of bad arguments a user types (each the reason it is bad), and a property
test that feeds generated bad values to each typed option (tests/support/cli_contract.py). Each
command's main() runs in this process, with whatever would act on the world (Juju, a build, a
container, a model server, training) replaced by a stub that fails the test if it is reached:
a bad value must be refused before anything starts.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.cli_contract import (
    NAMEISH,
    ROOT,
    assert_refused,
    bad_ints,
    bad_model_names,
    bad_numbers,
    bad_ports,
    bad_urls,
    load_script,
    missing_path,
    run_main,
)

sys.path.insert(0, str(ROOT / "scripts"))

PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
SHA = "a" * 64
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Reached(AssertionError):
    """A bad value got past validation to the part that acts."""


def _never(*_args, **_kwargs):
    raise Reached("validation let a bad value through to the part that acts on the world")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Files a user could point an option at by mistake."""
    tmp = tmp_path_factory.mktemp("bad-input")
    made = {
        "photo": tmp / "photo.jpg",
        "text": tmp / "notes.txt",
        "binary": tmp / "blob.bin",
        "yaml_list": tmp / "list.yaml",
        "folder": tmp / "folder",
        "empty_folder": tmp / "empty",
        "drop": tmp / "drop",
        "tmp": tmp,
    }
    shutil.copyfile(PHOTO, made["photo"])
    made["text"].write_text("not a certificate, not YAML: {[\n")
    made["binary"].write_bytes(bytes(range(256)) * 4)
    made["yaml_list"].write_text("- a\n- b\n")
    for key in ("folder", "empty_folder", "drop"):
        made[key].mkdir()
    return made


# --- scripts/predict (one-shot) -----------------------------------------------------------

PREDICT = load_script(ROOT / "scripts" / "predict")


@pytest.fixture
def predict_main(monkeypatch):
    monkeypatch.setattr(PREDICT.Client, "predict", _never)
    return PREDICT.main


PREDICT_TABLE = [
    (["--url", "http://127.0.0.1:99999"], "--url"),  # the issue's: was a traceback (Port out of range)
    (["--url", "http://[::1"], "--url"),
    (["--url", "ftp://edge:31380"], "--url"),
    (["--url", ""], "--url"),
    (["--url", "http://"], "--url"),
    (["--url", "http://edge:abc"], "--url"),
    (["--url", "http://edge:0"], "--url"),
    (["--url", "http://ed ge:80"], "--url"),
    (["--url", "http://édge:80"], "--url"),
    (["--url", "http://user:pw@edge:80"], "--url"),
    (["--model", ""], "--model"),
    (["--model", "Scratch"], "--model"),
    (["--model", "a/b"], "--model"),
    (["--model", "x" * 41], "--model"),
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
]


@pytest.mark.parametrize(("extra", "named"), PREDICT_TABLE)
def test_predict_refuses(predict_main, files, extra, named):
    assert_refused(predict_main, [str(files["photo"]), *extra], named)


def test_predict_refuses_a_missing_photo_and_an_empty_folder(predict_main, files):
    assert_refused(predict_main, [str(files["tmp"] / "nosuch.jpg")], "nosuch.jpg")
    assert_refused(predict_main, [str(files["empty_folder"])], str(files["empty_folder"]))


@PROPERTY
@given(data=st.data())
def test_predict_property(predict_main, files, data):
    option, values = data.draw(
        st.sampled_from([("--url", bad_urls), ("--model", bad_model_names), ("--timeout", bad_numbers)])
    )
    assert_refused(predict_main, [str(files["photo"]), f"{option}={data.draw(values)}"], option)


def test_the_issues_url_is_one_line_from_the_real_script(files):
    """The reported command, as the user ran it: no traceback, one line naming --url, exit 2."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/predict"), str(files["photo"]), "--url", "http://127.0.0.1:99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "predict: error: argument --url: 'http://127.0.0.1:99999': Port out of range 0-65535"
    )


# --- scripts/predict --watch ----------------------------------------------------------------


@pytest.fixture
def watch_main(monkeypatch):
    from inspection import cli

    monkeypatch.setattr(cli.ModelClient, "check", _never)
    monkeypatch.setattr(cli, "Publisher", _never)
    return cli.main


def watch_args(files: dict[str, Path], *extra: str, mqtt: str = "mqtt://127.0.0.1:1883/line/3") -> list[str]:
    return ["--watch", str(files["drop"]), "--mqtt", mqtt, *extra]


def watch_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    tls = "mqtts://127.0.0.1:8883/line/3"
    return [
        (watch_args(f, "--url", "http://127.0.0.1:99999"), "--url"),
        (watch_args(f, "--url", "http://[::1"), "--url"),
        (watch_args(f, "--model", ""), "--model"),
        (watch_args(f, mqtt="mqtt://127.0.0.1:1883"), "--mqtt"),
        (watch_args(f, mqtt="mqtt://[::1/t"), "--mqtt"),
        (watch_args(f, mqtt="mqtt://127.0.0.1:99999/t"), "--mqtt"),
        (watch_args(f, mqtt="mqtt://127.0.0.1:0/t"), "--mqtt"),
        (watch_args(f, mqtt="http://127.0.0.1/t"), "--mqtt"),
        (watch_args(f, mqtt="mqtt://127.0.0.1/line/#"), "--mqtt"),
        (watch_args(f, mqtt="mqtt://br oker/t"), "--mqtt"),
        (watch_args(f, "--mqtt-user", "u", "--mqtt-password-file", str(f["tmp"] / "nosuch")), "--mqtt-password-file"),
        (watch_args(f, "--mqtt-user", "u", "--mqtt-password-file", str(f["binary"])), "--mqtt-password-file"),
        (watch_args(f, "--mqtt-password-file", str(f["text"])), "--mqtt-password-file"),
        (watch_args(f, "--tls-ca", str(f["text"]), mqtt=tls), "--tls-ca"),  # was ssl.SSLError
        (watch_args(f, "--tls-ca", str(f["binary"]), mqtt=tls), "--tls-ca"),
        (watch_args(f, "--tls-ca", str(f["tmp"] / "nosuch.pem"), mqtt=tls), "--tls-ca"),
        (watch_args(f, "--tls-cert", str(f["text"]), "--tls-key", str(f["text"]), mqtt=tls), "--tls-cert"),
        (watch_args(f, "--tls-cert", str(f["text"]), mqtt=tls), "--tls-cert"),
        (watch_args(f, "--tls-ca", str(f["text"])), "--tls-"),
        (watch_args(f, "--outbox-max-mb", "nan"), "--outbox-max-mb"),  # NaN passed every bound before
        (watch_args(f, "--outbox-max-mb", "-1"), "--outbox-max-mb"),
        (watch_args(f, "--outbox-max-mb", "inf"), "--outbox-max-mb"),
        (watch_args(f, "--outbox-max-hours", "nan"), "--outbox-max-hours"),
        (watch_args(f, "--poll", "nan"), "--poll"),
        (watch_args(f, "--poll", "-0.5"), "--poll"),
        (watch_args(f, "--poll", "0"), "--poll"),
        (watch_args(f, "--timeout", "0"), "--timeout"),
        (watch_args(f, "--attempts", "0"), "--attempts"),
        (watch_args(f, "--attempts", "1.5"), "--attempts"),
        (watch_args(f, "--threshold", "nan"), "--threshold"),
        (watch_args(f, "--threshold", "0"), "--threshold"),
        (watch_args(f, "--threshold", "1.5"), "--threshold"),
        (watch_args(f, "--uncertain", "0.5-0.2"), "--uncertain"),
        (watch_args(f, "--uncertain", "low-high"), "--uncertain"),
        (["--watch", str(f["tmp"] / "nosuch"), "--mqtt", "mqtt://h/t"], "--watch"),
        (["--watch", str(f["photo"]), "--mqtt", "mqtt://h/t"], "--watch"),
        (watch_args(f, "--outbox", str(f["photo"])), "--outbox"),
        (watch_args(f, "--done", str(f["photo"] / "done")), "--done"),
        (watch_args(f, "--relabel", str(f["photo"])), "--relabel"),
        (watch_args(f, "--shadow", "http://127.0.0.1:99999/model/s/api/v0.1/predictions"), "--shadow"),
        (watch_args(f, "--shadow", "http://edge:31380/model/scratch"), "--shadow"),  # not a predictions path
        (watch_args(f, "--shadow", "edge:31380"), "--shadow"),
        (watch_args(f, "--shadow-record", str(f["tmp"])), "--shadow-record needs --shadow"),
        (watch_args(f, "--metrics-port", "9100"), "--metrics-port needs --shadow"),
        (watch_args(f, "--shadow", "--metrics-port", "99999"), "--metrics-port"),
        (watch_args(f, "--shadow", "--metrics-port", "http"), "--metrics-port"),
        (watch_args(f, "--shadow", "--shadow-record", str(f["photo"])), "--shadow-record"),  # a file: exit 1
    ]


def test_predict_watch_refuses(watch_main, files):
    table = watch_table(files)
    for argv, named in table:
        assert_refused(watch_main, argv, named)
    assert len(table) == 47


def test_an_unreadable_password_file_is_named(watch_main, files, monkeypatch):
    """PermissionError (root reads every file, so the refusal is injected at the read)."""
    secret = files["tmp"] / "secret"
    secret.write_text("pw\n")
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self == secret:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    out = assert_refused(watch_main, watch_args(files, "--mqtt-user", "u", "--mqtt-password-file", str(secret)), "")
    assert out.last_line == f"predict: --mqtt-password-file {secret}: cannot read it (Permission denied)"


WATCH_NUMBERS = {
    "--outbox-max-mb": bad_numbers,
    "--outbox-max-hours": bad_numbers,
    "--poll": bad_numbers,
    "--timeout": bad_numbers,
    "--threshold": bad_numbers,
    "--attempts": bad_ints,
}


@PROPERTY
@given(data=st.data())
def test_predict_watch_property(watch_main, files, data):
    choices = [("--url", bad_urls), ("--model", bad_model_names), *WATCH_NUMBERS.items()]
    choices += [("--shadow", bad_urls), ("--metrics-port", bad_ports)]
    choices.append(("--mqtt-password-file", missing_path(files["tmp"])))
    option, values = data.draw(st.sampled_from(choices))
    extra = ["--mqtt-user", "u"] if option == "--mqtt-password-file" else []
    assert_refused(watch_main, watch_args(files, *extra, f"{option}={data.draw(values)}"), option)


@PROPERTY
@given(topic_or_url=st.one_of(bad_urls.map(lambda u: u.replace("http", "mqtt", 1)), st.just("mqtt://h/")))
def test_predict_watch_mqtt_property(watch_main, files, topic_or_url):
    assert_refused(watch_main, watch_args(files, mqtt=topic_or_url), "--mqtt")


# --- scripts/local-site ----------------------------------------------------------------------


@pytest.fixture
def site_main(monkeypatch):
    from local_site import site

    monkeypatch.setattr(site, "Site", _never)
    monkeypatch.setattr(site, "send_reload", _never)
    return site.main


def site_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    return [
        (["--port", "99999"], "--port"),
        (["--port", "0"], "--port"),
        (["--port", "-1"], "--port"),
        (["--port", "http"], "--port"),
        (["--host", "my host"], "--host"),
        (["--host", ""], "--host"),
        (["--host", "::g"], "--host"),
        (["--bundle", str(f["tmp"] / "nosuch.yaml")], "nosuch.yaml"),
        (["--bundle", str(f["text"])], "notes.txt"),
        (["--bundle", str(f["folder"])], "folder"),
        (["--overlay", str(f["tmp"] / "nosuch.yaml")], "nosuch.yaml"),
        (["--overlay", str(f["yaml_list"])], "list.yaml"),
        (["--overlay", str(f["binary"])], "blob.bin"),
        (["--set", "nonsense"], "--set"),
        (["--set", "scratch.nosuch=1"], "nosuch"),
        (["--set", "scratch.workers=many"], "workers"),
        (["--set", "nosuch.workers=1"], "nosuch"),
        (["--set", "scratch.confidence-threshold=2"], "confidence-threshold"),
        (["--promote", "scratch"], "--promote"),
        (["down"], "command"),
    ]


def test_local_site_refuses(site_main, files):
    table = site_table(files)
    for argv, named in table:
        assert_refused(site_main, argv, named)
    assert len(table) == 20


@PROPERTY
@given(data=st.data())
def test_local_site_property(site_main, files, data):
    option, values = data.draw(
        st.sampled_from(
            [
                ("--port", bad_ports),
                ("--overlay", missing_path(files["tmp"])),
                ("--set", NAMEISH.map(lambda n: f"scratch.{n}x=1")),
                ("--set", NAMEISH),
            ]
        )
    )
    value = data.draw(values)
    assert_refused(site_main, [f"{option}={value}"], (option, value[:20]))


# --- scripts/roll-model ----------------------------------------------------------------------

ROLL = load_script(ROOT / "scripts" / "roll-model")


@pytest.fixture
def roll_main(monkeypatch):
    monkeypatch.setattr(ROLL, "run", _never)
    return ROLL.main


def roll_args(*extra: str, app: str = "scratch") -> list[str]:
    base = ["--uri", "https://models.example/v4.onnx", "--sha256", SHA, "--gateway-url", "http://edge:31380"]
    return [app, *base, *extra]


def roll_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    gw = ["--gateway-url", "http://edge:31380"]
    return [
        (roll_args(app="Scratch"), "app"),
        (roll_args(app="1scratch"), "app"),
        (roll_args(app="scratch_2"), "app"),
        (["scratch", "--uri", "ftp://m/x.onnx", "--sha256", SHA, *gw], "--uri"),
        (["scratch", "--uri", "https://", "--sha256", SHA, *gw], "--uri"),
        (["scratch", "--uri", "file:///", "--sha256", SHA, *gw], "--uri"),
        (["scratch", "--uri", "https://m/x y.onnx", "--sha256", SHA, *gw], "--uri"),
        (["scratch", "--uri", "https://m/x.onnx", "--sha256", "abc", *gw], "--sha256"),
        (["scratch", "--uri", "https://m/x.onnx", "--sha256", "A" * 64, *gw], "--sha256"),
        (["scratch", "--uri", "https://m/x.onnx", *gw], "--sha256"),
        (roll_args("--gateway-url", "http://edge:99999"), "--gateway-url"),
        (roll_args("--gateway-url", "edge:31380"), "--gateway-url"),
        (["scratch", "--uri", "https://m/x.onnx", "--sha256", SHA], "--gateway-url"),
        (roll_args("--canary", "101"), "--canary"),
        (roll_args("--canary", "-1"), "--canary"),
        (roll_args("--canary", "ten"), "--canary"),
        (roll_args("--timeout", "nan"), "--timeout"),
        (roll_args("--timeout", "0"), "--timeout"),
        (roll_args("--sample", str(f["tmp"] / "nosuch.jpg")), "--sample"),
        (roll_args("--sample", str(f["text"])), "--sample"),  # not a photo: the smoke test would fail late
        (roll_args("--sample", str(f["folder"])), "--sample"),
        (["scratch", "--promote", "--uri", "https://m/x.onnx", *gw], "--uri"),
        (["scratch", "--promote", "--abort"], "--abort"),
        (["scratch", "--promote-shadow", *gw], "--min-photos"),
        (["scratch", "--promote-shadow", "--min-photos", "100", *gw], "--min-agreement"),
        (["scratch", "--promote-shadow", "--min-photos", "0", "--min-agreement", "0.9", *gw], "--min-photos"),
        (["scratch", "--promote-shadow", "--min-photos", "1.5", "--min-agreement", "0.9", *gw], "--min-photos"),
        (["scratch", "--promote-shadow", "--min-photos", "100", "--min-agreement", "1.5", *gw], "--min-agreement"),
        (["scratch", "--promote-shadow", "--min-photos", "100", "--min-agreement", "nan", *gw], "--min-agreement"),
        (["scratch", "--promote-shadow", "--min-photos", "100", "--min-agreement", "0.9"], "--gateway-url"),
        (
            [
                "scratch",
                "--promote-shadow",
                "--min-photos",
                "9",
                "--min-agreement",
                "0.9",
                "--record",
                str(f["tmp"] / "nosuch"),
                *gw,
            ],
            "--record",
        ),  # fmt: skip
        (["scratch", "--promote-shadow", "--uri", "https://m/x.onnx", "--min-photos", "9", *gw], "--uri"),
        (["scratch", "--promote-shadow", "--promote", *gw], "--promote"),
        (roll_args("--min-photos", "100"), "--min-photos goes with --promote-shadow"),
    ]


def test_roll_model_refuses(roll_main, files):
    table = roll_table(files)
    for argv, named in table:
        assert_refused(roll_main, argv, named)
    assert len(table) == 34


@PROPERTY
@given(data=st.data())
def test_roll_model_property(roll_main, files, data):
    option, values = data.draw(
        st.sampled_from(
            [
                ("--gateway-url", bad_urls),
                ("--timeout", bad_numbers),
                ("--sha256", st.text("0123456789abcdefABCDEF", max_size=70).filter(lambda s: len(s) != 64)),
                ("--sha256", st.text("0123456789ABCDEF", min_size=64, max_size=64).filter(lambda s: s != s.lower())),
                ("--sample", missing_path(files["tmp"])),
                ("--canary", st.one_of(st.integers(min_value=101), st.integers(max_value=-1)).map(str)),
                ("--min-photos", bad_ints),
                ("--min-agreement", bad_numbers),
            ]
        )
    )
    argv = roll_args()
    if option in argv:
        at = argv.index(option)
        argv[at : at + 2] = []
    argv.append(f"{option}={data.draw(values)}")
    assert_refused(roll_main, argv, option)


def test_roll_model_names_a_config_change_juju_refused(monkeypatch, files):
    """set_config raising (libjuju's JujuError) is one line with the change and what to check: exit 1."""
    from edge_site import roll

    class Refusing:
        name = "kubeflow"

        def __init__(self) -> None:
            app = type("App", (), {})()
            app.units = []

            async def get_config():
                return {"model-uri": {"value": "https://m/old.onnx"}, "model-sha256": {"value": "b" * 64}}

            async def set_config(values):
                raise RuntimeError("permission denied: user is not an admin of model kubeflow")

            app.get_config, app.set_config = get_config, set_config
            self.applications = {"scratch": app}

        async def disconnect(self) -> None:
            pass

    async def connect(_name):
        return Refusing()

    monkeypatch.setattr(roll, "connect", connect)
    monkeypatch.setattr(ROLL, "run", roll.run)
    out = run_main(ROLL.main, roll_args())
    assert out.code == 1 and "Traceback" not in out.stderr
    assert out.last_line == (
        f"scratch: juju config scratch model-uri=https://models.example/v4.onnx model-sha256={SHA} failed: "
        "RuntimeError: permission denied: user is not an admin of model kubeflow; nothing changed; "
        "check `juju config scratch` and `juju status scratch`"
    )


# --- scripts/bootstrap-edge-site ---------------------------------------------------------------


@pytest.fixture
def bootstrap_main(monkeypatch):
    from edge_site import bootstrap

    monkeypatch.setattr(bootstrap, "Bootstrap", _never)
    monkeypatch.setattr(bootstrap, "preflight", lambda *_: None)  # root on amd64: only the arguments decide
    return bootstrap.main


def bootstrap_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    return [
        (["--overlay", str(f["tmp"] / "nosuch.yaml")], "--overlay"),
        (["--overlay", str(f["text"])], "--overlay"),
        (["--overlay", str(f["folder"])], "--overlay"),
        (["--overlay", str(f["yaml_list"])], "--overlay"),
        (["--overlay", str(f["binary"])], "--overlay"),
        (["--overlay", str(ROOT / "overlays/fp32.yaml"), "--overlay", str(f["text"])], "--overlay"),
        (["--airgapped", str(f["tmp"] / "nosuch")], "--airgapped"),
        (["--airgapped", str(f["empty_folder"])], "--airgapped"),
        (["--server-image-archive", str(f["tmp"] / "nosuch.tar")], "--server-image-archive"),
        (["--server-image-archive", str(f["folder"])], "--server-image-archive"),
        (["--overlays", "x"], "--overlays"),
    ]


def test_bootstrap_refuses(bootstrap_main, files):
    table = bootstrap_table(files)
    for argv, named in table:
        assert_refused(bootstrap_main, argv, named)
    assert len(table) == 11


@PROPERTY
@given(data=st.data())
def test_bootstrap_property(bootstrap_main, files, data):
    option = data.draw(st.sampled_from(["--overlay", "--airgapped", "--server-image-archive"]))
    assert_refused(bootstrap_main, [option, data.draw(missing_path(files["tmp"]))], option)


# --- scripts/airgap-images ---------------------------------------------------------------------


@pytest.fixture
def airgap_main(monkeypatch):
    from edge_site import airgap

    monkeypatch.setattr(airgap, "export", _never)
    return airgap.main


def airgap_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    out = str(f["tmp"] / "airgap")
    return [
        (["export", out, "--overlay", "nosuch.yaml"], "--overlay nosuch.yaml"),  # the issue's: FileNotFoundError
        (["export", out, "--overlay", str(f["text"])], "--overlay"),
        (["export", out, "--overlay", str(f["yaml_list"])], "--overlay"),
        (["export", out, "--overlay", str(f["folder"])], "--overlay"),
        (["export", str(f["photo"])], str(f["photo"])),
        (["export", out, "--builder", "kaniko"], "--builder"),
        (["import", str(f["tmp"] / "nosuch")], "nosuch"),
        (["import", str(f["empty_folder"])], "images.json"),
        (["import", str(f["photo"])], str(f["photo"])),
        (["frobnicate", out], "command"),
        (["export"], "dir"),
    ]


def test_airgap_images_refuses(airgap_main, files):
    table = airgap_table(files)
    for argv, named in table:
        assert_refused(airgap_main, argv, named)
    assert len(table) == 11


@PROPERTY
@given(data=st.data())
def test_airgap_images_property(airgap_main, files, data):
    overlay = data.draw(missing_path(files["tmp"]))
    assert_refused(airgap_main, ["export", str(files["tmp"] / "airgap"), "--overlay", overlay], "--overlay")


# --- scripts/server-image ------------------------------------------------------------------------

SERVER_IMAGE = load_script(ROOT / "scripts" / "server-image")


@pytest.fixture
def server_image_main(monkeypatch):
    monkeypatch.setattr(SERVER_IMAGE, "run_check", _never)  # the container must not start
    monkeypatch.setattr(SERVER_IMAGE.server_image, "build", _never)
    monkeypatch.setattr(SERVER_IMAGE.server_image, "save", _never)
    return SERVER_IMAGE.main


def server_image_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    return [
        (["run-check", "--photo", str(f["tmp"] / "nosuch.jpg")], "--photo"),  # the issue's: after the start
        (["run-check", "--photo", str(f["text"])], "--photo"),
        (["run-check", "--photo", str(f["binary"])], "--photo"),
        (["run-check", "--photo", str(f["folder"])], "--photo"),
        (["build", "--builder", "kaniko"], "--builder"),
        (["build", "--base", "debian", "--debian-base"], "--debian-base"),
        (["save"], "archive"),
        (["save", "x.tar", "--builder", "x"], "--builder"),
        (["push"], "command"),
    ]


def test_server_image_refuses(server_image_main, files):
    table = server_image_table(files)
    for argv, named in table:
        assert_refused(server_image_main, argv, named)
    assert len(table) == 9


@PROPERTY
@given(data=st.data())
def test_server_image_property(server_image_main, files, data):
    photo = data.draw(
        st.one_of(missing_path(files["tmp"]), st.sampled_from([str(files["text"]), str(files["binary"])]))
    )
    assert_refused(server_image_main, ["run-check", f"--photo={photo}"], "--photo")


def test_a_silent_build_still_times_out():
    """The deadline holds with no output at all (it was checked only when a line arrived)."""
    import time

    from edge_site import server_image
    from edge_site.shell import StepFailed

    started = time.monotonic()
    with pytest.raises(StepFailed, match=r"did not finish in 1s"):
        server_image._stream(["sleep", "60"], lambda _line: None, timeout=1)
    assert time.monotonic() - started < 10


# --- scripts/shadow-report ----------------------------------------------------------------------

REPORT = load_script(ROOT / "scripts" / "shadow-report")


def report_table(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    return [
        ([], "app"),
        (["Scratch"], "app"),
        (["scratch_2"], "app"),
        (["1scratch"], "app"),
        (["scratch."], "app"),
        (["x" * 41], "app"),
        (["--", "-scratch"], "app"),
        (["scratch", "--record", str(f["tmp"] / "nosuch")], "--record"),
        (["scratch", "--record", str(f["text"])], "--record"),  # a file: "not a folder"
        (["scratch", "--record", ""], "--record"),  # "" is the working folder, which holds no record
        (["scratch", "--shadow-sha256", "abc"], "--shadow-sha256"),
        (["scratch", "--shadow-sha256", "A" * 64], "--shadow-sha256"),
        (["scratch", "--worst", "-1"], "--worst"),
        (["scratch", "--worst", "1001"], "--worst"),
        (["scratch", "--worst", "many"], "--worst"),
        (["scratch", "--bogus"], "--bogus"),
        (["scratch", "extra"], "extra"),
    ]


def test_shadow_report_refuses(files, monkeypatch):
    monkeypatch.chdir(files["empty_folder"])
    table = report_table(files)
    for argv, named in table:
        assert_refused(REPORT.main, argv, named)
    assert len(table) == 17


@pytest.fixture
def record(tmp_path) -> Path:
    """A record of two photos compared, the second a flip, as the watcher writes it."""
    from inspection.shadow_record import Record
    from test_shadow_record import det, entry

    rec = Record(tmp_path / "record")
    rec.append(entry("p1", [det(0, 0, 50, 50, 0.9)], [det(0, 0, 50, 50, 0.9)]))
    rec.append(entry("p2", [det(0, 0, 50, 50, 0.9)], []))
    return rec.path


def test_shadow_report_names_an_unreadable_record(record, monkeypatch):
    """PermissionError (root reads every file, so the refusal is injected at the read)."""
    real = Path.read_bytes

    def read_bytes(self):
        if self == record:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out = assert_refused(REPORT.main, ["scratch", "--record", str(record.parent)], "--record")
    assert out.last_line == f"shadow-report: --record {record.parent}: cannot read it (Permission denied)"


def test_shadow_report_skips_a_corrupt_line_saying_which(record):
    """A line that is not JSON (a crash, an edit) is left out with a warning; the figures stand."""
    good = record.read_bytes()
    record.write_bytes(b"not json at all\n" + good + b'{"schema": "shadow-comp')  # and a torn last line
    out = run_main(REPORT.main, ["scratch", "--record", str(record.parent), "--json"])
    assert out.code == 0 and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["photos_compared"] == 2
    assert out.last_line == (
        f"shadow-report: --record {record.parent}: skipped 2 line(s) of comparisons.jsonl that are not JSON "
        "(line 1, 4; a crash cuts the last line short): the figures leave them out"
    )


@pytest.mark.parametrize(
    "line",
    [b'{"schema": "shadow-comparison/1", "status": "compared"}', b'{"schema": "shadow-comparison/1", '
     b'"status": "compared", "result_id": "p3", "shadow": "not an object"}'],
    ids=["keys-missing", "wrong-shape"],
)  # fmt: skip
def test_shadow_report_refuses_a_record_that_is_not_one(record, line):
    """JSON that is not a comparison is not a torn line: the report refuses rather than guess."""
    record.write_bytes(record.read_bytes() + line + b"\n")
    out = assert_refused(REPORT.main, ["scratch", "--record", str(record.parent)], "--record")
    assert "not a shadow record" in out.last_line


@PROPERTY
@given(data=st.data())
def test_shadow_report_property(files, data):
    option, values = data.draw(
        st.sampled_from(
            [
                ("app", bad_model_names),
                ("--record", missing_path(files["tmp"])),
                ("--shadow-sha256", st.text("0123456789abcdefABCDEF", max_size=70).filter(lambda s: len(s) != 64)),
                ("--worst", st.one_of(st.integers(max_value=-1), st.integers(min_value=1001)).map(str)),
                ("--worst", st.sampled_from(["nan", "1.5", "", "ten", "1e3"])),
            ]
        )
    )
    value = data.draw(values)
    argv = ["--", value] if option == "app" else ["scratch", f"{option}={value}"]
    assert_refused(REPORT.main, argv, option)


# --- python -m models.training / .crossval / .evaluate ------------------------------------------

DATA = ROOT / "tests/data/metal-tags"


@pytest.fixture
def training(monkeypatch):
    from models.training import __main__ as shipped
    from models.training import crossval, evaluate, int8_recipes, rescore

    for module, name in (
        (shipped, "train"),
        (shipped, "export_onnx"),
        (crossval, "run_fold"),
        (rescore, "rescore_fold"),
    ):
        monkeypatch.setattr(module, name, _never)
    monkeypatch.setattr(evaluate, "endpoint_predictions", _never)
    monkeypatch.setattr(evaluate, "load_detector", _never)
    monkeypatch.setattr(int8_recipes, "quantise", _never)
    return {
        "train": shipped.main,
        "crossval": crossval.main,
        "evaluate": evaluate.main,
        "int8": int8_recipes.main,
        "rescore": rescore.main,
    }


def training_table(f: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    out = ["--out", str(f["tmp"] / "out")]
    cv_list = f["tmp"] / "cv-list.json"
    cv_list.write_text("[1, 2]")
    url = "http://edge:31380/model/scratch/api/v0.1/predictions"
    two_folds = ["--data", str(DATA), "--folds", "2", "--work", str(f["tmp"] / "cv")]
    summary = f["tmp"] / "cv-of-other-photos.json"  # a finished summary, of photos that are not DATA's
    done = {"settings": {"imgsz": 64}, "key": "0" * 16, "folds": 2, "fold_seed": 0, "folds_done": [0, 1]}
    summary.write_text(json.dumps({**done, "threshold": 0.18}))
    rescore_base = ["--cv", str(summary), "--data", str(DATA), "--out", str(f["tmp"] / "o")]
    return [
        ("train", ["--data", str(f["tmp"] / "nosuch"), *out], "--data"),
        ("train", ["--data", str(f["photo"]), *out], "--data"),
        ("train", ["--data", str(f["empty_folder"]), *out], "annotations.json"),
        ("train", ["--data", str(DATA), *out, "--epochs", "0"], "--epochs"),
        ("train", ["--data", str(DATA), *out, "--epochs", "-3"], "--epochs"),
        ("train", ["--data", str(DATA), *out, "--imgsz", "100"], "--imgsz"),
        ("train", ["--data", str(DATA), *out, "--imgsz", "0"], "--imgsz"),
        ("train", ["--data", str(DATA), *out, "--batch", "0"], "--batch"),
        ("train", ["--data", str(DATA), *out, "--seed", "-1"], "--seed"),
        ("train", ["--data", str(DATA), *out, "--workers", "-1"], "--workers"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "ten"], "--then-epochs"),
        ("train", ["--data", str(DATA), *out, "--then-imgsz", "448"], "--then-imgsz"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-imgsz", "450"], "--then-imgsz"),
        ("train", ["--data", str(DATA), *out, "--then-scale", "0.25"], "--then-scale"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-scale", "1"], "--then-scale"),
        ("train", ["--data", str(DATA), *out, "--then-close-mosaic", "5"], "--then-close-mosaic"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-close-mosaic", "3"], "--then-close-mosaic"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-close-mosaic", "-1"], "--then-close"),
        ("train", ["--data", str(DATA), *out, "--then-lr0", "0.001"], "--then-lr0"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-lr0", "0"], "--then-lr0"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-lr0", "0.5"], "--then-lr0"),
        ("train", ["--data", str(DATA), *out, "--then-optimizer", "SGD"], "--then-optimizer"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-optimizer", "Adam"], "--then-optimizer"),
        ("train", ["--data", str(DATA), *out, "--then-copy-paste", "0.5"], "--then-copy-paste"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--then-copy-paste", "1.5"], "--then-copy-paste"),
        ("train", ["--data", str(DATA), *out, "--flipud", "1.5"], "--flipud"),
        ("train", ["--data", str(DATA), *out, "--first-cycle", str(f["tmp"])], "--first-cycle"),
        ("train", ["--data", str(DATA), *out, "--then-epochs", "2", "--first-cycle", str(f["tmp"])], "--first-cycle"),
        ("train", ["--data", str(DATA), *out, "--arch", "yolov8n.pt"], "--arch"),
        ("train", ["--data", str(DATA), *out, "--limit", "-1"], "--limit"),
        ("train", ["--data", str(DATA), *out, "--cv", str(f["tmp"] / "nosuch.json")], "--cv"),
        ("train", ["--data", str(DATA), *out, "--cv", str(f["text"])], "--cv"),
        ("train", ["--data", str(DATA), *out, "--cv", str(cv_list)], "--cv"),
        ("train", ["--data", str(DATA), *out, "--weights", str(f["tmp"] / "nosuch.pt")], "--weights"),
        ("train", ["--data", str(DATA), *out, "--fp32", str(f["tmp"] / "nosuch.onnx")], "--fp32"),
        ("train", ["--data", str(DATA), *out, "--fp32", str(f["photo"]), "--weights", str(f["photo"])], "--fp32"),
        ("train", ["--data", str(DATA), "--out", str(f["photo"])], "--out"),
        ("train", ["--data", str(DATA)], "--out"),
        ("crossval", ["--data", str(DATA), "--folds", "0"], "--folds"),
        ("crossval", ["--data", str(DATA), "--folds", "1"], "--folds"),
        ("crossval", ["--data", str(DATA), "--folds", "1000"], "--folds"),
        ("crossval", ["--data", str(DATA), "--fold-seed", "-1"], "--fold-seed"),
        ("crossval", ["--data", str(DATA), "--folds", "2", "--only", "5"], "--only"),
        ("crossval", ["--data", str(DATA), "--threshold", "nan"], "--threshold"),
        ("crossval", ["--data", str(DATA), "--threshold", "1.5"], "--threshold"),
        ("crossval", ["--data", str(DATA), "--threshold", "f1:fp16"], "--threshold"),
        ("crossval", ["--data", str(DATA), "--work", str(f["photo"])], "--work"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "-1"], "--then-epochs"),
        ("crossval", [*two_folds, "--then-imgsz", "448"], "--then-imgsz"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "2", "--then-imgsz", "-32"], "--then-imgsz"),
        ("crossval", [*two_folds, "--then-scale", "0.25"], "--then-scale"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "2", "--then-scale", "-0.1"], "--then-scale"),
        ("crossval", [*two_folds, "--then-close-mosaic", "5"], "--then-close-mosaic"),
        ("crossval", [*two_folds, "--then-epochs", "2", "--then-close-mosaic", "3"], "--then-close-mosaic"),
        ("crossval", [*two_folds, "--then-lr0", "0.001"], "--then-lr0"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "2", "--then-lr0", "nan"], "--then-lr0"),
        ("crossval", [*two_folds, "--then-optimizer", "musgd"], "--then-optimizer"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "2", "--then-optimizer", ""], "--then-optimizer"),
        ("crossval", [*two_folds, "--then-copy-paste", "0.5"], "--then-copy-paste"),
        ("crossval", ["--data", str(DATA), "--then-epochs", "2", "--then-copy-paste", "half"], "--then-copy-paste"),
        ("crossval", ["--data", str(DATA), "--flipud", "-0.1"], "--flipud"),
        ("crossval", ["--data", str(DATA), "--folds", "2", "--first-cycles", str(f["tmp"])], "--first-cycles"),
        ("crossval", [*two_folds, "--then-epochs", "2", "--first-cycles", str(f["tmp"])], "--first-cycles"),
        ("evaluate", ["--data", str(DATA), "--url", "ftp://edge/x"], "--url"),
        ("evaluate", ["--data", str(DATA), "--url", url.replace("31380", "99999")], "--url"),
        ("evaluate", ["--data", str(DATA), "--url", "http://edge:31380/wrong/path"], "--url"),
        ("evaluate", ["--data", str(DATA), "--url", url, "--timeout", "nan"], "--timeout"),
        ("evaluate", ["--data", str(DATA), "--url", url, "--min-confidence", "nan"], "--min-confidence"),
        ("evaluate", ["--data", str(DATA), "--url", url, "--min-confidence", "-1"], "--min-confidence"),
        ("evaluate", ["--data", str(DATA), "--model", "m.onnx", "--iou", "0"], "--iou"),
        ("evaluate", ["--data", str(DATA), "--model", str(f["tmp"] / "nosuch.onnx")], "--model"),
        ("evaluate", ["--data", str(f["tmp"] / "nosuch"), "--url", url], "--data"),
        ("int8", ["--data", str(DATA), "--fp32", str(f["tmp"] / "nosuch.onnx")], "--fp32"),
        ("int8", ["--data", str(f["tmp"] / "nosuch"), "--fp32", str(f["photo"])], "--data"),
        ("int8", ["--data", str(DATA)], "--fp32"),
        ("rescore", [*rescore_base, "--input-size", "100"], "--input-size"),
        ("rescore", [*rescore_base, "--nms-iou", "1.5"], "--nms-iou"),
        ("rescore", [*rescore_base, "--average-with", str(f["tmp"] / "nosuch.json")], "--average-with"),
        ("rescore", [*rescore_base, "--average-with", str(f["text"])], "--average-with"),
        ("rescore", [*rescore_base, "--average-with", str(summary), "--input-size", "448"], "--average-with"),
        ("rescore", [*rescore_base, "--soup-with", str(f["tmp"] / "nosuch.json")], "--soup-with"),
        ("rescore", [*rescore_base, "--soup-with", str(f["text"])], "--soup-with"),
        ("rescore", [*rescore_base, "--soup-with", str(summary), "--average-with", str(summary)], "--average-with"),
        ("rescore", ["--cv", str(f["tmp"] / "nosuch.json"), "--data", str(DATA), "--out", str(f["tmp"])], "--cv"),
        ("rescore", ["--cv", str(f["text"]), "--data", str(DATA), "--out", str(f["tmp"] / "o")], "--cv"),
        ("rescore", ["--cv", str(cv_list), "--data", str(DATA), "--out", str(f["tmp"] / "o")], "--cv"),
        ("rescore", [*rescore_base[:2], "--data", str(DATA), "--out", str(f["photo"])], "--out"),
        ("rescore", [*rescore_base[:2], "--data", str(f["tmp"] / "nosuch"), "--out", str(f["tmp"] / "o")], "--data"),
        ("rescore", [*rescore_base[:2], "--data", str(DATA), "--out", str(f["tmp"] / "o")], "--data"),
    ]


def test_training_commands_refuse(training, files):
    table = training_table(files)
    for command, argv, named in table:
        assert_refused(training[command], argv, named)
    assert len(table) == 89


@PROPERTY
@given(data=st.data())
def test_training_property(training, files, data):
    command, option, values = data.draw(
        st.sampled_from(
            [
                ("train", "--epochs", bad_ints),
                ("train", "--batch", bad_ints),
                ("train", "--imgsz", st.one_of(bad_ints, st.integers(1, 4096).filter(lambda n: n % 32).map(str))),
                ("train", "--limit", st.integers(max_value=-1).map(str)),
                ("crossval", "--folds", st.one_of(bad_ints, st.just("1"), st.integers(min_value=5).map(str))),
                ("crossval", "--threshold", bad_numbers),
                ("evaluate", "--url", bad_urls),
                ("evaluate", "--timeout", bad_numbers),
                ("evaluate", "--iou", bad_numbers),
            ]
        )
    )
    base = {
        "train": ["--data", str(DATA), "--out", str(files["tmp"] / "out")],
        "crossval": ["--data", str(DATA), "--work", str(files["tmp"] / "cv")],
        "evaluate": ["--data", str(DATA)] + (["--model", "m.onnx"] if option != "--url" else []),
    }[command]
    assert_refused(training[command], [*base, f"{option}={data.draw(values)}"], option)


def test_crossval_refuses_to_resume_a_fold_started_under_another_recipe(training, files, tmp_path):
    """A half-trained fold resumes with its checkpoint's arguments: under a new recipe, refused."""
    work = tmp_path / "cv"
    (work / "fold-0").mkdir(parents=True)
    (work / "fold-0" / "recipe-key").write_text("0123456789abcdef\n")
    out = assert_refused(training["crossval"], ["--data", str(DATA), "--folds", "2", "--work", str(work)], "fold-0")
    assert "was started with another recipe or split" in out.last_line
    (work / "fold-0" / "recipe-key").unlink()
    (work / "fold-0" / "run" / "weights").mkdir(parents=True)  # a run from before folds were stamped
    out = assert_refused(training["crossval"], ["--data", str(DATA), "--folds", "2", "--work", str(work)], "fold-0")
    assert "unknown recipe" in out.last_line


def test_a_crossval_summary_without_its_fields_is_named(training, files, tmp_path):
    cv = tmp_path / "cv.json"
    cv.write_text(json.dumps({"settings": {}}))
    out = assert_refused(
        training["train"], ["--data", str(DATA), "--out", str(tmp_path / "o"), "--cv", str(cv)], "--cv"
    )
    assert "not a crossval summary" in out.last_line
