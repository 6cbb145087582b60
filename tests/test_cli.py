"""The command line's own surface: help, the db subcommands, the demo model converter."""

from click.testing import CliRunner

from identify.cli import main


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_help_lists_every_subcommand():
    text = run("--help").output
    for command in ("build-index", "predict", "convert-demo-model", "db"):
        assert command in text


def test_db_upgrade_current_downgrade(data_dir):
    assert "empty" in run("db", "current").output
    assert run("db", "upgrade").output.strip() == "database at revision 0018"
    assert run("db", "current").output.strip() == "0018"
    assert run("db", "downgrade", "base").output.strip() == "database at revision base (empty)"


def test_unreachable_database_is_one_line(data_dir):
    result = run("db", "upgrade", env={"IDENTIFY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1 and "error: database_unavailable:" in result.stderr
    assert "Traceback" not in result.output


def test_convert_demo_model_writes_into_the_data_dir_by_default(data_dir):
    result = run("convert-demo-model")
    assert result.exit_code == 0
    assert (data_dir / "models" / "efficientnet_lite0_imagenet.pt").is_file()


def test_help_lists_the_service_commands():
    text = run("--help").output
    assert "serve" in text and "create-curator" in text


def test_create_curator_prints_a_token_and_refuses_a_second_one(data_dir):
    from identify.curators import Curators
    from identify.storage import Store, make_engine

    result = CliRunner().invoke(main, ["create-curator", "ana", "--password-stdin"], input="correct horse battery\n")
    assert result.exit_code == 0 and "API token" in result.output
    token = result.output.rsplit(" ", 1)[1].strip()
    engine = make_engine(f"sqlite:///{data_dir / 'identify.db'}")
    curators = Curators(Store(engine))
    assert curators.check_token(token).name == "ana"
    assert curators.check_password("ana", "correct horse battery").name == "ana"
    engine.dispose()
    again = CliRunner().invoke(main, ["create-curator", "ana", "--password-stdin"], input="another password\n")
    assert again.exit_code == 1 and "error: curator_exists:" in again.stderr
    short = CliRunner().invoke(main, ["create-curator", "bo", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "error: weak_password:" in short.stderr


def test_serve_without_a_model_says_so(data_dir):
    result = run("serve", env={"IDENTIFY_MODEL": ""})
    assert result.exit_code == 1 and "error: no_model:" in result.stderr


def test_a_cpu_machine_is_not_warned_that_it_has_no_cuda():
    """Every gunicorn worker printed torch's "No CUDA runtime is found" as it loaded birder: expected on a CPU
    deployment, read as a fault. The web app's import path (not the command line's logging set-up) is checked."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "import identify.web, identify.backbone, birder, torch.utils.cpp_extension"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "No CUDA runtime" not in run.stderr
